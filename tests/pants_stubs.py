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


def hook_requests_send(
    describe: Callable[[Any, bytes], dict],
    finish: Callable[[dict, Any], None],
    record: Callable[[dict], None],
) -> None:
    """Wrap `requests.Session.send` so every exchange of the client under test is recorded.

    `describe(request, body)` makes the exchange's dict before sending; the wrapper adds
    `elapsed_ms`, `status` and `request_id` (or `error` when sending raised, which is then
    re-raised to the client), `finish(exchange, response)` adds what the driver reads from the
    answer, and `record(exchange)` stores it.
    """
    import time

    import requests

    orig_send = requests.Session.send

    def send(self, request, **kwargs):
        body = request.body if isinstance(request.body, (bytes, type(None))) else str(request.body).encode()
        ex = describe(request, body or b"")
        t0 = time.monotonic()
        try:
            resp = orig_send(self, request, **kwargs)
        except Exception as err:  # noqa: BLE001 - recorded, then re-raised to the client
            ex["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
            ex["status"] = None
            ex["error"] = repr(err)
            record(ex)
            raise
        ex["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
        ex["status"] = resp.status_code
        ex["request_id"] = resp.headers.get(REQUEST_ID_HEADER)
        finish(ex, resp)
        record(ex)
        return resp

    requests.Session.send = send


REQUEST_ID_HEADER = "X-Request-Id"


def redact_bearer(value: str | None, keep: int) -> str | None:
    """An `Authorization` value safe to record: the scheme, the token's first `keep` characters
    and its length."""
    if not value:
        return value
    scheme, _, tok = value.partition(" ")
    return f"{scheme} {tok[:keep]}...({len(tok)} chars)" if tok else value
