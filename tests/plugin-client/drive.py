#!/usr/bin/env python3
"""Drive the REAL Toolchain Pants plugin client (toolchain.pants.plugin==0.27.0) against a gateway.

The plugin's own classes (AuthStore/AuthClient, BuildSenseClient, BuildState, WorkUnitConverter,
LocalBuildsStore) build and send every request; this driver only plays Pants: it stubs the
`pants.*` modules the plugin imports, feeds fixture payloads in, and records what happened on
the wire (hooked at requests.Session.send) and what the client concluded.

Run `dev/python-env` first; this script re-executes itself under $REPO/target/venv/bin/python.
See README.md next to this file.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import enum
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
import types
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared pants_stubs module
from pants_stubs import REQUEST_ID_HEADER, PantsStubFinder, hook_requests_send, redact_bearer, reexec_in_venv  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "target" / "venv"
DEFAULT_PLUGIN_DIR = VENV / "toolchain-plugin"
PLUGIN_VERSION = "0.27.0"


def _reexec_in_venv() -> None:
    reexec_in_venv(Path(__file__), REPO, VENV, "PLUGIN_DRIVE_NO_REEXEC")


# ----------------------------------------------------------------------------------------------
# pants.* stubs: the few real behaviours the client needs (reimplemented minimally), filled into
# the inert modules made by the import hook of tests/pants_stubs.py.
# ----------------------------------------------------------------------------------------------

STUB_PANTS_VERSION = "2.16.0"


class _RunTrackerOptionEncoder(json.JSONEncoder):
    """Stand-in for pants.goal.run_tracker.RunTrackerOptionEncoder (a CoercingEncoder)."""

    def default(self, o):
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if isinstance(o, enum.Enum):
            return o.value
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        return str(o)


@contextlib.contextmanager
def _safe_concurrent_creation(target_path: str):
    """pants.util.dirutil.safe_concurrent_creation: yield a temp path, rename it into place."""
    os.makedirs(os.path.dirname(target_path) or ".", exist_ok=True)
    tmp_path = f"{target_path}.tmp.{uuid.uuid4().hex}"
    try:
        yield tmp_path
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    if os.path.exists(tmp_path):
        os.replace(tmp_path, target_path)


@dataclasses.dataclass(frozen=True)
class _Digest:
    fingerprint: str
    serialized_bytes_length: int


@dataclasses.dataclass(frozen=True)
class _FileDigest:
    fingerprint: str
    serialized_bytes_length: int


@dataclasses.dataclass(frozen=True)
class _FileContent:
    path: str
    content: bytes
    is_executable: bool = False


class _DigestContents(tuple):
    pass


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    digest: _Digest
    files: tuple
    dirs: tuple = ()


def _fill_pants_version(m: types.ModuleType) -> None:
    m.VERSION = STUB_PANTS_VERSION


def _fill_run_tracker(m: types.ModuleType) -> None:
    m.RunTrackerOptionEncoder = _RunTrackerOptionEncoder


def _fill_dirutil(m: types.ModuleType) -> None:
    m.safe_concurrent_creation = _safe_concurrent_creation


def _fill_fs(m: types.ModuleType) -> None:
    for name, obj in {
        "Digest": _Digest,
        "FileDigest": _FileDigest,
        "FileContent": _FileContent,
        "DigestContents": _DigestContents,
        "Snapshot": _Snapshot,
    }.items():
        obj.__module__ = m.__name__
        setattr(m, name, obj)


_STUB_OVERRIDES: dict[str, Callable[[types.ModuleType], None]] = {
    "pants.version": _fill_pants_version,
    "pants.goal.run_tracker": _fill_run_tracker,
    "pants.util.dirutil": _fill_dirutil,
    "pants.engine.fs": _fill_fs,
}


# ----------------------------------------------------------------------------------------------
# Wire recorder: hooks requests.Session.send; tags every exchange with the client method.
# ----------------------------------------------------------------------------------------------


def _parse_multipart(content_type: str, body: bytes) -> list[dict] | None:
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m or not body:
        return None
    boundary = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            k, _, v = line.partition(":")
            if k:
                headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disp)
        filename = re.search(r'filename="([^"]*)"', disp)
        part = {
            "name": name.group(1) if name else None,
            "filename": filename.group(1) if filename else None,
            "bytes": len(data),
            "zlib": _is_zlib(data),
        }
        if "content-type" in headers:
            part["content_type"] = headers["content-type"]
        if part["zlib"]:
            with contextlib.suppress(zlib.error):
                part["uncompressed_bytes"] = len(zlib.decompress(data))
        parts.append(part)
    return parts


def _is_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


class Recorder:
    def __init__(self) -> None:
        self.call_stack: list[dict] = []
        self.step: dict | None = None
        self.exchanges: list[dict] = []  # all, in order

    def add_exchange(self, ex: dict) -> None:
        ex["client_method"] = self.call_stack[-1]["method"] if self.call_stack else None
        self.exchanges.append(ex)
        if self.call_stack:
            self.call_stack[-1]["http"].append(ex)
        if self.step is not None:
            self.step.setdefault("_all_http", []).append(ex)


RECORDER = Recorder()


def install_http_hook() -> None:
    def describe(request, body: bytes) -> dict[str, Any]:
        headers = request.headers
        ctype = headers.get("Content-Type")
        ex: dict[str, Any] = {
            "method": request.method,
            "url": request.url,
            "request": {
                "bytes": len(body),
                "content_type": (ctype or "").split(";")[0] or None,
                "content_encoding": headers.get("Content-Encoding"),
                "user_agent": headers.get("User-Agent"),
                "stats_version": headers.get("X-Pants-Stats-Version"),
                "impersonate": headers.get("X-Toolchain-Impersonate"),
                "authorization": redact_bearer(headers.get("Authorization"), 10),
            },
        }
        if ctype and ctype.startswith("multipart/"):
            ex["request"]["parts"] = _parse_multipart(ctype, body)
        return ex

    def finish(ex: dict[str, Any], resp) -> None:
        ex["response"] = {"content_type": resp.headers.get("Content-Type"), "body": _body_summary(resp)}

    hook_requests_send(describe, finish, RECORDER.add_exchange)


def _body_summary(resp) -> Any:
    text = resp.text if resp.content is not None else ""
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(parsed, dict) and isinstance(parsed.get("token"), dict):
        tok = dict(parsed["token"])
        if "access_token" in tok:
            tok["access_token"] = redact_bearer("x " + str(tok["access_token"]), 10)[2:]
        parsed = {**parsed, "token": tok}
    if len(text) > 4000:
        return text[:300] + "...(truncated)"
    return parsed


def instrument(cls: type, method_name: str, summarize: Callable[[dict, tuple, dict, Any], None] | None = None):
    """Wrap a real client method (calls straight through) to record the call, its result and the
    HTTP exchanges made inside it."""
    orig = getattr(cls, method_name)
    qualname = f"{cls.__name__}.{method_name}"

    def wrapper(self, *args, **kwargs):
        call: dict[str, Any] = {"method": qualname, "http": [], "client_success": None, "client_error": None}
        if "run_id" in kwargs:
            call["run_id"] = kwargs["run_id"]
        RECORDER.call_stack.append(call)
        try:
            result = orig(self, *args, **kwargs)
        except BaseException as err:
            call["exception"] = f"{type(err).__name__}: {err}"
            raise
        finally:
            RECORDER.call_stack.pop()
            if RECORDER.call_stack:
                RECORDER.call_stack[-1].setdefault("nested", []).append(call)
            elif RECORDER.step is not None:
                RECORDER.step["calls"].append(call)
        if summarize:
            summarize(call, args, kwargs, result)
        return result

    setattr(cls, method_name, wrapper)


# ----------------------------------------------------------------------------------------------
# Fixtures and fake Pants inputs
# ----------------------------------------------------------------------------------------------


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"pants_run_{now:%Y_%m_%d_%H_%M_%S}_{now.microsecond // 1000:03d}_{secrets.token_hex(16)}"


class Fixtures:
    def __init__(self, root: Path) -> None:
        self.root = root
        if not root.is_dir():
            raise SystemExit(f"drive.py: fixtures directory not found: {root}")

    def path(self, name: str) -> Path:
        p = self.root / name
        if not p.is_file():
            raise SystemExit(f"drive.py: fixture missing: {p}")
        return p

    def doc(self, name: str, run_id: str) -> dict:
        doc = json.loads(self.path(name).read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("run_info"), dict):
            raise SystemExit(f"drive.py: fixture {name} is not a build_stats document")
        doc["run_info"]["id"] = run_id
        return doc

    def biggest_build_stats(self) -> str:
        best = None
        for p in sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_size, reverse=True):
            with contextlib.suppress(ValueError):
                d = json.loads(p.read_text())
                if isinstance(d, dict) and isinstance(d.get("run_info"), dict) and d["run_info"].get("id"):
                    best = p.name
                    break
        if not best:
            raise SystemExit("drive.py: no build_stats fixture found")
        return best


class FakeEngine:
    """Content store behind the fake Digest/Snapshot objects, and the two StreamingWorkunitContext
    methods the converter calls to read artifacts."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._snapshots: dict[str, list] = {}

    def file_digest(self, content: bytes):
        from pants.engine.fs import FileDigest

        fp = hashlib.sha256(content).hexdigest()
        self._files[fp] = content
        return FileDigest(fp, len(content))

    def snapshot(self, files: dict[str, bytes]):
        from pants.engine.fs import Digest, FileContent, Snapshot

        fcs = [FileContent(path, data) for path, data in sorted(files.items())]
        fp = hashlib.sha256(b"".join(p.encode() + d for p, d in sorted(files.items()))).hexdigest()
        self._snapshots[fp] = fcs
        return Snapshot(Digest(fp, sum(len(d) for d in files.values()) + 80), tuple(sorted(files)))

    # StreamingWorkunitContext API used by toolchain.pants.buildsense.converter
    def single_file_digests_to_bytes(self, digests):
        return [self._files[d.fingerprint] for d in digests]

    def snapshots_to_file_contents(self, snapshots):
        from pants.engine.fs import DigestContents

        return [DigestContents(self._snapshots[s.digest.fingerprint]) for s in snapshots]


