#!/usr/bin/env python3
"""Emit a Pants-shaped OpenTelemetry trace through the REAL Pants OTel span processor.

The span processor is the one of `shoalsoft-pants-opentelemetry-plugin==0.5.0` (the same code as
Pants' built-in `pants.backend.observability.opentelemetry` backend), wired exactly as its
`register.py` rule wires it: `TelemetryWorkunitsCallback` -> `SingleThreadedProcessor` ->
`ExceptionLoggingProcessor` -> `OpenTelemetryProcessor` (from `get_processor`, with its
`TracerProvider`, `BatchSpanProcessor` and `OTLPSpanExporter` of
`opentelemetry-exporter-otlp-proto-http==1.34.1`). The driver only plays Pants: it stubs the
`pants.*` modules the plugin imports, generates a synthetic run of workunits and feeds them to the
callback the way Pants' StreamingWorkunitHandler does (periodic started/completed lists, then
`finished=True`). Every HTTP exchange is recorded at `requests.Session.send`.

Run `dev/python-env` first; this script re-executes itself under $REPO/target/venv/bin/python.
See README.md next to this file.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import getpass
import gzip
import json
import logging
import os
import random
import socket
import sys
import tempfile
import threading
import time
import types
import urllib.parse
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared pants_stubs module
from pants_stubs import REQUEST_ID_HEADER, PantsStubFinder, hook_requests_send, redact_bearer, reexec_in_venv  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "target" / "venv"
PLUGIN_PACKAGE = "shoalsoft-pants-opentelemetry-plugin"
PLUGIN_VERSION = "0.5.0"


def _reexec_in_venv() -> None:
    reexec_in_venv(Path(__file__), REPO, VENV, "OTEL_EMIT_NO_REEXEC")


# ----------------------------------------------------------------------------------------------
# pants.* stubs: the few real behaviours the plugin needs (reimplemented minimally), filled into
# the inert modules made by the import hook of tests/pants_stubs.py.
# ----------------------------------------------------------------------------------------------

STUB_PANTS_VERSION = "2.27.0"


class FrozenDict(Mapping):
    """pants.util.frozendict.FrozenDict, minimally: an immutable, hashable Mapping over `_data`
    (the plugin's JSON encoder reads `_data`) with `deep_freeze` (used by the workunit handler)."""

    def __init__(self, *args, **kwargs) -> None:
        self._data = dict(*args, **kwargs)
        self._hash: int | None = None

    @classmethod
    def deep_freeze(cls, data: Mapping) -> "FrozenDict":
        def freeze(v):
            if isinstance(v, Mapping):
                return cls({k: freeze(x) for k, x in v.items()})
            if isinstance(v, (list, tuple)):
                return tuple(freeze(x) for x in v)
            if isinstance(v, set):
                return frozenset(freeze(x) for x in v)
            return v

        return cls({k: freeze(v) for k, v in data.items()})

    def __getitem__(self, k):
        return self._data[k]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(sorted(((k, repr(v)) for k, v in self._data.items()))))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"


# Pants' engine counter names (workunit_store Metric), reported by
# pants.engine.internals.native_engine.all_counter_names(): the plugin fills every name missing
# from the run's metrics with 0, so the root span's `pantsbuild.metrics-v0` lists all of them.
ALL_COUNTER_NAMES = [
    "backtrack_attempts",
    "docker_execution_errors",
    "docker_execution_requests",
    "docker_execution_successes",
    "local_cache_read_errors",
    "local_cache_requests",
    "local_cache_requests_cached",
    "local_cache_requests_uncached",
    "local_cache_total_time_saved_ms",
    "local_cache_write_errors",
    "local_execution_requests",
    "local_process_total_time_run_ms",
    "remote_cache_read_errors",
    "remote_cache_request_timeouts",
    "remote_cache_requests",
    "remote_cache_requests_cached",
    "remote_cache_requests_uncached",
    "remote_cache_speculation_local_completed_first",
    "remote_cache_speculation_remote_completed_first",
    "remote_cache_total_time_saved_ms",
    "remote_cache_write_attempts",
    "remote_cache_write_errors",
    "remote_cache_write_successes",
    "remote_execution_errors",
    "remote_execution_requests",
    "remote_execution_rpc_errors",
    "remote_execution_rpc_execute",
    "remote_execution_rpc_retries",
    "remote_execution_rpc_wait_execution",
    "remote_execution_success",
    "remote_execution_timeouts",
    "remote_process_total_time_run_ms",
    "remote_store_missing_digest",
    "remote_store_request_timeouts",
]

# The environment Pants would read TRACEPARENT from (the rule asks for it through
# environment_vars_subset); set by the driver.
PANTS_ENV: dict[str, str] = {}


def _rule(fn=None, **_kwargs):
    """pants.engine.rules.rule: identity decorator (so the plugin's rule is a plain coroutine)."""
    if fn is None:
        return lambda f: f
    return fn


class _EnvironmentVarsRequest:
    def __init__(self, requested, allowed=None) -> None:
        self.requested = tuple(requested)


async def _environment_vars_subset(request: _EnvironmentVarsRequest, *args, **kwargs):
    return {k: PANTS_ENV[k] for k in request.requested if k in PANTS_ENV}


class _WorkunitsCallback:
    """pants.engine.streaming_workunit_handler.WorkunitsCallback (an ABC in Pants)."""


class _WorkunitsCallbackFactory:
    def __init__(self, callback_factory) -> None:
        self.callback_factory = callback_factory


class _WorkunitsCallbackFactoryRequest:
    pass


class _StreamingWorkunitContext:
    """The one method the plugin calls on Pants' StreamingWorkunitContext: get_metrics()."""

    def __init__(self, metrics: dict[str, int]) -> None:
        self._metrics = metrics

    def get_metrics(self) -> dict[str, int]:
        return dict(self._metrics)  # a fresh dict each call, as Pants returns (the plugin adds zeros)


