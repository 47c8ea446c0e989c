"""The one mechanism for heavy optional imports: declared at module top, loaded on first use.

    torch = lazy_import("torch")            # nothing imported yet
    ...
    def train(...):
        x = torch.zeros(3)                  # torch is imported here, once

The command line imports every package to build its parser; with torch, ray, coremltools,
optuna and matplotlib declared this way, ``run_search.py --help`` and the input validation
that must run before any heavy work stay fast, and the imports stay visible at the top of each
module instead of being scattered through function bodies.

Project modules are never imported this way: they are imported normally at module top so the
import contracts (``.importlinter``) see every dependency. A module that *defines* torch
classes (``search_space.swiftformer``) imports torch normally; it is itself heavy.
"""
from __future__ import annotations

import importlib
import types


class _LazyModule(types.ModuleType):
    """A stand-in module that imports the real one on first attribute access.

    After loading, the real module's namespace is copied in, so later attribute lookups are
    plain dictionary hits (no per-access overhead in training loops); names the real module
    gains later (lazily imported submodules) are still found through ``__getattr__``.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def _load(self) -> types.ModuleType:
        module = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update({k: v for k, v in module.__dict__.items()
                              if k not in ("__name__", "__spec__", "__loader__")})
        self.__dict__["_lazy_loaded"] = True
        return module

    def __getattr__(self, attr: str):
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_target']!r}>"


def lazy_import(name: str) -> types.ModuleType:
    """A module object for ``name`` that imports it on first attribute access.

    ``name`` may be a submodule (``"torch.nn.functional"``, ``"ray.tune"``). A missing package
    raises ModuleNotFoundError at first use, naming it, exactly like a plain import would.
    """
    return _LazyModule(name)


def is_loaded(module: types.ModuleType) -> bool:
    """Whether a module declared with :func:`lazy_import` has been imported yet (for tests)."""
    return bool(module.__dict__.get("_lazy_loaded", "_lazy_target" not in module.__dict__))