def pants_workunits_from_fixture(doc: dict) -> list[dict]:
    """Turn BuildSense workunits of a final report back into the raw dicts Pants hands to a
    WorkunitsCallback (span_id, level, start_secs/nanos, duration_secs/nanos, parent_id...)."""
    wus = doc.get("workunits") or []
    ids = {w["workunit_id"] for w in wus}
    out = []
    for w in wus:
        start = int(w["start_usecs"])
        raw = {
            "span_id": w["workunit_id"],
            "name": w["name"],
            "level": "INFO" if w.get("description") else "DEBUG",
            "start_secs": start // 1_000_000,
            "start_nanos": (start % 1_000_000) * 1000,
            "_end_usecs": int(w["end_usecs"]) if w.get("end_usecs") else None,
        }
        parents = w.get("parent_ids") or ([w["parent_id"]] if w.get("parent_id") else [])
        parents = [p for p in parents if p in ids]
        if parents:
            raw["parent_id"] = parents[0]
            if "parent_ids" in w:
                raw["parent_ids"] = parents
        if w.get("description"):
            raw["description"] = w["description"]
        if w.get("metadata"):
            raw["metadata"] = dict(w["metadata"])
        if w.get("counters"):
            raw["counters"] = dict(w["counters"])
        out.append(raw)
    return out


def snapshot_of_workunits(raw_wus: list[dict], at_usecs: int | None) -> dict[str, dict]:
    """The workunits Pants would report at time `at_usecs` (None: all finished)."""
    result = {}
    for w in raw_wus:
        start = w["start_secs"] * 1_000_000 + w["start_nanos"] // 1000
        if at_usecs is not None and start > at_usecs:
            continue
        wu = {k: v for k, v in w.items() if not k.startswith("_")}
        end = w["_end_usecs"]
        if end is not None and (at_usecs is None or end <= at_usecs):
            dur = max(0, end - start)
            wu["duration_secs"] = dur // 1_000_000
            wu["duration_nanos"] = (dur % 1_000_000) * 1000
        result[wu["span_id"]] = wu
    if at_usecs is not None:  # Pants always reports a started workunit's parents: keep the chain whole
        by_id = {w["span_id"]: w for w in raw_wus}
        for wu in list(result.values()):
            parent = wu.get("parent_id")
            while parent and parent not in result:
                result.update(snapshot_of_workunits([by_id[parent]], None))
                result[parent].pop("duration_secs", None)
                result[parent].pop("duration_nanos", None)
                parent = result[parent].get("parent_id")
    return result