def _fill(**attrs) -> Callable[[types.ModuleType], None]:
    def fill(m: types.ModuleType) -> None:
        for k, v in attrs.items():
            if isinstance(v, type):
                with contextlib.suppress(TypeError):
                    v.__module__ = m.__name__
            setattr(m, k, v)

    return fill


def _stub_overrides() -> dict[str, Callable[[types.ModuleType], None]]:
    from packaging.version import Version

    return {
        "pants.util.frozendict": _fill(FrozenDict=FrozenDict),
        "pants.engine.internals.native_engine": _fill(all_counter_names=lambda: list(ALL_COUNTER_NAMES)),
        "pants.engine.rules": _fill(rule=_rule, collect_rules=lambda *a, **k: (), implicitly=lambda *a, **k: {}),
        "pants.engine.env_vars": _fill(EnvironmentVarsRequest=_EnvironmentVarsRequest),
        "pants.core.util_rules.env_vars": _fill(environment_vars_subset=_environment_vars_subset),
        "pants.engine.streaming_workunit_handler": _fill(
            WorkunitsCallback=_WorkunitsCallback,
            WorkunitsCallbackFactory=_WorkunitsCallbackFactory,
            WorkunitsCallbackFactoryRequest=_WorkunitsCallbackFactoryRequest,
            StreamingWorkunitContext=_StreamingWorkunitContext,
        ),
        "pants.version": _fill(VERSION=STUB_PANTS_VERSION, PANTS_SEMVER=Version(STUB_PANTS_VERSION)),
        "pants.util.strutil": _fill(softwrap=lambda s: s),
    }


# ----------------------------------------------------------------------------------------------
# Wire recorder: hooks requests.Session.send (records only, changes nothing).
# ----------------------------------------------------------------------------------------------



def _decompress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _hex_of_b64(v: str) -> str:
    return base64.b64decode(v).hex()


