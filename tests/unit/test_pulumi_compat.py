"""Canary for `pulumi_mlops._pulumi_compat`, the one module that touches Pulumi SDK internals.

Two kinds of checks, each failing with the shim's name and the installed Pulumi version:

- every internal a shim relies on still exists and still accepts the call the shim makes
  (``inspect.signature(...).bind`` with the shim's arguments);
- every shim, run once for real: a small program under the mock runtime, as `mlops render` runs one.

When a Pulumi release breaks one, fix the shim (and its "Checked against" note) here, not in the
modules that use it; only then widen the ``pulumi`` pin in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import importlib
import inspect
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pulumi
import pytest

from pulumi_mlops import _pulumi_compat as compat

PULUMI = metadata.version("pulumi")


def broken(shim: str, what: str) -> str:
    """The failure message: which shim, which Pulumi, what changed, what to do."""
    return (f"_pulumi_compat.{shim} no longer works with pulumi {PULUMI}: {what}. Update the shim "
            "(and its 'Checked against' note) before widening the pulumi pin in pyproject.toml.")


@dataclass(frozen=True)
class Internal:
    """One SDK internal a shim relies on, and the call the shim makes with it.

    Attributes:
        shim: The `_pulumi_compat` name that uses it.
        module: Where it lives.
        name: Its (dotted) attribute path in ``module``.
        kind: ``callable`` (``args``/``kwargs`` are the call the shim makes), ``coroutine``
            (an ``async def`` called that way), ``class``, ``contextvar`` or ``str``.
        args: How many positional arguments the shim passes.
        kwargs: The keyword arguments the shim passes.
    """

    shim: str
    module: str
    name: str
    kind: str = "callable"
    args: int = 0
    kwargs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


INTERNALS = [
    Internal("ensure_event_loop", "pulumi.runtime.sync_await", "_ensure_event_loop"),
    Internal("forget_root_stack", "pulumi.runtime.settings", "ROOT", kind="contextvar"),
    Internal("set_stack_config", "pulumi.runtime.config", "set_all_config", args=2),
    Internal("forget_pending_work", "pulumi.runtime.settings", "SETTINGS.rpc_manager.clear"),
    Internal("forget_pending_work", "pulumi.runtime.settings", "SETTINGS.outputs.clear"),
    Internal("run_in_new_stack", "pulumi.runtime.stack", "run_in_stack", kind="coroutine",
             args=1),
    Internal("run_in_new_stack", "pulumi.runtime.sync_await", "_sync_await", args=1),
    Internal("RecordingMonitor", "pulumi.runtime.mocks", "MockMonitor", args=1),
    # self, request: the handlers RecordingMonitor overrides and calls through super().
    Internal("RecordingMonitor", "pulumi.runtime.mocks", "MockMonitor.RegisterResource", args=2),
    Internal("RecordingMonitor", "pulumi.runtime.mocks", "MockMonitor.RegisterResourceOutputs",
             args=2),
    Internal("RecordingMonitor", "pulumi.runtime.rpc", "deserialize_properties", args=1),
    # Public, but its monitor= only takes a MockMonitor: the harness passes a RecordingMonitor.
    Internal("RecordingMonitor", "pulumi.runtime", "set_mocks", args=1,
             kwargs=("project", "stack", "preview", "monitor", "logger")),
    Internal("raw_stack_config", "pulumi.runtime.config", "CONFIG", kind="contextvar"),
    Internal("raw_stack_config", "pulumi.runtime.config", "get_config_env"),
    Internal("is_secret_config", "pulumi.runtime.config", "is_config_secret", args=1),
    Internal("unknown_output", "pulumi", "Output", args=4),
    Internal("is_secret_envelope", "pulumi.runtime.rpc", "is_rpc_secret", args=1),
    Internal("unwrap_secret_envelope", "pulumi.runtime.rpc", "unwrap_rpc_secret", args=1),
    Internal("is_unknown", "pulumi.output", "Unknown", kind="class"),
    Internal("is_unknown", "pulumi.runtime.rpc", "UNKNOWN", kind="str"),
    Internal("UNKNOWN_PROPERTY", "pulumi.runtime.rpc", "UNKNOWN", kind="str"),
]


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda i: f"{i.shim}-{i.name}")
def test_the_internal_a_shim_relies_on_is_still_there(internal: Internal) -> None:
    found: Any = importlib.import_module(internal.module)
    for part in internal.name.split("."):
        if not hasattr(found, part):
            pytest.fail(broken(internal.shim, f"`{internal}` is gone"))
        found = getattr(found, part)

    if internal.kind == "contextvar":
        assert isinstance(found, ContextVar), broken(
            internal.shim, f"`{internal}` is a {type(found).__name__}, not a ContextVar")
    elif internal.kind == "str":
        assert isinstance(found, str), broken(
            internal.shim, f"`{internal}` is a {type(found).__name__}, not a str")
    elif internal.kind == "class":
        assert isinstance(found, type), broken(internal.shim, f"`{internal}` is not a class")
    else:
        assert callable(found), broken(internal.shim, f"`{internal}` is not callable")
        if internal.kind == "coroutine":
            assert inspect.iscoroutinefunction(found), broken(
                internal.shim, f"`{internal}` is no longer an `async def`")
        try:
            signature = inspect.signature(found)
        except ValueError:  # a builtin such as set.clear has none: callable is what we need
            return
        call = [object()] * internal.args
        try:
            signature.bind(*call, **{name: object() for name in internal.kwargs})
        except TypeError as err:
            shape = ", ".join(["_"] * internal.args + [f"{k}=_" for k in internal.kwargs])
            pytest.fail(broken(internal.shim, f"`{internal}{signature}` no longer accepts the "
                                              f"call `({shape})` ({err})"))


def test_ensure_event_loop_gives_a_thread_without_one_a_current_loop() -> None:
    seen: dict[str, Any] = {}

    def in_thread() -> None:  # a fresh thread has no current event loop
        loop = compat.ensure_event_loop()
        seen["same"] = loop is asyncio.get_event_loop()
        seen["open"] = not loop.is_closed()
        loop.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == {"same": True, "open": True}, broken(
        "ensure_event_loop", f"it did not set an open current loop ({seen})")


class _Mocks(pulumi.runtime.Mocks):
    """Every resource also gets ``computed``, a value only the engine would know."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", {**args.inputs, "computed": compat.UNKNOWN_PROPERTY}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