def generate_run_log(size: int, noisy: bool = False) -> bytes:
    """Deterministic Pants-like log text of about `size` bytes (zlib ~7x; `noisy`: ~1.4x, so the
    upload is multi-MB on the wire too)."""
    rng = random.Random(20230412)
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN"]
    msgs = [
        "Starting: Run MyPy on {n} files.",
        "Completed: Building requirements.pex with {n} requirements: ansicolors==1.1.8, requests==2.28.1",
        "Completed: Run Pytest - src/python/toolchain/buildsense/ingestion/tests_{n}.py:tests - succeeded.",
        "Canceled: Resolve transitive targets for {n} addresses",
        "remote cache read: digest {h} ({n} bytes) hit",
        "Initializing scheduler... ({n} rules)",
        "Long running tasks: {n}s\tpants.backend.python.goals.pytest_runner.run_python_test",
    ]
    out = []
    total = 0
    t = 1681311000.0
    i = 0
    while total < size:
        t += rng.random() * 0.05
        ts = time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 100):02d}"
        msg = rng.choice(msgs).format(n=rng.randint(1, 5000), h=f"{rng.getrandbits(128):032x}")
        if noisy:
            msg += " " + base64.b64encode(rng.getrandbits(480).to_bytes(60, "big")).decode()
        line = f"{ts} [{rng.choice(levels)}] {msg} [line {i}]\n".encode()
        out.append(line)
        total += len(line)
        i += 1
    return b"".join(out)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


# Python 3.9 (the Python Pants runs the plugin on) datetime.fromisoformat accepts only this:
_PY39_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(.\d{2}(:\d{2}(:\d{2}(\.\d{3}(\d{3})?)?)?)?"
    r"([+-]\d{2}:\d{2}(:\d{2}(\.\d{6})?)?)?)?$"
)


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------