def decode_request_spans(body: bytes, content_type: str | None, encoding: str | None) -> list[dict] | None:
    """(otel span id hex, workunit span id) of every span in an OTLP request body; None if the
    body does not decode."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        raw = _decompress(body, encoding)
        out = []
        if (content_type or "").startswith("application/json"):
            doc = json.loads(raw)
            for rs in doc.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        wu = next((a["value"].get("stringValue") for a in sp.get("attributes", [])
                                   if a["key"] == "pantsbuild.workunit.span_id"), None)
                        out.append({"span_id": sp.get("spanId"), "workunit_id": wu})
        else:
            req = ExportTraceServiceRequest.FromString(raw)
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        wu = next((a.value.string_value for a in sp.attributes
                                   if a.key == "pantsbuild.workunit.span_id"), None)
                        out.append({"span_id": sp.span_id.hex(), "workunit_id": wu})
        return out
    except Exception:  # noqa: BLE001 - e.g. --malformed
        return None


def decode_response(resp) -> dict:
    """ExportTraceServiceResponse (protobuf or JSON) -> partial_success; google.rpc.Status for
    errors; otherwise the text."""
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
    body = resp.content or b""
    out: dict[str, Any] = {"content_type": ctype or None, "bytes": len(body)}
    if ctype in ("application/x-protobuf", "application/protobuf"):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        if 200 <= resp.status_code < 300:
            try:
                msg = ExportTraceServiceResponse.FromString(body)
                out["partial_success_present"] = msg.HasField("partial_success")
                out["partial_success"] = {
                    "rejected_spans": msg.partial_success.rejected_spans,
                    "error_message": msg.partial_success.error_message,
                }
            except Exception as err:  # noqa: BLE001
                out["decode_error"] = f"not an ExportTraceServiceResponse: {err}"
        else:
            try:
                from google.rpc import status_pb2

                st = status_pb2.Status.FromString(body)
                out["error_status"] = {"code": st.code, "message": st.message, "details": len(st.details)}
            except Exception as err:  # noqa: BLE001
                out["decode_error"] = f"not a google.rpc.Status: {err}"
                out["body"] = body[:500].decode("utf-8", "replace")
    elif ctype == "application/json":
        try:
            doc = json.loads(body or b"null")
            out["json"] = doc
            if isinstance(doc, dict) and 200 <= resp.status_code < 300:
                ps = doc.get("partialSuccess")
                out["partial_success_present"] = ps is not None
                ps = ps or {}
                out["partial_success"] = {
                    "rejected_spans": int(ps.get("rejectedSpans", 0) or 0),
                    "error_message": ps.get("errorMessage", ""),
                }
        except ValueError:
            out["body"] = body[:500].decode("utf-8", "replace")
    else:
        out["body"] = body[:500].decode("utf-8", "replace")
    return out


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[dict] = []
        self.batch: int | None = None  # which batch the driver is exporting
        self.send: int | None = None  # which export call (a repeated batch is sent twice)
        self.lock = threading.Lock()


RECORDER = Recorder()


def install_http_hook() -> None:
    def describe(request, body: bytes) -> dict[str, Any]:
        headers = request.headers
        ctype = headers.get("Content-Type")
        cenc = headers.get("Content-Encoding")
        spans = decode_request_spans(body, ctype, cenc)
        return {
            "batch": RECORDER.batch,
            "send": RECORDER.send,
            "method": request.method,
            "url": request.url,
            "path": urllib.parse.urlsplit(request.url).path,
            "request": {
                "bytes": len(body),
                "content_type": ctype,
                "content_encoding": cenc,
                "user_agent": headers.get("User-Agent"),
                "authorization": redact_bearer(headers.get("Authorization"), 4),
                "header_names": sorted(headers.keys()),
            },
            "spans": len(spans) if spans is not None else None,
            "_span_ids": spans,
        }

    def finish(ex: dict[str, Any], resp) -> None:
        ex["response"] = decode_response(resp)
        ex["partial_success"] = ex["response"].get("partial_success")

    def record(ex: dict[str, Any]) -> None:
        with RECORDER.lock:
            RECORDER.exchanges.append(ex)

    hook_requests_send(describe, finish, record)


class LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.WARNING:
            msg += f" [{record.exc_info[1]!r}]"
        self.lines.append(f"{record.levelname} {record.name}: {msg}")


# ----------------------------------------------------------------------------------------------
# The synthetic Pants run.
# ----------------------------------------------------------------------------------------------

GOALS = {
    # goal -> (goal rule workunit name, rules under it, process descriptions)
    "lint": ("pants.core.goals.lint.lint", [
        "pants.core.goals.lint.lint_to_lint_result",
        "pants.backend.python.lint.flake8.rules.flake8_lint_partition",
        "pants.backend.python.lint.black.rules.black_lint",
        "pants.backend.python.lint.isort.rules.isort_lint",
        "pants.core.util_rules.partitions.partition_sequentially",
        "pants.backend.python.util_rules.pex.build_pex",
        "pants.backend.python.util_rules.pex.create_venv_pex",
    ], ["Run Flake8 on {n} files.", "Run Black on {n} files.", "Run isort on {n} files.",
        "Building flake8.pex with {n} requirements"]),
    "check": ("pants.core.goals.check.check", [
        "pants.backend.python.typecheck.mypy.rules.mypy_typecheck",
        "pants.backend.python.typecheck.mypy.rules.mypy_typecheck_partition",
        "pants.backend.python.util_rules.pex_from_targets.create_pex_from_targets",
        "pants.backend.python.util_rules.python_sources.prepare_python_sources",
        "pants.engine.internals.graph.transitive_targets",
    ], ["Typecheck using MyPy - cpython==3.11.* - {n} files", "Building requirements_venv.pex",
        "Determine Python sources for {n} targets"]),
    "test": ("pants.core.goals.test.run_tests", [
        "pants.core.goals.test.run_test_batch",
        "pants.backend.python.goals.pytest_runner.run_python_tests",
        "pants.backend.python.goals.pytest_runner.setup_pytest_for_target",
        "pants.backend.python.goals.coverage_py.merge_coverage_data",
        "pants.backend.python.util_rules.local_dists.build_local_dists",
    ], ["Run Pytest for src/python/app/test_mod{n}.py:tests", "Building pytest_runner.pex",
        "Merge Pytest coverage reports."]),
    "fmt": ("pants.core.goals.fmt.fmt", [
        "pants.core.goals.fmt.fmt_target",
        "pants.backend.python.lint.black.rules.black_fmt",
    ], ["Run Black on {n} files."]),
    "package": ("pants.core.goals.package.package_asset", [
        "pants.backend.python.goals.package_pex_binary.package_pex_binary",
        "pants.backend.python.util_rules.pex.build_pex",
    ], ["Building src.python.app/bin.pex with {n} requirements"]),
}
INFRA_RULES = [
    "pants.engine.internals.specs_rules.resolve_addresses_from_specs",
    "pants.engine.internals.build_files.parse_address_family",
    "pants.engine.internals.graph.resolve_target",
    "pants.engine.internals.graph.resolve_dependencies",
    "pants.engine.internals.graph.hydrate_sources",
    "pants.backend.python.dependency_inference.rules.infer_python_dependencies_via_source",
    "pants.engine.internals.build_files.evaluate_preludes",
    "pants.source.source_root.get_source_root",
]
PROCESS_NAMES = ["process", "pants.engine.process.fallible_to_exec_result_or_raise"]


@dataclasses.dataclass
class WU:
    span_id: str
    name: str
    kind: str  # root | goal | infra | rule | process
    level: str
    parent_ids: list[str]
    start_ns: int
    end_ns: int
    description: str | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    goal: str | None = None
    depth: int = 0


def _hex16(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def build_run(n: int, goals: list[str], outcome: str, rng: random.Random, t0_ns: int, duration_s: float) -> tuple[list[WU], dict]:
    """A run of exactly `n` workunits: root `pants_run`, one workunit per goal, infra rules under
    the root, and a tree of rule/process workunits under each goal (strictly nested intervals, so
    a parent always starts before and ends after its children)."""
    if n < 1 + len(goals):
        raise SystemExit(f"--spans {n} is too few for a root and {len(goals)} goals")
    D = int(duration_s * 1e9)
    used: set[str] = set()

    def new_id() -> str:
        while True:
            s = _hex16(rng)
            if s not in used:
                used.add(s)
                return s

    def sub_interval(p: WU, frac_lo=0.02, frac_hi=0.6) -> tuple[int, int]:
        pd = p.end_ns - p.start_ns
        d = max(2_000, int(pd * rng.uniform(frac_lo, frac_hi)))
        d = min(d, pd - 2_000)
        s = p.start_ns + 1_000 + rng.randint(0, max(0, pd - d - 2_000))
        return s, s + d

    wus: list[WU] = []
    root = WU(new_id(), "pants_run", "root", "INFO", [], t0_ns + rng.randint(0, 999), t0_ns + D + rng.randint(0, 999),
              description=None)
    wus.append(root)

    # Goals run one after the other in [5%, 98%] of the run.
    goal_wus: list[WU] = []
    slot_lo, slot_hi = root.start_ns + D // 20, root.start_ns + D * 98 // 100
    slot = (slot_hi - slot_lo) // max(1, len(goals))
    for i, g in enumerate(goals):
        gname = GOALS[g][0]
        s = slot_lo + i * slot + rng.randint(0, 999_999)
        e = slot_lo + (i + 1) * slot - rng.randint(1_000_000, 2_000_000)
        w = WU(new_id(), gname, "goal", "INFO", [root.span_id], s, e, description=f"`{g}` goal", goal=g, depth=1)
        goal_wus.append(w)
        wus.append(w)

    remaining = n - len(wus)
    n_infra = min(remaining, max(0, remaining // 10))
    infra_box = WU("", "", "infra", "INFO", [], root.start_ns, slot_lo)  # the early graph phase
    for _ in range(n_infra):
        s, e = sub_interval(infra_box, 0.001, 0.3)
        wus.append(WU(new_id(), rng.choice(INFRA_RULES), "infra", rng.choice(["DEBUG", "DEBUG", "INFO"]),
                      [root.span_id], s, e, description=None, depth=1,
                      metadata={"address": f"src/python/app/mod{rng.randint(0, 400)}.py"} if rng.random() < 0.3 else {}))
    remaining = n - len(wus)

    # Rule/process trees under each goal: pick parents among rules, deeper preferred.
    containers: dict[str, list[WU]] = {g.span_id: [g] for g in goal_wus}
    per_goal = [remaining // max(1, len(goals))] * len(goals)
    for i in range(remaining - sum(per_goal)):
        per_goal[i % len(goals)] += 1
    processes: list[WU] = []
    for gw, count in zip(goal_wus, per_goal):
        _, rules, procs = GOALS[gw.goal]
        pool = containers[gw.span_id]
        for _ in range(count):
            parent = max(rng.sample(pool, min(3, len(pool))), key=lambda w: w.depth) if rng.random() < 0.7 else rng.choice(pool)
            if parent.end_ns - parent.start_ns < 20_000:
                parent = gw
            s, e = sub_interval(parent)
            is_process = parent.depth >= 2 and rng.random() < 0.35
            if is_process:
                name = rng.choice(PROCESS_NAMES)
                source = rng.choices(["Ran", "HitLocally", "HitRemotely"], [3, 5, 2])[0]
                elapsed = (e - s) // 1_000_000
                meta: dict[str, Any] = {
                    "exit_code": 0,
                    "source": source,
                    "environment_type": "local",
                    "environment_name": "__local__",
                    "total_elapsed_ms": elapsed,
                    "saved_by_cache_ms": elapsed if source != "Ran" else 0,
                    "definition": json.dumps({"argv": ["./pex", "--", "run"], "env": {"PEX_ROOT": ".cache/pex_root"}}),
                }
                if rng.random() < 0.1:
                    meta["cpu_seconds"] = round(rng.uniform(0.01, 9.99), 3)  # a float: double_value
                if rng.random() < 0.1:
                    meta["addresses"] = [f"src/python/app/mod{rng.randint(0, 400)}.py"]  # a list: the plugin drops it
                    meta["platform"] = {"os": "linux", "arch": "x86_64"}  # a dict: the plugin drops it
                if rng.random() < 0.05:
                    meta["speculated"] = True  # a bool: bool_value
                w = WU(new_id(), name, "process", rng.choice(["INFO", "DEBUG"]), [parent.span_id], s, e,
                       description=rng.choice(procs).format(n=rng.randint(1, 300)), metadata=meta,
                       goal=gw.goal, depth=parent.depth + 1)
                processes.append(w)
            else:
                w = WU(new_id(), rng.choice(rules), "rule", rng.choice(["DEBUG", "DEBUG", "DEBUG", "INFO", "TRACE"]),
                       [parent.span_id], s, e, description=None, goal=gw.goal, depth=parent.depth + 1)
                if rng.random() < 0.03 and parent is not gw:
                    w.parent_ids.append(gw.span_id)  # a memoized node with a second parent
                if rng.random() < 0.01:
                    w.level = "WARN"
                pool.append(w)
            wus.append(w)

    if outcome == "failure":
        k = max(1, len(processes) // 100) if processes else 0
        for w in rng.sample(processes, min(k, len(processes))):
            w.level = "ERROR"
            w.metadata["exit_code"] = 1
            w.metadata["source"] = "Ran"
        errs = [w for w in wus if w.kind == "rule" and w.goal == goals[0]]
        if errs:
            rng.choice(errs).level = "ERROR"
        elif not processes:
            goal_wus[0].level = "ERROR"

    # Run counters (what Pants' get_metrics() returns), consistent with the processes.
    hit_local = sum(1 for w in processes if w.metadata.get("source") == "HitLocally")
    hit_remote = sum(1 for w in processes if w.metadata.get("source") == "HitRemotely")
    ran = [w for w in processes if w.metadata.get("source") == "Ran"]
    counters = {
        "local_cache_requests": len(processes),
        "local_cache_requests_cached": hit_local,
        "local_cache_requests_uncached": len(processes) - hit_local,
        "local_cache_total_time_saved_ms": sum(w.metadata["saved_by_cache_ms"] for w in processes
                                               if w.metadata.get("source") == "HitLocally"),
        "remote_cache_requests": len(processes) - hit_local,
        "remote_cache_requests_cached": hit_remote,
        "remote_cache_requests_uncached": len(processes) - hit_local - hit_remote,
        "remote_cache_total_time_saved_ms": sum(w.metadata["saved_by_cache_ms"] for w in processes
                                                if w.metadata.get("source") == "HitRemotely"),
        "remote_cache_write_attempts": len(ran),
        "remote_cache_write_successes": len(ran),
        "local_execution_requests": len(ran),
        "local_process_total_time_run_ms": sum(w.metadata["total_elapsed_ms"] for w in ran),
    }
    return wus, counters


def raw_workunit(w: WU, completed: bool) -> dict:
    """The dict form Pants' StreamingWorkunitHandler hands to WorkunitsCallbacks."""
    d: dict[str, Any] = {
        "name": w.name,
        "span_id": w.span_id,
        "parent_id": w.parent_ids[0] if w.parent_ids else None,
        "parent_ids": list(w.parent_ids),
        "level": w.level,
        "start_secs": w.start_ns // 1_000_000_000,
        "start_nanos": w.start_ns % 1_000_000_000,
        "metadata": {},
    }
    if w.description is not None:
        d["description"] = w.description
    if completed:
        dur = w.end_ns - w.start_ns
        d["duration_secs"] = dur // 1_000_000_000
        d["duration_nanos"] = dur % 1_000_000_000
        d["metadata"] = dict(w.metadata)
        d["artifacts"] = {}
        d["counters"] = {}
    return d