@dataclass
class _Run:
    registrations: list[compat.ResourceRegistration]
    stack_outputs: dict[str, Any]
    seen: dict[str, Any]


def _run_under_mocks() -> _Run:
    """A small program, run through every shim the way `harness.record` runs one."""
    run = _Run([], {}, {})

    def program() -> None:
        run.seen["config"] = compat.raw_stack_config()
        run.seen["password is secret"] = compat.is_secret_config("canary:password")
        run.seen["name is secret"] = compat.is_secret_config("canary:name")
        unknown = compat.unknown_output(secret=True)
        run.seen["unknown"] = unknown
        unknown.apply(lambda value: run.seen.setdefault("applied to", value))
        thing = pulumi.CustomResource(
            "canary:index:Thing", "thing",
            {"password": pulumi.Output.secret("s3cret"), "computed": None},
            opts=pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create="5m")))
        pulumi.CustomResource("canary:index:Other", "other",
                              {"from_thing": thing.computed})  # type: ignore[attr-defined]
        pulumi.export("greeting", "hello")

    def in_context() -> None:
        compat.ensure_event_loop()
        compat.forget_root_stack()
        mocks = _Mocks()
        monitor = compat.RecordingMonitor(mocks, on_register=run.registrations.append,
                                          on_stack_outputs=run.stack_outputs.update)
        pulumi.runtime.set_mocks(mocks, project="canary", stack="test", preview=True,
                                 monitor=monitor)
        compat.forget_root_stack()
        compat.set_stack_config({"canary:name": "canary", "canary:password": "hunter2"},
                                ["canary:password"])
        compat.forget_pending_work()
        compat.run_in_new_stack(program)
        run.seen["unknown is secret"] = compat.ensure_event_loop().run_until_complete(
            run.seen["unknown"].is_secret())

    contextvars.copy_context().run(in_context)
    return run


