"""Command line: `fastattr explain` (maps for a few images), `fastattr eval` (metrics table),
`fastattr run` (dataset-scale runner). With no arguments everything uses the bundled
EfficientNet-Lite0 and the bundled photos."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from fastattr.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors ("fastattr explain: error: argument --size: ...") and exit
    code 2, like every other user error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --trust-pickle, --device: every command that loads a model takes these."""
    p.add_argument("--model", default="default",
                   help="'default' (bundled EfficientNet-Lite0) or a model file: a torch.export program "
                        "(torch.export.save, .pt2) or TorchScript (torch.jit.save); see the README, "
                        "'Saving a model for the CLI'")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also accept a whole module pickled by torch.save(model); unpickling runs the "
                        "file author's code, so only for files you trust")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU if present, else cpu)")


def _add_method_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="points per forward+backward (default: per device)")
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False, default=None,
                   help="feed the model NCHW tensors (default: channels-last for conv models, faster; "
                        "NCHW reproduces other libraries' rounding bit for bit)")
    p.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="fp32 (default): the model as it is; bf16 / fp16: autocast a float32 model's forward "
                        "and backward (faster on hardware with fast low-precision kernels, maps less accurate)")
    add_model_arguments(p)


def _explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="attribution maps and heatmaps for a few images")
    p.add_argument("images", nargs="*", help="image files (PNG/JPEG/WebP); default: the bundled photos")
    _add_method_arguments(p)
    p.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted one)")
    p.add_argument("--out", default="fastattr_out", help="output folder (default: fastattr_out)")
    p.add_argument("--size", type=positive_int, default=224, help="image side in pixels (default: 224)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main_explain)


def output_names(files: list[str]) -> list[str]:
    """A unique output name per image file, derived from its path: the file name without its
    extension where that is unique among the files, else the path relative to the files' common
    folder ('a/cat'), else that with the extension ('a/cat_jpg'); the same file given twice gets
    '-2', '-3', ... in argument order. Depends only on the list, so re-runs write the same names."""
    paths = [Path(os.path.abspath(f)) for f in files]
    common = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()
    rel = [p.relative_to(common) for p in paths]
    candidates = [
        [p.stem for p in paths],
        [r.with_suffix("").as_posix() for r in rel],
        [r.with_suffix("").as_posix() + r.suffix.replace(".", "_") for r in rel],
    ]
    names = []
    for i in range(len(paths)):
        name = next((c[i] for c in candidates if c.count(c[i]) == 1), candidates[-1][i])
        base, k = name, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


def main_explain(args) -> int:
    """`fastattr explain`: print class and completeness per image, write PNG heatmaps and .npy maps."""
    from fastattr.api import explain
    from fastattr.engine import uses_conv2d
    from fastattr.images import bundled_images, load_image
    from fastattr.models import class_name, load_model
    from fastattr.runner.distributed import check_device
    from fastattr.runner.preflight import preflight
    from fastattr.runner.shards import check_out_folder, write_error
    from fastattr.viz import save_heatmap

    out = Path(args.out)
    check_out_folder(out)
    device = check_device(args.device)
    model = load_model(args.model, trust_pickle=args.trust_pickle).to(device)
    if args.images:
        names = output_names(args.images)
        loaded = []
        for f in args.images:
            try:
                loaded.append(load_image(f, size=args.size))
            except (OSError, UserError) as exc:
                raise UserError(f"cannot read image {f}: {exc}") from exc
        images = torch.stack(loaded)
    else:
        bundled = bundled_images(size=args.size)
        names, images = list(bundled), torch.stack(list(bundled.values()))
    options = dict(method=args.method, idgi=args.idgi, steps=args.steps, rule=args.rule, backward=args.backward,
                   output=args.output, batch_size=args.batch_size, compile=args.compile,
                   channels_last=uses_conv2d(model) if args.channels_last is None else args.channels_last,
                   precision=args.precision)
    preflight(model, device, args.size, args.target, options)
    try:  # checked options and model, before any computation: an unwritable --out fails in seconds
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(out, exc) from exc
    ex = explain(model, images.to(device), args.target, progress=not args.no_progress, **options)
    label = args.method + (" + IDGI" if args.idgi else "") + (" (guided)" if args.backward == "guided" else "")
    tag = args.method + ("_idgi" if args.idgi else "") + ("_guided" if args.backward == "guided" else "")
    width = max(20, *(len(n) + 1 for n in names))
    print(f"{'image':<{width}} {'class':<28} {args.output:>11} {'delta':>11}  heatmap")
    for i, name in enumerate(names):
        c = int(ex.target[i])
        cname = class_name(c) if args.model == "default" else str(c)
        png, npy = out / f"{name}_{tag}.png", out / f"{name}_{tag}.npy"
        try:
            png.parent.mkdir(parents=True, exist_ok=True)
            np.save(npy, ex.attributions[i].cpu().numpy())
            save_heatmap(png, images[i], ex.attributions[i], title=f"{name}: {cname} ({c}), {label}")
        except OSError as exc:
            raise write_error(png, exc) from exc
        print(f"{name:<{width}} {cname + f' ({c})':<28} {float(ex.scores[i]):>11.4f} {float(ex.delta[i]):>11.2e}  {png}")
    print(f"{ex.grad_evals} gradient evaluations; delta = sum(map) - (f(x) - f(path start))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastattr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _explain_parser(sub)
    try:  # the evaluation and runner subcommands register themselves when present
        from fastattr.evaluate import add_eval_arguments, main_eval
    except ImportError:
        pass
    else:
        p = sub.add_parser("eval", help="evaluate methods on the bundled evaluation set (paper-style table)")
        add_eval_arguments(p)
        p.set_defaults(func=main_eval)
    try:
        from fastattr.runner import add_run_arguments, main_run
    except ImportError:
        pass
    else:
        p = sub.add_parser("run", help="attribution maps for a whole folder of images (resumable, torchrun)")
        add_run_arguments(p)
        p.set_defaults(func=main_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `fastattr` command. A UserError (bad option, unreadable file, busy folder) prints one
    line and returns 2, an output write error (WriteError: disk full, read-only, no such folder)
    one line and 1 (FASTATTR_DEBUG=1: the traceback too); any other exception is a bug and keeps
    its traceback."""
    from fastattr.runner.shards import WriteError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, WriteError) as exc:
        if os.environ.get("FASTATTR_DEBUG"):
            raise
        print(f"fastattr {args.command}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, WriteError) else 2
    except KeyboardInterrupt:
        print(f"fastattr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