# ----------------------------------------------------------------------------------------------
# OTLP/JSON encoding of the same spans.
# ----------------------------------------------------------------------------------------------

def otlp_json_bytes(spans) -> bytes:
    """The spans as the real exporter encodes them (encode_spans -> ExportTraceServiceRequest),
    mapped to OTLP/JSON: proto3 JSON (lowerCamelCase names, enums as integers, 64-bit integers as
    strings) except that traceId/spanId/parentSpanId (spans and links) are hex, not base64."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    doc = MessageToDict(encode_spans(spans), use_integers_for_enums=True, preserving_proto_field_name=False)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in sp:
                        sp[k] = _hex_of_b64(sp[k])
                for link in sp.get("links", []):
                    for k in ("traceId", "spanId"):
                        if k in link:
                            link[k] = _hex_of_b64(link[k])
    return json.dumps(doc, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------------
# The driver.
# ----------------------------------------------------------------------------------------------

def resource_attrs_from_args(args) -> dict[str, str]:
    branch = args.branch or ("main" if args.ci else "feature/otel-ingest")
    attrs = {
        "host.name": args.host_name or ("ci-runner-07" if args.ci else socket.gethostname()),
        "user.name": args.user_name or ("ci" if args.ci else getpass.getuser()),
        "vcs.repository.ref.name": branch,  # deprecated semconv name (-> vcs.ref.head.name)
        "vcs.ref.head.name": branch,
        "vcs.ref.head.revision": args.revision or f"{random.getrandbits(160):040x}",
    }
    if args.ci:
        run_id = str(random.randint(10_000_000, 99_999_999))
        attrs.update({
            "cicd.pipeline.name": "buildstats-ci",
            "cicd.pipeline.run.id": run_id,
            "cicd.pipeline.run.url.full": f"https://ci.example.com/buildstats/runs/{run_id}",
            "cicd.pipeline.task.name": "pants lint check test",
            "cicd.pipeline.task.run.id": f"{run_id}-1",
        })
    for kv in args.resource_attr or []:
        k, _, v = kv.partition("=")
        attrs[k] = v
    return attrs


def otel_resource_attributes_value(attrs: dict[str, str]) -> str:
    """OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value, values percent-encoded."""
    return ",".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in attrs.items())


class _CollectAll:
    """A synchronous SpanProcessor on the plugin's TracerProvider: keeps every ended span."""

    def __init__(self) -> None:
        self.spans: list = []

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span) -> None:
        self.spans.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _BatchCollector:
    """Takes the place of the OTLP exporter inside the plugin's BatchSpanProcessor (driver
    batching): records the batches the processor formed, sends nothing."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def export(self, batch):
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.batch_sizes.append(len(batch))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Driver:
    def __init__(self, args) -> None:
        self.args = args
        self.failures: list[str] = []
        self.log = LogCollector()
        self.stubs = PantsStubFinder(_stub_overrides())
        self.captured: dict[str, Any] = {}

    # -- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        # The exporter reads OTEL_* env vars when an argument is missing; keep them out.
        for k in list(os.environ):
            if k.startswith("OTEL_"):
                del os.environ[k]
        sys.meta_path.insert(0, self.stubs)
        for name in ("shoalsoft", "opentelemetry", "urllib3"):
            lg = logging.getLogger(name)
            lg.setLevel(logging.DEBUG if self.args.verbose else logging.INFO)
            lg.addHandler(self.log)
        if self.args.verbose:
            logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        install_http_hook()

    def telemetry_options(self):
        a = self.args
        from shoalsoft.pants_opentelemetry_plugin.subsystem import OtelCompression, TracingExporterId

        return types.SimpleNamespace(
            enabled=True,
            exporter=TracingExporterId.OTLP,
            exporter_endpoint=a.endpoint,
            exporter_traces_endpoint=a.traces_endpoint,
            exporter_certificate_file=None,
            exporter_client_key_file=None,
            exporter_client_certificate_file=None,
            exporter_headers={"Authorization": f"Bearer {a.token}"},
            exporter_timeout=a.timeout,
            exporter_compression=OtelCompression.GZIP if a.gzip else OtelCompression.NONE,
            finish_timeout=a.finish_timeout,
            async_completion=False,
            parse_traceparent=True,
            json_file="dist/otel-json-trace.jsonl",
            trace_link_template=None,
        )

    def make_callback(self):
        """Run the plugin's own rule (register.py) to get its WorkunitsCallback."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from shoalsoft.pants_opentelemetry_plugin import opentelemetry_processor, register

        OTLPSpanExporter._MAX_RETRY_TIMEOUT = self.args.retry_max_timeout

        if self.args.resource == "pants":
            # Pants' built-in backend builds Resource.create({service.name}) with
            # OTEL_RESOURCE_ATTRIBUTES from the Pants env; the shoalsoft 0.5.0 plugin builds a plain
            # Resource({service.name}). `--resource pants` gives the plugin the former.
            value = otel_resource_attributes_value(self.resource_attrs)

            class _PantsBackendResource:
                def __new__(cls, attributes=None, schema_url=None):
                    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = value
                    try:
                        return Resource.create(attributes, schema_url)
                    finally:
                        del os.environ["OTEL_RESOURCE_ATTRIBUTES"]

            opentelemetry_processor.Resource = _PantsBackendResource

        real_get_processor = register.get_processor

        def get_processor(*pargs, **kwargs):
            proc = real_get_processor(*pargs, **kwargs)
            self.captured["otel_processor"] = proc
            bsp = proc._span_processor
            self.captured["exporter"] = bsp.span_exporter
            self.captured["otlp_parameters"] = kwargs.get("otlp_parameters")
            collect = _CollectAll()
            proc._tracer_provider.add_span_processor(collect)
            self.captured["collect"] = collect
            if self.args.batching == "driver":
                collector = _BatchCollector()
                bsp._batch_processor._exporter = collector
                self.captured["batch_collector"] = collector
            return proc

        register.get_processor = get_processor

        coro = register.telemetry_workunits_callback_factory_request(
            register.TelemetryWorkunitsCallbackFactoryRequest(),
            self.telemetry_options(),
            types.SimpleNamespace(pathlib_path=Path(tempfile.gettempdir())),
        )
        try:
            coro.send(None)
            raise RuntimeError("the plugin's rule awaited something the stubs do not provide")
        except StopIteration as stop:
            factory = stop.value
        return factory.callback_factory()

    # -- feeding ---------------------------------------------------------------------------------

    def feed(self, callback, wus: list[WU], counters: dict) -> None:
        """Pants' StreamingWorkunitHandler: every report interval, the workunits started since the
        last call (in start order, including those already completed) then those completed (in
        completion order); at the end one call with finished=True."""
        a = self.args
        ctx = _StreamingWorkunitContext(counters)
        t0 = min(w.start_ns for w in wus)
        tick = int(a.report_interval * 1e9)
        complete = [w for w in wus if not (a.no_root and w.kind == "root")]
        t_end = max(w.end_ns for w in wus)
        n_ticks = (t_end - t0) // tick + 1
        starts = sorted(wus, key=lambda w: w.start_ns)
        ends = sorted(complete, key=lambda w: w.end_ns)
        si = ei = 0
        self.captured["callback_calls"] = 0
        for k in range(n_ticks + 1):
            limit = t0 + (k + 1) * tick
            started = []
            while si < len(starts) and starts[si].start_ns < limit:
                started.append(raw_workunit(starts[si], completed=False))
                si += 1
            completed = []
            while ei < len(ends) and ends[ei].end_ns < limit:
                completed.append(raw_workunit(ends[ei], completed=True))
                ei += 1
            if started or completed:
                callback(started_workunits=tuple(started), completed_workunits=tuple(completed), context=ctx)
                self.captured["callback_calls"] += 1
                if a.tick_sleep:
                    time.sleep(a.tick_sleep)
        callback(started_workunits=(), completed_workunits=(), context=ctx, finished=True)
        self.captured["callback_calls"] += 1

    # -- exporting -------------------------------------------------------------------------------

    def export_batches(self, spans: list) -> list[dict]:
        a = self.args
        exporter = self.captured["exporter"]
        order = list(spans)
        if a.shuffle_seed is not None:
            random.Random(a.shuffle_seed).shuffle(order)
        chunks = [order[i:i + a.batch_size] for i in range(0, len(order), a.batch_size)]
        plan = []
        for i, c in enumerate(chunks):
            plan.append((i, c))
            if a.repeat_batches:
                plan.append((i, c))
        results = []
        for send, (i, chunk) in enumerate(plan):
            RECORDER.batch, RECORDER.send = i, send
            if a.encoding == "protobuf":
                res = exporter.export(chunk)
            else:
                # Same exporter (session, headers, gzip, retries); only the body and its type differ.
                sess = exporter._session
                old = sess.headers["Content-Type"]
                sess.headers["Content-Type"] = "application/json"
                try:
                    res = exporter._export_serialized_spans(otlp_json_bytes(chunk))
                finally:
                    sess.headers["Content-Type"] = old
            results.append({"batch": i, "spans": len(chunk), "exporter_result": res.name})
        RECORDER.batch = RECORDER.send = None
        self.captured["chunks"] = chunks
        return results

    def run_malformed(self) -> dict:
        """POST garbage as application/x-protobuf through the exporter's own session (once)."""
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from shoalsoft.pants_opentelemetry_plugin.opentelemetry_config import OtlpParameters

        a = self.args
        params = OtlpParameters(endpoint=a.endpoint, traces_endpoint=a.traces_endpoint, certificate_file=None,
                                client_key_file=None, client_certificate_file=None,
                                headers={"Authorization": f"Bearer {a.token}"}, timeout=a.timeout,
                                compression="gzip" if a.gzip else "none")
        exp = OTLPSpanExporter(endpoint=params.resolve_traces_endpoint(), headers=dict(params.headers),
                               timeout=params.timeout, compression=Compression(params.compression))
        garbage = b"\x0a\x64" + b"this is not an ExportTraceServiceRequest \xff\xfe\x00\x01"
        RECORDER.batch = None
        resp = exp._export(garbage)
        exp.shutdown()
        return {"sent_bytes": len(garbage), "status": resp.status_code, "request_id": resp.headers.get(REQUEST_ID_HEADER),
                "response": decode_response(resp)}

    # -- main --------------------------------------------------------------------------------------

    def run(self) -> dict:
        a = self.args
        self.setup()
        self.resource_attrs = resource_attrs_from_args(a)
        if a.traceparent:
            PANTS_ENV["TRACEPARENT"] = (a.traceparent if a.traceparent != "auto"
                                        else f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01")
        result: dict[str, Any] = {
            "ok": False,
            "mode": "malformed" if a.malformed else a.batching,
            "endpoint": a.endpoint,
            "encoding": a.encoding,
            "gzip": a.gzip,
            "client": {
                "plugin": f"{PLUGIN_PACKAGE}=={PLUGIN_VERSION}",
                "pants_stub_version": STUB_PANTS_VERSION,
                "pants_modules_stubbed": None,
                "resource_mode": a.resource,
            },
        }
        if a.malformed:
            from shoalsoft.pants_opentelemetry_plugin import opentelemetry_config  # noqa: F401 - real URL resolution

            result["malformed"] = self.run_malformed()
            return self.finish_result(result, [])

        rng = random.Random(a.seed)
        t0_ns = time.time_ns() - int((a.duration + 5) * 1e9)
        wus, counters = build_run(a.spans, a.goals.split(","), a.outcome, rng, t0_ns, a.duration)
        callback = self.make_callback()
        t_feed = time.monotonic()
        self.feed(callback, wus, counters)
        feed_ms = round((time.monotonic() - t_feed) * 1000, 1)
        otel_proc = self.captured["otel_processor"]
        elp = callback.processor._processor  # SingleThreadedProcessor -> ExceptionLoggingProcessor
        spans = list(self.captured["collect"].spans)
        result["client"]["pants_modules_stubbed"] = sorted(set(self.stubs.imported))
        result["processor"] = {
            "stack": "TelemetryWorkunitsCallback > SingleThreadedProcessor > ExceptionLoggingProcessor > OpenTelemetryProcessor "
                     "(TracerProvider + BatchSpanProcessor(max_queue_size=512, max_export_batch_size=100) + OTLPSpanExporter)",
            "callback_calls": self.captured["callback_calls"],
            "feed_ms": feed_ms,
            "workunits_generated": len(wus),
            "spans_ended": len(spans),
            "exceptions_swallowed": elp._exception_count,
            "plugin_counters": dict(otel_proc._counters),
            "export_url": self.captured["exporter"]._endpoint,
        }

        if a.batching == "driver":
            bc = self.captured["batch_collector"]
            result["processor"]["processor_batch_sizes"] = bc.batch_sizes
            result["processor"]["processor_queue_dropped"] = len(spans) - sum(bc.batch_sizes)
            root_spans = [s for s in spans if s.parent is None]
            send = spans
            export_results = self.export_batches(send)
            self.captured["exporter"].shutdown()
            result["batches"] = len(self.captured["chunks"])
            result["export_results"] = export_results
            for r in export_results:
                if r["exporter_result"] != "SUCCESS" and (a.expect_status is None or 200 <= a.expect_status < 300):
                    self.failures.append(f"batch {r['batch']}: the exporter returned {r['exporter_result']}")
            if len(spans) != len(wus) - (1 if a.no_root else 0):
                self.failures.append(f"processor: {len(spans)} spans ended for {len(wus)} workunits "
                                     f"(exceptions swallowed: {elp._exception_count})")
        else:
            send = spans
            result["batches"] = len([e for e in RECORDER.exchanges if e["status"] is not None])
            wire_ids = {s["span_id"] for e in RECORDER.exchanges for s in (e["_span_ids"] or [])}
            result["processor"]["spans_on_wire"] = len(wire_ids)
            result["processor"]["spans_lost"] = len(spans) - len(wire_ids)
            result["processor"]["wire_batch_sizes"] = [e["spans"] for e in RECORDER.exchanges]
            if len(wire_ids) != len(spans) and not a.allow_loss:
                self.failures.append(f"processor batching: {len(spans) - len(wire_ids)} of {len(spans)} spans never "
                                     "reached the wire (BatchSpanProcessor queue of 512 overflowed; try --tick-sleep)")
            root_spans = [s for s in spans if s.parent is None]

        from opentelemetry.trace.span import format_span_id, format_trace_id

        root = root_spans[0] if root_spans else None
        result["trace_id"] = format_trace_id(otel_proc._trace_id) if otel_proc._trace_id else None
        result["root_span_id"] = format_span_id(root.context.span_id) if root else None
        result["span_count"] = len(send)
        result["counters"] = json.loads(root.attributes["pantsbuild.metrics-v0"]) if root else None
        result["resource"] = dict(spans[0].resource.attributes) if spans else None
        result["resource_intended"] = self.resource_attrs if a.resource == "pants" else {"service.name": "pantsbuild"}
        result["traceparent"] = PANTS_ENV.get("TRACEPARENT")
        result["outcome"] = a.outcome
        result["goals"] = [{"goal": w.goal, "span_name": w.name, "workunit_id": w.span_id, "level": w.level,
                            "description_not_exported": w.description} for w in wus if w.kind == "goal"]
        result["error_workunit_ids"] = [w.span_id for w in wus if w.level == "ERROR"]
        if root:
            result["root_span"] = {
                "name": root.name,
                "span_id": format_span_id(root.context.span_id),
                "start_time_unix_nano": root.start_time,
                "end_time_unix_nano": root.end_time,
                "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in root.attributes.items()},
                "links": [{"trace_id": format_trace_id(l.context.trace_id), "span_id": format_span_id(l.context.span_id)}
                          for l in root.links],
            }
        sample = next((s for s in spans if s.name in PROCESS_NAMES and s.attributes.get("pantsbuild.workunit.metadata.cpu_seconds")), None) \
            or next((s for s in spans if s.name in PROCESS_NAMES), None)
        if sample:
            result["sample_span"] = json.loads(sample.to_json())
        result["workunit_ids"] = [s.attributes["pantsbuild.workunit.span_id"] for s in send]
        return self.finish_result(result, send)

    def finish_result(self, result: dict, spans: list) -> dict:
        a = self.args
        expect = a.expect_status if a.expect_status is not None else (400 if a.malformed else None)
        exchanges = []
        root_id = result.get("root_span_id")
        retried = 0
        for n, ex in enumerate(RECORDER.exchanges, 1):
            row = {k: v for k, v in ex.items() if not k.startswith("_")}
            row["contains_root"] = bool(root_id) and any(s["span_id"] == root_id for s in (ex["_span_ids"] or []))
            # The exporter retries 408/5xx (and a connection error once) by itself: in driver batching
            # an exchange followed by another one of the same export call was retried.
            nxt = RECORDER.exchanges[n] if n < len(RECORDER.exchanges) else None
            row["retried"] = (a.batching == "driver" and not a.malformed and nxt is not None
                              and nxt["send"] == ex["send"])
            exchanges.append(row)
            where = f"request {n} (batch {ex['batch']})"
            if ex["status"] is None:
                if not row["retried"]:
                    self.failures.append(f"{where}: {ex.get('error')}")
            elif expect is not None:
                if ex["status"] != expect:
                    self.failures.append(f"{where}: expected status {expect}, got {ex['status']}")
            elif row["retried"]:
                retried += 1
            elif not 200 <= ex["status"] < 300:
                self.failures.append(f"{where}: status {ex['status']}: {json.dumps(ex['response'])[:200]}")
            if ex["status"] is not None and not ex.get("request_id") and a.require_request_id:
                self.failures.append(f"{where}: no {REQUEST_ID_HEADER} header")
        result["retried_requests"] = retried
        if not a.malformed and not RECORDER.exchanges:
            self.failures.append("no HTTP request was sent")
        wire_ids = {s["span_id"] for e in RECORDER.exchanges for s in (e["_span_ids"] or [])}
        if not a.malformed:
            result["spans_on_wire_distinct"] = len(wire_ids)
            if a.batching == "driver" and len(wire_ids) != len(spans):
                self.failures.append(f"wire: {len(wire_ids)} distinct spans sent, {len(spans)} expected")
        # driver batching: batch numbers; processor batching: request numbers (0-based)
        result["root_batches"] = sorted({(r["batch"] if r["batch"] is not None else i)
                                         for i, r in enumerate(exchanges) if r["contains_root"]})
        result["requests"] = len(exchanges)
        result["exchanges"] = exchanges
        if exchanges:
            first = exchanges[0]
            result["wire"] = {"url": first["url"], "path": first["path"], **first["request"]}
        result["rejected_spans_total"] = sum((e.get("partial_success") or {}).get("rejected_spans", 0) for e in exchanges)
        result["client_log"] = self.log.lines[-200:]
        result["failures"] = self.failures
        result["ok"] = not self.failures
        return result


def main() -> int:
    _reexec_in_venv()
    p = argparse.ArgumentParser(description="Emit a Pants-shaped trace through the real Pants OTel span processor "
                                            "and the real OTLP/HTTP exporter.")
    p.add_argument("--endpoint", required=True,
                   help="[shoalsoft-opentelemetry].exporter_endpoint, e.g. http://127.0.0.1:4318 "
                        "(the plugin posts to <endpoint>//v1/traces)")
    p.add_argument("--traces-endpoint", default=None,
                   help="[shoalsoft-opentelemetry].exporter_traces_endpoint: the full URL, used as is")
    p.add_argument("--token", required=True, help="sent as `Authorization: Bearer TOKEN` (exporter_headers)")
    p.add_argument("--spans", type=int, default=3000, help="workunits in the run (root and goals included)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--gzip", action="store_true", help="exporter_compression = gzip")
    p.add_argument("--encoding", choices=["protobuf", "json"], default="protobuf")
    p.add_argument("--shuffle-seed", type=int, default=None, help="shuffle the spans (so batch contents and order)")
    p.add_argument("--repeat-batches", action="store_true", help="send every batch twice in a row")
    p.add_argument("--no-root", action="store_true", help="the root workunit never completes (run never finished)")
    p.add_argument("--outcome", choices=["success", "failure"], default="success")
    p.add_argument("--ci", action="store_true", help="CI resource attributes (cicd.pipeline.*)")
    p.add_argument("--goals", default="lint,check,test", help=f"comma-separated, from {','.join(GOALS)}")
    p.add_argument("--out", help="write the JSON result here (default: stdout)")
    p.add_argument("--expect-status", type=int, default=None, help="expect this status on every request")
    p.add_argument("--malformed", action="store_true", help="POST garbage as application/x-protobuf (expects 400)")
    p.add_argument("--batching", choices=["driver", "processor"], default="driver",
                   help="driver: collect the spans, export them in --batch-size chunks with the real exporter; "
                        "processor: let the plugin's BatchSpanProcessor send (its own batches, order and drops)")
    p.add_argument("--resource", choices=["pants", "shoalsoft"], default="pants",
                   help="pants: Resource.create() with OTEL_RESOURCE_ATTRIBUTES (Pants' built-in backend); "
                        "shoalsoft: what the 0.5.0 plugin builds (service.name only)")
    p.add_argument("--resource-attr", action="append", metavar="K=V", help="extra resource attribute")
    p.add_argument("--host-name")
    p.add_argument("--user-name")
    p.add_argument("--branch")
    p.add_argument("--revision")
    p.add_argument("--traceparent", help="TRACEPARENT in the Pants env ('auto' = random): the root span gets a link")
    p.add_argument("--seed", type=int, default=None, help="seed of the synthetic run")
    p.add_argument("--duration", type=float, default=90.0, help="virtual run length, seconds")
    p.add_argument("--report-interval", type=float, default=1.0, help="virtual seconds per callback call")
    p.add_argument("--tick-sleep", type=float, default=0.0, help="real seconds slept after each callback call")
    p.add_argument("--allow-loss", action="store_true", help="processor batching: spans lost are not a failure")
    p.add_argument("--timeout", type=int, default=10, help="exporter_timeout seconds (exporter default 10)")
    p.add_argument("--finish-timeout", type=float, default=2.0, help="finish_timeout (plugin default 2.0)")
    p.add_argument("--retry-max-timeout", type=int, default=64,
                   help="OTLPSpanExporter._MAX_RETRY_TIMEOUT (real: 64 -> 6 attempts, 63 s of backoff)")
    p.add_argument("--no-require-request-id", dest="require_request_id", action="store_false")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    for g in args.goals.split(","):
        if g not in GOALS:
            p.error(f"unknown goal {g!r}")
    if args.batching == "processor" and (args.encoding != "protobuf" or args.shuffle_seed is not None
                                         or args.repeat_batches or args.batch_size != 100):
        p.error("--batching processor sends what the processor sends: no --encoding json, --shuffle-seed, "
                "--repeat-batches or --batch-size")

    drv = Driver(args)
    result = drv.run()
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    for line in result["failures"]:
        print(f"FAIL {line}", file=sys.stderr)
    print(f"otel-client: {'ok' if result['ok'] else 'FAILED'}: {result.get('span_count', 0)} spans, "
          f"{result.get('batches', 0)} batches, {result['requests']} requests, trace {result.get('trace_id')}",
          file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