def test_the_shims_run_a_program_under_mocks() -> None:
    try:
        run = _run_under_mocks()
    except Exception as err:
        pytest.fail(broken("run_in_new_stack",
                           f"a program under mocks failed: {type(err).__name__}: {err}"))
    seen = run.seen

    config = {k: v for k, v in seen["config"].items() if k.startswith("canary:")}
    assert config == {"canary:name": "canary", "canary:password": "hunter2"}, broken(
        "set_stack_config/raw_stack_config", f"the program read {config}")
    assert (seen["password is secret"], seen["name is secret"]) == (True, False), broken(
        "is_secret_config", "secret keys are not told apart from plain ones")

    assert "applied to" not in seen, broken(
        "unknown_output", f"an apply ran on it, with {seen['applied to']!r}")
    assert seen["unknown is secret"] is True, broken("unknown_output", "it is not a secret")

    by_name = {r.name: r for r in run.registrations}
    assert sorted(by_name) == ["other", "thing"], broken(
        "RecordingMonitor", f"it reported {sorted(by_name)}, not the program's two resources")
    thing, other = by_name["thing"], by_name["other"]
    assert thing.type == "canary:index:Thing" and thing.custom, broken(
        "RecordingMonitor", f"type/custom read wrong: {thing}")
    assert thing.parent.endswith(f"{compat.STACK_TYPE}::canary-test"), broken(
        "RecordingMonitor/forget_root_stack", f"not parented to the program's stack: {thing}")
    # The mock monitor makes URNs from the runtime's settings, which set_mocks stored in the
    # harness's copied context: Pulumi must carry that context into the threads running monitor
    # calls (3.255 did not, and every URN said "project" and "stack").
    expected_urn = f"urn:pulumi:test::canary::{compat.STACK_TYPE}$canary:index:Thing::thing"
    assert thing.urn == expected_urn, broken(
        "RecordingMonitor", f"the monitor did not see set_mocks' project and stack: {thing.urn}")
    assert dict(thing.custom_timeouts) == {"create": "5m"}, broken(
        "RecordingMonitor", f"custom timeouts read wrong: {thing.custom_timeouts}")
    assert thing.urn in other.dependencies, broken(
        "RecordingMonitor", f"dependencies read wrong: {other.dependencies}")

    password = thing.inputs["password"]
    assert compat.is_secret_envelope(password), broken(
        "is_secret_envelope", f"a secret input arrived as {password!r}")
    assert compat.unwrap_secret_envelope(password) == "s3cret", broken(
        "unwrap_secret_envelope", f"unwrapped {password!r} wrong")
    assert compat.unwrap_secret_envelope("plain") == "plain", broken(
        "unwrap_secret_envelope", "it changed a value that is not a secret")

    assert compat.is_unknown(other.inputs["from_thing"]), broken(
        "UNKNOWN_PROPERTY/is_unknown",
        f"an engine-computed input arrived as {other.inputs['from_thing']!r}")
    assert compat.is_unknown(pulumi.UNKNOWN), broken("is_unknown", "pulumi.UNKNOWN is not")
    assert not compat.is_unknown("known"), broken("is_unknown", "a plain string is unknown")

    assert run.stack_outputs == {"greeting": "hello"}, broken(
        "RecordingMonitor", f"stack outputs read wrong: {run.stack_outputs}")


def test_forget_pending_work_drops_what_a_failed_run_left() -> None:
    outputs = pulumi.runtime.settings.SETTINGS  # where the runtime tracks pending outputs

    def in_context() -> tuple[int, int]:
        loop = compat.ensure_event_loop()
        pulumi.runtime.set_mocks(_Mocks(), project="canary", stack="test")
        pending = compat.unknown_output(secret=False)  # tracked until the loop runs it
        before = len(outputs.outputs)
        compat.forget_pending_work()
        after = len(outputs.outputs)
        loop.run_until_complete(pending.is_secret())  # let it finish, untracked
        return before, after

    before, after = contextvars.copy_context().run(in_context)
    assert (before > 0, after) == (True, 0), broken(
        "forget_pending_work", f"{before} pending outputs before, {after} after")


# What the package may use of `pulumi.runtime` outside the compatibility module: Pulumi's
# documented testing API.
_PUBLIC_RUNTIME = frozenset({"set_mocks", "Mocks", "MockResourceArgs", "MockCallArgs",
                             "is_dry_run"})


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def test_only_the_compatibility_module_touches_pulumi_internals() -> None:
    package = Path(compat.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_pulumi_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(package)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    ("pulumi.runtime", "pulumi.output")):
                found.append(f"{where} imports from {node.module}")
            elif isinstance(node, ast.Attribute):
                name = _dotted(node) or ""
                internal = name.startswith("pulumi.") and (
                    any(p.startswith("_") for p in name.split(".")[1:])
                    or (name.startswith("pulumi.runtime.")
                        and name.split(".")[2] not in _PUBLIC_RUNTIME))
                if internal:
                    found.append(f"{where} uses {name}")
    assert found == [], "Pulumi SDK internals outside _pulumi_compat.py: " + "; ".join(found)
