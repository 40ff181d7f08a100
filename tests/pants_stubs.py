"""Shared by the test drivers that run real Pants plugin code outside Pants
(tests/plugin-client/drive.py, tests/otel-client/emit.py).

- `reexec_in_venv`: re-executes the driver under $REPO/target/venv/bin/python (made by
  `dev/python-env`), where the plugins and their dependencies are installed.
- `PantsStubFinder`: an import hook that answers every `pants` / `pants.*` import with an inert
  module; each driver passes the few real behaviours its plugin needs (reimplemented minimally)
  as a dict of module name -> fill function.

Only the standard library is imported here: this module is loaded before the re-exec.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable, Mapping


def reexec_in_venv(script: Path, repo: Path, venv: Path, guard_env: str) -> None:
    """Re-execute `script` (with the same arguments) under `venv`'s python, unless already running
    there or `guard_env` is "1" (set before the exec, so the child never loops)."""
    venv_py = venv / "bin" / "python"
    if os.environ.get(guard_env) == "1":
        return
    try:
        in_venv = Path(sys.prefix).resolve() == venv.resolve()
    except OSError:
        in_venv = False
    if in_venv:
        return
    if not venv_py.exists():
        sys.exit(f"{script.name}: {venv_py} not found: run {repo / 'dev' / 'python-env'} first")
    os.environ[guard_env] = "1"
    os.execv(str(venv_py), [str(venv_py), str(script.resolve()), *sys.argv[1:]])


class _InertMeta(type):
    """Classes made by the stub: subclassable, callable, subscriptable (DictOption[str]), and
    every attribute is another inert thing."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _make_inert(name, cls.__module__)

    def __getitem__(cls, item):
        return cls


class _Inert(metaclass=_InertMeta):
    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return None

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def _make_inert(name: str, module: str) -> type:
    return _InertMeta(name, (_Inert,), {"__module__": module})


class PantsStubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers every `pants` / `pants.*` import with an inert package module; `overrides` maps a
    module name to a function that fills in its real behaviours after the module is made."""

    def __init__(self, overrides: Mapping[str, Callable[[types.ModuleType], None]]) -> None:
        self.imported: list[str] = []
        self.overrides = overrides

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "pants" or fullname.startswith("pants."):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        self.imported.append(name)
        module.__path__ = []  # a package: submodules import through this finder too
        cache: dict[str, Any] = {}

        def __getattr__(attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)
            if attr not in cache:
                cache[attr] = _make_inert(attr, name)
            return cache[attr]

        module.__getattr__ = __getattr__  # type: ignore[attr-defined]
        fill = self.overrides.get(name)
        if fill:
            fill(module)
