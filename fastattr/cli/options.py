"""The options the commands share, defined once, and the argparse types that check every value
when the command line is parsed: a bad value is one line naming the option (exit code 2) before
any model is loaded or any file is written. Each type carries an `invalid` example (a value it
refuses; '{missing}' / '{file}' stand for a path that does not exist / a regular file), from which
the tests generate one bad command line per option, so a new option is covered automatically."""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors ("fastattr explain: error: argument --size: ...") and exit
    code 2, like every other user error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _invalid(example: str):
    """Decorator: record a value the type refuses (used by the generated tests)."""
    def mark(fn):
        fn.invalid = example
        return fn
    return mark


def _at_least(minimum: int, what: str = "", doc: str = ""):
    """An argparse type: an integer >= minimum ('what' names it in the message)."""
    @_invalid(str(minimum - 1))
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what}must be >= {minimum}, got {value}")
        return value
    parse.__doc__ = doc
    return parse


positive_int = _at_least(1, doc="An integer >= 1.")
nonnegative_int = _at_least(0, doc="An integer >= 0.")
class_index = _at_least(0, "class index ", "A class index >= 0 (whether the model has it is checked on the model).")


@_invalid("2")
def probability(text: str) -> float:
    """A probability: a number in [0, 1] (NaN refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text}")
    return value


@_invalid("foo")
def target_spec(text: str) -> str | int:
    """'predicted', 'label' or a class index >= 0."""
    if text in ("predicted", "label"):
        return text
    try:
        int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'predicted', 'label' or a class index, got {text!r}") from None
    return class_index(text)


@_invalid("{missing}")
def model_file(text: str) -> str:
    """'default' or an existing file (what the file holds is checked when it is loaded)."""
    if text != "default" and not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file {text!r} (use 'default' for the bundled model)")
    return text


@_invalid("tpu")
def device(text: str) -> str:
    """cpu, cuda or cuda:N, existing here."""
    from fastattr.errors import UserError
    from fastattr.runner.distributed import check_device

    try:
        check_device(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("device: ")) from None
    return text


@_invalid("{missing}")
def folder(text: str) -> str:
    """An existing folder."""
    if not os.path.isdir(text):
        what = "is a file, not a folder" if os.path.exists(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {what}")
    return text


@_invalid("{missing}")
def image_file(text: str) -> str:
    """An existing path (decoding is checked when it is read)."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"cannot read image {text}: no such file")
    return text


@_invalid("{file}")
def out_folder(text: str) -> str:
    """An output folder: an existing folder or a path that does not exist yet (created later,
    once every other check has passed)."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return text


@_invalid("{missing}")
def run_folder(text: str) -> str:
    """The output folder of a `fastattr run` (it has a run.json)."""
    folder(text)
    if not (Path(text) / "run.json").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} has no run.json (not a `fastattr run` output folder)")
    return text


@_invalid("novalue")
def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with a JSON value (a bare string otherwise)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, true/false, null, lists
    except ValueError:
        return key, value  # a bare string


# -- groups of options --------------------------------------------------------------------------

def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --trust-pickle, --device: every command loads a model."""
    p.add_argument("--model", type=model_file, default=None,
                   help="'default' (the bundled EfficientNet-Lite0, the default; eval --maps: the run's model) or a "
                        "model file: a torch.export program "
                        "(torch.export.save, .pt2) or TorchScript (torch.jit.save); see the README, "
                        "'Saving a model for the CLI'")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also accept a whole module pickled by torch.save(model); unpickling runs the "
                        "file author's code, so only for files you trust")
    p.add_argument("--device", type=device, default=None,
                   help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK if a GPU is present, else cpu)")


def add_method_options(p: argparse.ArgumentParser) -> None:
    """One attribution method and how it runs (explain, run)."""
    from fastattr.backward import BACKWARDS
    from fastattr.methods import METHODS
    from fastattr.methods.integrated_gradients import RULES
    from fastattr.model_io import OUTPUTS, PRECISIONS

    p.add_argument("--method", default="ig", choices=sorted(METHODS), help="attribution method (default: ig)")
    p.add_argument("--idgi", action="store_true", help="apply the IDGI correction (path methods)")
    p.add_argument("--steps", type=positive_int, default=None, help="path steps (default: the method's)")
    p.add_argument("--rule", default="left", choices=RULES, help="IG integration rule (default: left)")
    p.add_argument("--backward", default="standard", choices=sorted(BACKWARDS), help="gradient rule")
    p.add_argument("--output", default="probability", choices=OUTPUTS,
                   help="explain the softmax probability (default), the logit, or the sigmoid (multi-label)")
    add_batch_size(p)
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False, default=None,
                   help="feed the model NCHW tensors (default: channels-last for conv models, faster; "
                        "NCHW reproduces other libraries' rounding bit for bit)")
    p.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="fp32 (default): the model as it is; bf16 / fp16: autocast a float32 model's forward "
                        "and backward (faster on hardware with fast low-precision kernels, maps less accurate)")


def add_batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="points per forward+backward (default: per device)")


def add_size(p: argparse.ArgumentParser, default: int | None = 224, note: str = "") -> None:
    p.add_argument("--size", type=positive_int, default=default,
                   help=f"image side in pixels (default: 224{note})")


def add_dataset_options(p: argparse.ArgumentParser, target_help: str) -> None:
    """A folder processed in shards by ranks (run, eval)."""
    p.add_argument("--target", type=target_spec, default=None, help=target_help)
    p.add_argument("--shard-size", type=positive_int, default=64, help="images per shard file (default: 64)")
    p.add_argument("--images-per-call", type=positive_int, default=16,
                   help="images explained together, their path points packed in one stream (default: 16)")
    p.add_argument("--workers", type=nonnegative_int, default=None,
                   help="decoding processes per rank (default: 2; 0: decode in the main process)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per rank (default: cores on the node / ranks on the node)")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def throughput(summary, digits: int) -> str:
    """', N images/s' of a run or eval summary that computed something now, else ''."""
    if summary.computed_images and summary.seconds > 0:
        return f", {summary.computed_images / summary.seconds:.{digits}f} images/s"
    return ""
