"""fastattr's dispatcher ops (torch.ops.fastattr.*). Importing this package registers all of
them: every module here defines one op (schema from C++ when built, fallbacks otherwise)."""
import importlib
import pkgutil

from fastattr.ops._library import HAS_C, HAS_TRITON  # noqa: F401  (warns once if _C is missing)

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
