"""Attribution methods. Each module registers one or more methods with @register_method; a
method receives a MethodContext and its own keyword options and returns a MethodResult."""
from __future__ import annotations

import importlib
import pkgutil

from fastattr.methods.base import METHODS, MethodContext, MethodResult, register_method  # noqa: F401

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