class StepFailed(Exception):
    pass


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base_url = args.base_url.rstrip("/")
        self.fx = Fixtures(Path(args.fixtures))
        self.workdir = Path(tempfile.mkdtemp(prefix="plugin-drive-"))
        self.steps: list[dict] = []
        self.claims: dict | None = None
        self.log_records: list[str] = []
        self._setup_logging()
        self._import_client()

    # -- setup -----------------------------------------------------------------------------

    def _setup_logging(self) -> None:
        driver = self

        class Capture(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                line = f"{record.levelname} {record.name}: {record.getMessage()}"
                driver.log_records.append(line)
                if driver.args.verbose or record.levelno >= logging.WARNING:
                    print(f"    client log: {line[:400]}", file=sys.stderr)

        root = logging.getLogger("toolchain")
        root.setLevel(logging.DEBUG)
        root.addHandler(Capture())
        root.propagate = False

    def _import_client(self) -> None:
        plugin_dir = Path(self.args.plugin_dir)
        if not (plugin_dir / "toolchain" / "pants" / "buildsense" / "client.py").is_file():
            raise SystemExit(f"drive.py: plugin not unpacked in {plugin_dir}: run dev/python-env")
        global STUB_PANTS_VERSION
        STUB_PANTS_VERSION = self.args.pants_version
        self.stub_finder = PantsStubFinder(_STUB_OVERRIDES)
        sys.meta_path.insert(0, self.stub_finder)
        sys.path.insert(0, str(plugin_dir))
        install_http_hook()

        from toolchain.pants.auth import client as auth_client_mod
        from toolchain.pants.auth import store as auth_store_mod
        from toolchain.pants.auth import token as token_mod
        from toolchain.pants.buildsense import client as bs_client_mod
        from toolchain.pants.buildsense import common as common_mod
        from toolchain.pants.buildsense import local_store as local_store_mod
        from toolchain.pants.buildsense import state as state_mod
        from toolchain.pants.common import network as network_mod
        from toolchain.pants import version as version_mod

        if version_mod.VERSION != PLUGIN_VERSION:
            raise SystemExit(f"drive.py: expected plugin {PLUGIN_VERSION}, found {version_mod.VERSION}")
        self.m_auth = auth_client_mod
        self.m_store = auth_store_mod
        self.m_token = token_mod
        self.m_bs = bs_client_mod
        self.m_common = common_mod
        self.m_local = local_store_mod
        self.m_state = state_mod
        self.user_agent = network_mod.get_common_request_headers()["User-Agent"]

        AuthClient = auth_client_mod.AuthClient
        BSC = bs_client_mod.BuildSenseClient

        def s_acquire(call, args, kwargs, result):
            call["client_success"] = True
            tok = result.auth_token
            call["result"] = {
                "expires_at": tok.expires_at.isoformat(),
                "repo_id": tok.repo_id,
                "customer_id": tok.customer_id,
                "user": tok.user,
                "repo": tok.repo,
                "remote_cache_address": result.remote_client_cfg.cache_address,
                "remote_exec_address": result.remote_client_cfg.exec_address,
            }

        def s_config(call, args, kwargs, result):
            call["client_success"] = result is not None
            call["result"] = result

        def s_run_start(call, args, kwargs, result):
            call["client_success"] = result is not None
            call["result"] = dataclasses.asdict(result) if result is not None else None

        def s_workunits(call, args, kwargs, result):
            call["workunits"] = len(kwargs.get("workunits") or [])
            call["call_num"] = kwargs.get("call_num")
            call["client_success"] = call["client_error"] is None and any(
                h.get("status") and 200 <= h["status"] < 300 for h in call["http"]
            )

        def s_run_end(call, args, kwargs, result):
            call["client_success"] = bool(result.success)
            call["result"] = {"success": result.success, "build_link": result.build_link, "bytes": len(result.data)}

        def s_artifacts(call, args, kwargs, result):
            call["client_success"] = bool(result)
            call["artifacts"] = {k: len(v) for k, v in (kwargs.get("artifacts") or {}).items()}

        def s_batch(call, args, kwargs, result):
            call["client_success"] = bool(result)
            call["batch_name"] = kwargs.get("batch_name")
            with contextlib.suppress(ValueError, AttributeError):
                data = json.loads(kwargs.get("batched_data") or "")
                call["batch_version"] = data.get("version")
                call["batch_run_ids"] = sorted((data.get("build_stats") or {}).keys())

        instrument(AuthClient, "acquire_access_token", s_acquire)
        instrument(BSC, "get_plugin_config", s_config)
        instrument(BSC, "submit_run_start", s_run_start)
        instrument(BSC, "submit_workunits", s_workunits)
        instrument(BSC, "submit_run_end", s_run_end)
        instrument(BSC, "upload_artifacts", s_artifacts)
        instrument(BSC, "submit_batch", s_batch)

        # the client's own verdict on each call (success counter / logged error)
        orig_process_error = BSC._process_error

        def _process_error(client_self, api_call_desc, payload_size, error):
            if RECORDER.call_stack:
                RECORDER.call_stack[-1]["client_error"] = f"{api_call_desc}: {error!r}"
            return orig_process_error(client_self, api_call_desc, payload_size, error)

        BSC._process_error = _process_error

    # -- client objects, built the way the plugin's rules build them -------------------------

    def make_auth_store(self, token: str | None):
        opts = types.SimpleNamespace(
            org=self.args.org,
            auth_file=str(self.workdir / "no-auth-file.json"),
            from_env_var="TOOLCHAIN_AUTH_TOKEN",
            ci_env_variables=[],
            restricted_token_matches={},
            token_expiration_threshold=30,
        )
        env = {"TOOLCHAIN_AUTH_TOKEN": token} if token else {}
        return self.m_store.AuthStore(
            context="drive",
            options=opts,
            pants_bin_name="pants",
            env=env,
            repo=self.args.repo,
            base_url=self.base_url,
        )

    def make_client(self, auth_store, repo: str | None = None, org: str | None = None):
        opts = types.SimpleNamespace(timeout=self.args.timeout, dry_run=False, batch_timeout=self.args.batch_timeout)
        client = self.m_bs.BuildSenseClient.from_options(
            client_options=opts,
            auth=auth_store,
            repo=repo or self.args.repo,
            org_name=org or self.args.org,
            base_url=self.base_url,
        )
        if self.args.compression_threshold is not None:
            client._compression_threshold = self.args.compression_threshold
        return client

    def make_state(self, client, name: str):
        engine = FakeEngine()
        state = self.m_state.BuildState(
            client,
            local_store_base_path=self.workdir / name / "buildsense",
            max_batch_size_mb=20,
            local_store_enabled=True,
            snapshot_type=sys.modules["pants.engine.fs"].Snapshot,
            log_final_upload_latency=True,
        )
        state.set_context(engine)
        return state, engine

    def run_info(self, has_ended: bool, doc: dict, log_file: Path | None = None):
        return self.m_common.RunTrackerBuildInfo(has_ended=has_ended, build_stats=doc, log_file=log_file)

    # -- step bookkeeping --------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, name: str, action: str, expect: str):
        step: dict[str, Any] = {"name": name, "driver_action": action, "expect": expect, "calls": [], "details": {}}
        RECORDER.step = step
        log_start = len(self.log_records)
        print(f"[{name}] {action}", file=sys.stderr)
        t0 = time.monotonic()
        try:
            yield step
        except StepFailed as err:
            step.setdefault("problems", []).append(str(err))
        except Exception as err:  # the real client crashed on what the server answered
            step.setdefault("problems", []).append(f"client raised {type(err).__name__}: {err}")
            step["details"]["traceback_tail"] = _tb_tail(err)
        finally:
            RECORDER.step = None
            step["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
            step["http"] = step.pop("_all_http", [])
            step["client_log"] = self.log_records[log_start:] if self.args.verbose else [
                ln for ln in self.log_records[log_start:] if not ln.startswith("DEBUG")
            ]
            step["run_ids"] = self._run_ids_of(step)
            probs = step.get("problems", [])
            step["ok"] = not probs
            step["reason"] = "; ".join(probs) if probs else None
            self.steps.append(step)
            for ex in step["http"]:
                print(
                    f"    {ex['method']} {_path_of(ex['url'])} -> {ex.get('status') or ex.get('error')}"
                    f" req_id={ex.get('request_id')} bytes={ex['request']['bytes']}"
                    f"{' zlib' if _ex_compressed(ex) else ''}",
                    file=sys.stderr,
                )
            print(f"    => {'OK' if step['ok'] else 'FAIL: ' + step['reason']}", file=sys.stderr)

    @staticmethod
    def _run_ids_of(step: dict) -> list[str]:
        ids: list[str] = []
        for call in _walk_calls(step["calls"]):
            if call.get("batch_run_ids") is not None and call["http"]:
                ids.extend(call["batch_run_ids"])
            elif call.get("run_id") and call["http"]:
                ids.append(call["run_id"])
        return ids

    @staticmethod
    def problem(step: dict, msg: str) -> None:
        step.setdefault("problems", []).append(msg)

    def check_http(self, step: dict, method: str, want: str, count: int | None = None) -> list[dict]:
        """Check the exchanges made by client method `method` in this step."""
        exs = [ex for ex in step.get("_all_http", []) if ex["client_method"] == method]
        if count is not None and len(exs) != count:
            self.problem(step, f"{method}: expected {count} HTTP call(s), client made {len(exs)}")
        for ex in exs:
            st = ex.get("status")
            path = _path_of(ex["url"])
            if st is None:
                self.problem(step, f"{ex['method']} {path}: no answer ({ex.get('error')})")
                continue
            good = 200 <= st < 300 if want == "2xx" else str(st) == want
            if not good:
                body = ex.get("response", {}).get("body")
                self.problem(step, f"{ex['method']} {path}: HTTP {st}, expected {want} (body: {str(body)[:160]})")
            if not ex.get("request_id") and self.args.require_request_id:
                self.problem(step, f"{ex['method']} {path}: answer has no {REQUEST_ID_HEADER} header")
        return exs

    def check_client_success(self, step: dict, method: str, want: bool) -> None:
        for call in _walk_calls(step["calls"]):
            if call["method"] == method and call.get("client_success") is not want:
                why = call.get("client_error") or call.get("exception") or ""
                if not why and want and call["http"] and all(
                    isinstance(ex.get("status"), int) and 200 <= ex["status"] < 300 for ex in call["http"]
                ):
                    why = "(2xx, but the client needs a non-empty JSON body: an object for run start/end, e.g. \"OK\" elsewhere)"
                self.problem(
                    step,
                    f"{method}: client considered it {'a success' if call.get('client_success') else 'a failure'}"
                    f", expected {'success' if want else 'failure'} {why}".rstrip(),
                )

    # -- steps -------------------------------------------------------------------------------

    def step_token_refresh(self, store, token: str) -> bool:
        with self.step("token_refresh", "AuthStore.get_auth_state() -> AuthClient.acquire_access_token", "2xx") as st:
            refresh = store.load_refresh_token()  # local: the client decodes the JWT claims
            self.claims = refresh.claims
            st["details"]["refresh_token_claims"] = refresh.claims
            st["details"]["client_read"] = {
                "exp": refresh.expires_at.isoformat(),
                "toolchain_user": refresh.user,
                "toolchain_repo": refresh.repo,
                "jid": refresh.claims.get("jid"),
            }
            print(f"    claims read by the client: {json.dumps(refresh.claims, sort_keys=True)}", file=sys.stderr)
            state = store.get_auth_state()
            st["details"]["auth_state"] = state.value
            exs = self.check_http(st, "AuthClient.acquire_access_token", "2xx", count=1)
            if not state.is_ok:
                self.problem(st, f"client auth state is {state.value!r}, expected 'ok'")
            access = store.get_access_token()
            st["details"]["access_token_expires_at"] = access.expires_at.isoformat() if access.has_token else None
            if access.has_token:
                with contextlib.suppress(Exception):
                    st["details"]["access_token_claims"] = json.loads(b64url_decode(access.access_token.split(".")[1]))
                left = (access.expires_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
                st["details"]["access_token_ttl_s"] = round(left)
                if left <= 10:
                    self.problem(st, f"access token expires in {left:.0f}s: the client treats it as expired (10 s margin)")
                elif left < 30 * 60:
                    st["details"]["note"] = (
                        "TTL under 30 min: Pants' remote-cache auth plugin (token_expiration_threshold=30) re-asks every call"
                    )
            raw = exs[0].get("response", {}).get("body") if exs else None
            if isinstance(raw, dict) and isinstance(raw.get("token"), dict):
                exp_raw = raw["token"].get("expires_at")
                st["details"]["expires_at_raw"] = exp_raw
                if not isinstance(exp_raw, str) or not _PY39_ISO.match(exp_raw):
                    self.problem(
                        st,
                        f"token.expires_at {exp_raw!r} is not parseable by datetime.fromisoformat on Python 3.9 "
                        "(the Python Pants runs the plugin on): use e.g. 2024-01-01T00:45:00+00:00, no 'Z'",
                    )
                elif not re.search(r"[+-]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", exp_raw):
                    self.problem(st, f"token.expires_at {exp_raw!r} has no UTC offset: the client compares it to an aware datetime and crashes")
                if "remote_cache" not in raw:
                    self.problem(st, "answer has no remote_cache (the client reads remote_cache.address unconditionally)")
            return st.get("problems") is None

    def step_plugin_config(self, state) -> None:
        with self.step("plugin_config", "BuildState.send_report() (first call: OPTIONS)", "2xx") as st:
            op = state.send_report()
            st["details"]["operation"] = op.value
            self.check_http(st, "BuildSenseClient.get_plugin_config", "2xx", count=1)
            self.check_client_success(st, "BuildSenseClient.get_plugin_config", True)
            cfg = state._config  # what the client kept (read-only peek)
            st["details"]["config_kept"] = cfg
            if not isinstance(cfg, dict):
                self.problem(st, "client kept no config (answer had no 'config')")
                return
            wu = cfg.get("work_units")
            if not isinstance(wu, dict) or not isinstance(wu.get("artifacts"), list) or not isinstance(wu.get("metadata"), list):
                self.problem(st, "config.work_units.artifacts/metadata missing or not lists (the converter would crash)")
            if not isinstance(cfg.get("ci_capture"), dict):
                self.problem(st, "config.ci_capture missing or not an object")

    def step_run_start(self, state, start_doc: dict) -> None:
        with self.step("run_start", "BuildState.queue_initial_report() + send_report()", "2xx") as st:
            state.queue_initial_report(self.run_info(False, start_doc))
            op = state.send_report()
            st["details"]["operation"] = op.value
            st["details"]["ci_user_api_id"] = state._ci_user_api_id
            st["details"]["build_link"] = state.build_link
            self.check_http(st, "BuildSenseClient.submit_run_start", "2xx", count=1)
            self.check_client_success(st, "BuildSenseClient.submit_run_start", True)
            if op.value != "sent":
                self.problem(st, f"BuildState.send_report() returned {op.value!r}, expected 'sent'")

    def step_workunits(self, state, raw_wus: list[dict], calls: int) -> None:
        with self.step("workunits", f"{calls} x (BuildState.queue_workunits() + send_report())", "2xx") as st:
            starts = [w["start_secs"] * 1_000_000 + w["start_nanos"] // 1000 for w in raw_wus]
            ends = [w["_end_usecs"] or s for w, s in zip(raw_wus, starts)]
            t_first, t_last = min(starts), max(ends)
            for call_num in range(calls):
                at = t_first + (t_last - t_first) * (call_num + 1) // (calls + 1)
                state.queue_workunits(call_num, snapshot_of_workunits(raw_wus, at))
                op = state.send_report()
                st["details"].setdefault("operations", []).append(op.value)
                if call_num + 1 < calls:
                    time.sleep(self.args.workunits_interval)
            exs = self.check_http(st, "BuildSenseClient.submit_workunits", "2xx", count=calls)
            if not exs and any(c["method"] == "BuildSenseClient.submit_run_start" for c in st["calls"]):
                self.problem(st, "the client retried the run start instead: it sends no workunits until a run start succeeds")
            self.check_client_success(st, "BuildSenseClient.submit_workunits", True)
            st["details"]["compressed"] = [_ex_compressed(ex) for ex in exs]

    def step_run_end_and_artifacts(self, state, engine: FakeEngine, raw_wus, final_doc: dict, calls: int) -> None:
        # Give one workunit a stdout (FileDigest) and a coverage_xml (Snapshot, a "standalone"
        # artifact the client uploads with descriptors.json), as Pants' pytest runner would.
        coverage = self.fx.path("pytest_coverage.xml").read_bytes()
        stdout = self.fx.path("pytest_success_stdout.txt").read_bytes()
        final_wus = snapshot_of_workunits(raw_wus, None)
        target = next((w for w in final_wus.values() if "pytest" in w["name"].lower()), None) or list(final_wus.values())[-1]
        target["artifacts"] = {
            "stdout_digest": engine.file_digest(stdout),
            "coverage_xml": engine.snapshot({"dist/coverage.xml": coverage}),
        }
        log = generate_run_log(self.args.log_size, noisy=self.args.log_noisy)
        log_file = self.workdir / "pants_run_log.txt"
        log_file.write_bytes(log)
        info = self.run_info(True, final_doc, log_file)

        step_cm = self.step(
            "run_end", "BuildState.build_ended() + send_final_report() -> BuildSenseClient.submit_run_end", "2xx"
        )
        with step_cm as st:
            state.build_ended(info, call_count=calls, work_units_map=final_wus)
            # send_final_report() does the PATCH and then, on success, the artifacts upload.
            # Split what it records into the run_end and artifacts steps.
            state.send_final_report()
            self.check_http(st, "BuildSenseClient.submit_run_end", "2xx", count=1)
            self.check_client_success(st, "BuildSenseClient.submit_run_end", True)
            art_calls = [c for c in st["calls"] if c["method"] == "BuildSenseClient.upload_artifacts"]
            st["calls"] = [c for c in st["calls"] if c["method"] != "BuildSenseClient.upload_artifacts"]
            art_http = [ex for ex in st.get("_all_http", []) if ex["client_method"] == "BuildSenseClient.upload_artifacts"]
            st["_all_http"] = [ex for ex in st.get("_all_http", []) if ex not in art_http]
            wus_sent = len(final_doc.get("workunits") or [])
            st["details"]["workunits_in_report"] = wus_sent
            st["details"]["workunits_with_artifacts"] = sum(1 for w in final_doc["workunits"] if w.get("artifacts"))
            st["details"]["build_link"] = state.build_link

        with self.step(
            "artifacts", "(inside send_final_report) BuildSenseClient.upload_artifacts: pants_run_log + coverage_xml", "2xx"
        ) as st:
            st["calls"] = art_calls
            st["_all_http"] = art_http
            st["details"]["log_bytes"] = len(log)
            if not art_calls:
                self.problem(st, "client made no artifacts upload (it only does after a successful run end)")
            else:
                self.check_http(st, "BuildSenseClient.upload_artifacts", "2xx", count=1)
                self.check_client_success(st, "BuildSenseClient.upload_artifacts", True)
                parts = (art_http[0]["request"].get("parts") or []) if art_http else []
                names = [p["name"] for p in parts]
                st["details"]["parts"] = parts
                for must in ("pants_run_log", "descriptors.json"):
                    if must not in names:
                        self.problem(st, f"client sent no {must} part (driver bug?)")

    def step_run_end_big(self, client) -> None:
        name = self.fx.biggest_build_stats()
        run_id = new_run_id()
        doc = self.fx.doc(name, run_id)
        with self.step("run_end_big", f"BuildSenseClient.submit_run_end({name}, no run start)", "2xx") as st:
            st["details"]["fixture"] = name
            st["details"]["fixture_bytes"] = self.fx.path(name).stat().st_size
            result = client.submit_run_end(run_id=run_id, user_api_id=None, build_stats=doc)
            st["details"]["payload_bytes"] = len(result.data)
            exs = self.check_http(st, "BuildSenseClient.submit_run_end", "2xx", count=1)
            self.check_client_success(st, "BuildSenseClient.submit_run_end", True)
            st["details"]["compressed"] = [_ex_compressed(ex) for ex in exs]

    def step_batch(self, state, base: Path, impersonating: str | None) -> None:
        names = self.args.batch_fixtures.split(",")
        stored = []
        store = self.m_local.LocalBuildsStore(base_path=base, max_batch_size_mb=20, enabled=True)
        for name in names:
            run_id = new_run_id()
            store.store_build(run_id=run_id, json_build_data=json.dumps(self.fx.doc(name.strip(), run_id)))
            stored.append(run_id)
        with self.step(
            "batch", f"LocalBuildsStore.store_build() x{len(stored)} (failed run ends) + BuildState.send_report()", "2xx"
        ) as st:
            st["details"]["stored_run_ids"] = stored
            st["details"]["fixtures"] = names
            st["details"]["client_had_enough_successes"] = state._client.has_successful_calls
            op = state.send_report()
            st["details"]["operation"] = op.value
            calls = [c for c in _walk_calls(st["calls"]) if c["method"] == "BuildSenseClient.submit_batch"]
            if not calls:
                self.problem(
                    st,
                    "client sent no batch (it only does after more than 2 consecutive successful calls in this run)",
                )
                return
            self.check_http(st, "BuildSenseClient.submit_batch", "2xx", count=1)
            self.check_client_success(st, "BuildSenseClient.submit_batch", True)
            sent = calls[0].get("batch_run_ids") or []
            missing = sorted(set(stored) - set(sent))
            if missing:
                self.problem(st, f"batch lacks stored runs {missing}")
            left = list((base / "upload").glob("*.json"))
            st["details"]["batch_file_kept_for_retry"] = bool(left)
            st["details"]["impersonate"] = impersonating

    # -- refusals ----------------------------------------------------------------------------

    def _refusal_refresh(self, name: str, token: str, what: str, want_status: str = "403") -> Any:
        store = self.make_auth_store(token)
        with self.step(name, f"AuthStore.get_auth_state() with {what}", want_status) as st:
            with contextlib.suppress(Exception):
                st["details"]["claims_sent"] = json.loads(b64url_decode(token.split(".")[1]))
            state = store.get_auth_state()
            st["details"]["auth_state"] = state.value
            exs = self.check_http(st, "AuthClient.acquire_access_token", want_status, count=1)
            for ex in exs:
                ctype = (ex.get("response") or {}).get("content_type")
                body = (ex.get("response") or {}).get("body")
                if ctype != "application/json":
                    self.problem(
                        st,
                        f"error answer Content-Type is {ctype!r}: the client only reads a refusal when it is exactly "
                        "'application/json' (otherwise: transient, retried on every report)",
                    )
                if not (isinstance(body, dict) and body.get("rejected") is True):
                    self.problem(st, f"403 body lacks \"rejected\": true (got {str(body)[:120]})")
            if state.value != "failed":
                self.problem(st, f"client auth state is {state.value!r}, expected 'failed' (final rejection)")
            st["details"]["client_treated_as_rejected"] = state.value == "failed"
        return store

    def _local_refusal(self, name: str, token: str, what: str) -> None:
        """Tokens the client refuses itself: nothing may reach the server."""
        store = self.make_auth_store(token)
        with self.step(name, f"AuthStore.get_auth_state() with {what}", "no_request") as st:
            try:
                state = store.get_auth_state()
                st["details"]["auth_state"] = state.value
            except Exception as err:  # the plugin lets this one escape (Pants would show a traceback)
                st["details"]["client_raised"] = f"{type(err).__name__}: {err}"
            if st.get("_all_http"):
                self.problem(st, "client sent a request for a token it should refuse locally")

    def scenario_bad_token(self) -> None:
        good = self.args.token
        now = int(time.time())
        if good and good.count(".") == 2:
            h, c, _sig = good.split(".")
            claims = json.loads(b64url_decode(c))
        else:
            h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            claims = {
                "exp": now + 3600, "iat": now, "jid": uuid.uuid4().hex, "type": "refresh",
                "toolchain_user": "nobody", "toolchain_repo": self.args.repo,
                "org": self.args.org, "repo": self.args.repo,
            }
            c = b64url(json.dumps(claims).encode())
        bad_sig = f"{h}.{c}.{b64url(secrets.token_bytes(32))}"
        forged_claims = dict(claims, exp=now + 400 * 86400, jid=uuid.uuid4().hex, toolchain_user="mallory")
        forged = f"{h}.{b64url(json.dumps(forged_claims).encode())}.{good.split('.')[2] if good and good.count('.') == 2 else b64url(b'x' * 32)}"
        unsigned = f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64url(json.dumps(dict(claims, exp=now + 3600)).encode())}."

        store = self._refusal_refresh("refresh_bad_signature", bad_sig, "a JWT whose signature is garbage")
        self._refusal_refresh("refresh_forged_claims", forged, "a JWT whose claims were edited (signature no longer matches)")
        self._refusal_refresh("refresh_alg_none", unsigned, "an unsigned JWT (alg none)")

        with self.step("buildsense_after_rejection", "BuildState.send_report() after the refusal", "no_request") as st:
            client = self.make_client(store)
            state, _ = self.make_state(client, "rejected")
            state.queue_initial_report(self.run_info(False, self.fx.doc("ci_build_pr_start_1.json", new_run_id())))
            op = state.send_report()
            st["details"]["operation"] = op.value
            st["details"]["client_disabled"] = not state._enabled
            if st.get("_all_http"):
                self.problem(st, "client still called the build API after its token was rejected")
            if op.value != "error":
                self.problem(st, f"BuildState.send_report() returned {op.value!r}, expected 'error'")

        expired = dict(claims, exp=now - 3600)
        self._local_refusal(
            "expired_token_local", f"{h}.{b64url(json.dumps(expired).encode())}.{b64url(b'sig')}", "an expired JWT"
        )
        self._local_refusal("garbage_token_local", "garbage-not-a-jwt", "a non-JWT string")

    def scenario_wrong_repo(self, token: str) -> None:
        store = self.make_auth_store(token)
        if not self.step_token_refresh(store, token):
            return
        other = self.args.other_repo or f"{self.args.repo}-not-granted"
        client = self.make_client(store, repo=other)
        state, _ = self.make_state(client, "wrong-repo")
        with self.step("plugin_config_wrong_repo", f"BuildSenseClient.get_plugin_config() on {self.args.org}/{other}", "403") as st:
            cfg = client.get_plugin_config()
            st["details"]["config"] = cfg
            self.check_http(st, "BuildSenseClient.get_plugin_config", "403", count=1)
            self.check_client_success(st, "BuildSenseClient.get_plugin_config", False)
        with self.step("run_start_wrong_repo", f"BuildState.send_report() with a run start for {self.args.org}/{other}", "403") as st:
            state.queue_initial_report(self.run_info(False, self.fx.doc("ci_build_pr_start_1.json", new_run_id())))
            op = state.send_report()
            st["details"]["operation"] = op.value
            self.check_http(st, "BuildSenseClient.submit_run_start", "403", count=1)
            self.check_client_success(st, "BuildSenseClient.submit_run_start", False)
        with self.step("run_end_wrong_repo", f"BuildSenseClient.submit_run_end() for {self.args.org}/{other}", "403") as st:
            run_id = new_run_id()
            res = client.submit_run_end(run_id=run_id, user_api_id=None, build_stats=self.fx.doc("ci_build_pr_final_1.json", run_id))
            st["details"]["kept_for_batch"] = not res.success
            self.check_http(st, "BuildSenseClient.submit_run_end", "403", count=1)
            self.check_client_success(st, "BuildSenseClient.submit_run_end", False)

    # -- the happy path ------------------------------------------------------------------------

    def scenario_all(self, token: str, parts: set[str]) -> None:
        store = self.make_auth_store(token)
        if not self.step_token_refresh(store, token):
            print("    token refresh failed: skipping the build API steps", file=sys.stderr)
            return
        client = self.make_client(store)
        state, engine = self.make_state(client, "main")
        run_id = new_run_id()
        start_doc = self.fx.doc(self.args.start_fixture, run_id)
        final_doc = self.fx.doc(self.args.final_fixture, run_id)
        raw_wus = pants_workunits_from_fixture(self.fx.doc(self.args.workunits_fixture, run_id))
        calls = self.args.workunits_calls
        if "config" in parts:
            self.step_plugin_config(state)
        if "run" in parts:
            self.step_run_start(state, start_doc)
            self.step_workunits(state, raw_wus, calls)
            self.step_run_end_and_artifacts(state, engine, raw_wus, final_doc, calls)
        if "big" in parts:
            self.step_run_end_big(client)
        if "batch" in parts:
            self.step_batch(state, self.workdir / "main" / "buildsense", state._ci_user_api_id)

    # -- output ------------------------------------------------------------------------------

    def report(self) -> dict:
        sent = []
        for st in self.steps:
            for call in _walk_calls(st["calls"]):
                if not call["http"]:
                    continue
                ids = call.get("batch_run_ids") if call.get("batch_run_ids") is not None else (
                    [call["run_id"]] if call.get("run_id") else []
                )
                for ex in call["http"]:
                    sent.append(
                        {
                            "step": st["name"],
                            "client_method": call["method"],
                            "http_method": ex["method"],
                            "path": _path_of(ex["url"]),
                            "status": ex.get("status"),
                            "request_id": ex.get("request_id"),
                            "run_ids": ids,
                        }
                    )
        failures = [f"{st['name']}: {st['reason']}" for st in self.steps if not st["ok"]]
        return {
            "scenario": self.args.scenario,
            "ok": not failures and bool(self.steps),
            "base_url": self.base_url,
            "org": self.args.org,
            "repo": self.args.repo,
            "client": {
                "package": f"toolchain.pants.plugin=={PLUGIN_VERSION}",
                "user_agent": self.user_agent,
                "stubbed_pants_modules": sorted(self.stub_finder.imported),
                "compression_threshold": self.args.compression_threshold if self.args.compression_threshold is not None else 10240,
            },
            "refresh_token_claims": self.claims,
            "run_ids": {st["name"]: st["run_ids"] for st in self.steps},
            "all_run_ids": sorted({rid for st in self.steps for rid in st["run_ids"]}),
            "sent": sent,
            "failures": failures,
            "steps": [_clean_step(st) for st in self.steps],
        }

    def cleanup(self) -> None:
        if not self.args.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _walk_calls(calls: list[dict]):
    for c in calls:
        yield c
        yield from _walk_calls(c.get("nested", []))


def _path_of(url: str) -> str:
    return re.sub(r"^[a-z]+://[^/]+", "", url)


def _ex_compressed(ex: dict) -> bool:
    parts = ex["request"].get("parts") or []
    return bool(parts) and all(p.get("zlib") for p in parts)


def _tb_tail(err: BaseException) -> list[str]:
    import traceback

    return traceback.format_exception(type(err), err, err.__traceback__)[-4:]


def _clean_step(st: dict) -> dict:
    def clean_call(c: dict) -> dict:
        c = dict(c)
        c["http"] = [ex.get("request_id") or ex.get("status") for ex in c["http"]]
        if "nested" in c:
            c["nested"] = [clean_call(n) for n in c["nested"]]
        return c

    out = {k: v for k, v in st.items() if k not in ("problems",)}
    out["calls"] = [clean_call(c) for c in st["calls"]]
    out["http"] = [{k: v for k, v in ex.items()} for ex in st["http"]]
    return out


SCENARIOS = {
    "all": {"config", "run", "big", "batch"},
    "refresh": set(),
    "config": {"config"},
    "run": {"config", "run"},
    "big-run-end": {"big"},
    "batch": {"config", "run", "batch"},
    "bad-token": None,
    "wrong-repo": None,
}


def main() -> int:
    _reexec_in_venv()
    p = argparse.ArgumentParser(description="Drive the real toolchain.pants.plugin 0.27.0 client against a gateway.")
    p.add_argument("--base-url", required=True, help="the plugin's [toolchain-setup].base_url, e.g. http://127.0.0.1:8080")
    p.add_argument("--org", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--token", default=os.environ.get("TOOLCHAIN_AUTH_TOKEN"), help="refresh token (JWT); default $TOOLCHAIN_AUTH_TOKEN")
    p.add_argument("--fixtures", default=str(REPO.parent / "shared" / "fixtures" / "pants-runs"))
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--out", help="write the JSON result here (default: stdout)")
    p.add_argument("--other-repo", help="wrong-repo: the repo the token is NOT for (default: REPO-not-granted)")
    p.add_argument("--plugin-dir", default=str(DEFAULT_PLUGIN_DIR))
    p.add_argument("--pants-version", default="2.16.0", help="Pants version the stub reports (User-Agent)")
    p.add_argument("--timeout", type=int, default=10, help="[buildsense].timeout (client default 10)")
    p.add_argument("--batch-timeout", type=int, default=40, help="[buildsense].batch_timeout (client default 40)")
    p.add_argument("--compression-threshold", type=int, default=None,
                   help="override the client's 10 KiB zlib threshold (0: compress all, 1e9: none)")
    p.add_argument("--log-size", type=int, default=5 * 1024 * 1024, help="bytes of generated pants_run_log")
    p.add_argument("--log-noisy", action="store_true", help="make the log barely compressible (multi-MB on the wire)")
    p.add_argument("--workunits-calls", type=int, default=3)
    p.add_argument("--workunits-interval", type=float, default=0.3)
    p.add_argument("--start-fixture", default="ci_build_pr_start_1.json")
    p.add_argument("--final-fixture", default="ci_build_pr_final_1.json")
    p.add_argument("--workunits-fixture", default="pants_pytest_with_address.json")
    p.add_argument("--batch-fixtures", default="ci_build_pr_final_2.json,ci_build_branch_final_1.json,run_lint_failed.json,pants_jvm_rules_run.json")
    p.add_argument("--no-require-request-id", dest="require_request_id", action="store_false")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="show the client's DEBUG logs")
    args = p.parse_args()
    if args.scenario not in ("bad-token",) and not args.token:
        p.error("--token (or $TOOLCHAIN_AUTH_TOKEN) is required for this scenario")

    drv = Driver(args)
    try:
        if args.scenario == "bad-token":
            drv.scenario_bad_token()
        elif args.scenario == "wrong-repo":
            drv.scenario_wrong_repo(args.token)
        else:
            drv.scenario_all(args.token, SCENARIOS[args.scenario])
    finally:
        drv.cleanup()
    result = drv.report()
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    for line in result["failures"]:
        print(f"FAIL {line}", file=sys.stderr)
    n_ok = sum(1 for st in result["steps"] if st["ok"])
    print(f"plugin-client {args.scenario}: {n_ok} passed, {len(result['steps']) - n_ok} failed", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
