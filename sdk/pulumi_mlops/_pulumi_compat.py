"""The one place pulumi-mlops touches the Pulumi Python SDK's internals.

`mlops plan`, `mlops render` and the tests run a program under Pulumi's mock runtime
(`pulumi.runtime.set_mocks`) and record what it declares (`pulumi_mlops.render.harness`). The
public testing API covers mocks, but not running a whole program as a stack outside the
language host, recording the raw registrations, feeding it stack config, or reading the wire
envelopes its inputs arrive in. Those need parts of the SDK that Pulumi does not document and
may change in any release: each is wrapped here, once, with what it wraps, why we need it and the
Pulumi versions it was checked against. ``tests/unit/test_pulumi_compat.py`` (the canary) fails
naming the shim and the Pulumi version when one of them disappears or changes shape; it, not a
guess, decides when the ``pulumi`` pin in ``pyproject.toml`` may widen.

Public API (`pulumi.runtime.set_mocks`, `pulumi.runtime.Mocks`, `pulumi.Output`,
`pulumi.get_project`, ...) is used directly by the modules that need it, not through here.

One more thing the harness relies on is behaviour, not a name: it runs each recording in a copied
`contextvars` context, and `pulumi.runtime.set_mocks` keeps its settings (project, stack, monitor)
in context variables; Pulumi carries them into the threads that run monitor calls only since
3.260 (before, every URN said ``project`` and ``stack``). The canary checks that too.

Checked against: pulumi 3.260.0 and 3.272.0 (the whole unit suite), 3.266.0 and 3.271.0 (the
canary and the render, plan, CLI, stack-config and documented-program tests), 3.261.0 and 3.263.0
(the canary). The canary fails on 3.259.0, 3.255.0, 3.231.0 and 3.200.0 (the context, above).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.output import Unknown
from pulumi.runtime import config as _config
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

__all__ = [
    "STACK_TYPE",
    "UNKNOWN_PROPERTY",
    "RecordingMonitor",
    "ResourceRegistration",
    "ensure_event_loop",
    "forget_pending_work",
    "forget_root_stack",
    "is_secret_config",
    "is_secret_envelope",
    "is_unknown",
    "raw_stack_config",
    "run_in_new_stack",
    "set_stack_config",
    "unknown_output",
    "unwrap_secret_envelope",
]

STACK_TYPE = "pulumi:pulumi:Stack"
"""Type token of a program's root stack resource (documented in Pulumi's URN format)."""

UNKNOWN_PROPERTY: str = rpc.UNKNOWN
"""The wire value of a property that is not known yet (``[computed]`` in a preview).

Wraps `pulumi.runtime.rpc.UNKNOWN`. A mock's resource state uses it to say "the engine would
compute this", and recorded inputs carry it where a value is unknown. Checked against pulumi
3.260-3.272.
"""


# --- Running a program as a stack under mocks -------------------------------------------------


def ensure_event_loop() -> asyncio.AbstractEventLoop:
    """The current thread's event loop, created and set if there is none.

    Wraps `pulumi.runtime.sync_await._ensure_event_loop` (private). Why: the SDK creates its
    futures on ``asyncio.get_event_loop()``, and an ``asyncio.run()`` elsewhere in the process
    (the CLI, a test) leaves no current loop; using the SDK's own helper keeps us on the loop it
    will use. Checked against pulumi 3.260-3.272.
    """
    loop: asyncio.AbstractEventLoop = _ensure_event_loop()  # type: ignore[no-untyped-call]
    return loop


def forget_root_stack() -> None:
    """Unset the current root stack resource, so the next stack declared becomes the root.

    Wraps `pulumi.runtime.settings.ROOT` (a module-level ContextVar, not exported;
    `settings.set_root_resource` does not accept None). Why: `pulumi.runtime.set_mocks` declares
    a root stack of its own and a previous recording may have left one; the recorded program's
    stack must be the root, so that its resources are parented to it and its exports recorded.
    Checked against pulumi 3.260-3.272.
    """
    settings.ROOT.set(None)


def set_stack_config(config: Mapping[str, str], secret_keys: Iterable[str]) -> None:
    """Replace the stack config the program reads, as the engine would pass it.

    Args:
        config: ``{"project:key": "value"}``, objects as JSON.
        secret_keys: The keys whose values are secrets.

    Wraps `pulumi.runtime.config.set_all_config` (runtime plumbing: the module says "Please use
    pulumi.Config instead", and `pulumi.Config` only reads). Why: under mocks there is no
    engine to pass the stack's config, and `pulumi.Config` in the program must see it.
    Checked against pulumi 3.260-3.272.
    """
    _config.set_all_config(dict(config), list(secret_keys))


def forget_pending_work() -> None:
    """Drop RPCs and outputs a previous (possibly failed) run left pending.

    Wraps ``pulumi.runtime.settings.SETTINGS.rpc_manager.clear()`` and
    ``SETTINGS.outputs.clear()`` (runtime state, not exported). Why: the runtime waits for every
    pending RPC and output before a stack finishes; a recording that raised leaves its failed
    futures there, and the next recording in the same process would wait on (and re-raise)
    them. Checked against pulumi 3.260-3.272.
    """
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()


def run_in_new_stack(program: Callable[[], Any]) -> None:
    """Run ``program`` inside a new root stack resource and wait until it has finished.

    Wraps `pulumi.runtime.stack.run_in_stack` ("meant for internal runtime use only": it is what
    the language host calls) and `pulumi.runtime.sync_await._sync_await` (private). Why: the mock
    runtime alone runs no program; this is how the SDK's entry point runs ``__main__`` as a
    stack, so ``pulumi.export`` and waiting for every output behave as under ``pulumi up``.
    Checked against pulumi 3.260-3.272.

    Raises:
        Whatever the program raises.
    """
    _sync_await(run_in_stack(program))


@dataclass(frozen=True)
class ResourceRegistration:
    """One resource registration as the engine (here, the mock monitor) received it.

    Attributes:
        type: Type token.
        name: Logical name.
        urn: The URN the monitor gave it.
        parent: The parent's URN.
        inputs: Deserialized inputs, secrets still in their envelope (`is_secret_envelope`).
        custom: Whether it is a custom (provider) resource.
        custom_timeouts: The ``custom_timeouts`` that were set (``create``/``update``/``delete``).
        dependencies: URNs it depends on.
        outputs: The state the mocks computed for it (what the engine would hand back), secrets
            in their envelope.
        delete_before_replace: Whether the program asked to delete it before creating its
            replacement.
        replace_on_changes: Input paths whose change replaces it.
        ignore_changes: Input paths whose change is ignored.
        retain_on_delete: Whether deleting it leaves the real object in place.
        protect: Whether it is protected from deletion.
        provider: The provider reference it was registered with ("" for the default one).
    """

    type: str
    name: str
    urn: str
    parent: str
    inputs: Mapping[str, Any]
    custom: bool
    custom_timeouts: Mapping[str, str] = field(default_factory=dict)
    dependencies: tuple[str, ...] = ()
    outputs: Mapping[str, Any] = field(default_factory=dict)
    delete_before_replace: bool = False
    replace_on_changes: tuple[str, ...] = ()
    ignore_changes: tuple[str, ...] = ()
    retain_on_delete: bool = False
    protect: bool = False
    provider: str = ""


class RecordingMonitor(MockMonitor):
    """A mock resource monitor that reports every registration and the stack's outputs.

    Pass it to ``pulumi.runtime.set_mocks(..., monitor=...)``.

    Wraps `pulumi.runtime.mocks.MockMonitor` (not exported; ``set_mocks`` takes it but does not
    document it), overriding its gRPC handlers ``RegisterResource`` and
    ``RegisterResourceOutputs``, and reads their protobuf requests (``type``, ``name``,
    ``parent``, ``object``, ``custom``, ``customTimeouts``, ``dependencies``,
    ``deleteBeforeReplace``, ``replaceOnChanges``, ``ignoreChanges``, ``retainOnDelete``,
    ``protect``, ``provider``; ``urn``, ``outputs``) and the registration's response (``urn``,
    ``object``) with `pulumi.runtime.rpc.deserialize_properties`. Why: `pulumi.runtime.Mocks`
    sees a resource's inputs but not its parent, custom timeouts or dependencies, nor the
    stack's outputs, and a render shows all of them; an apply harness needs the state the
    mocks computed to map it to the real one. The URNs it hands out come from the
    runtime's settings, which it sees only when Pulumi carries the caller's context into the
    threads that run monitor calls (3.260 and later). Checked against pulumi 3.260-3.272.

    Args:
        mocks: The mocks that compute resources' state.
        on_register: Called with each non-stack registration, after the mocks have run.
        on_stack_outputs: Called with the root stack's outputs when they are registered.
    """

    def __init__(self, mocks: pulumi.runtime.Mocks,
                 on_register: Callable[[ResourceRegistration], None],
                 on_stack_outputs: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(mocks)
        self._on_register = on_register
        self._on_stack_outputs = on_stack_outputs
        self._stack_urn = ""

    def RegisterResource(self, request: Any) -> Any:
        """Register as `MockMonitor` does, then report the registration."""
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type == STACK_TYPE:
            self._stack_urn = response.urn
        else:
            self._on_register(ResourceRegistration(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent,
                inputs=rpc.deserialize_properties(request.object),
                custom=bool(request.custom),
                custom_timeouts={
                    op: getattr(request.customTimeouts, op)
                    for op in ("create", "update", "delete")
                    if getattr(request.customTimeouts, op)
                },
                dependencies=tuple(request.dependencies),
                outputs=rpc.deserialize_properties(response.object),
                delete_before_replace=bool(request.deleteBeforeReplace),
                replace_on_changes=tuple(request.replaceOnChanges),
                ignore_changes=tuple(request.ignoreChanges),
                retain_on_delete=bool(request.retainOnDelete),
                protect=bool(request.protect),
                provider=request.provider,
            ))
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        """Report the root stack's outputs, then register them as `MockMonitor` does."""
        if request.urn == self._stack_urn:
            self._on_stack_outputs(rpc.deserialize_properties(request.outputs))
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


# --- Stack config, as the program reads it ------------------------------------------------------


def raw_stack_config() -> dict[str, Any]:
    """Every stack config value: ``{"project:key": value}``, objects still JSON-encoded.

    What was set (`set_stack_config`, or by the language host) wins over the ``PULUMI_CONFIG``
    environment variable.

    Wraps `pulumi.runtime.config.CONFIG` (a ContextVar, not exported) and
    `pulumi.runtime.config.get_config_env` (runtime plumbing). Why: `pulumi.Config` reads one
    key at a time and cannot list keys, and `load_config` must reject keys the model does not
    know (a typo must not fall back to a default). Checked against pulumi 3.260-3.272.
    """
    return {**_config.get_config_env(), **_config.CONFIG.get()}


def is_secret_config(key: str) -> bool:
    """Whether the stack config value ``key`` (``project:key``) is a secret.

    Wraps `pulumi.runtime.config.is_config_secret` (runtime plumbing). Why: keys listed with
    `raw_stack_config` must keep their secrecy, as `pulumi.Config.get_secret` would; the public
    API cannot ask without reading the value through a typed getter. Checked against pulumi
    3.260-3.272.
    """
    return _config.is_config_secret(key)


def unknown_output(*, secret: bool) -> pulumi.Output[Any]:
    """An output whose value is not known, as an engine-computed value is in a preview.

    Wraps the `pulumi.Output` constructor, ``Output(resources, future, is_known, is_secret)``:
    the class is public but building one from raw futures is runtime plumbing (the Python SDK
    has no public counterpart of Node's ``pulumi.unknown``). Why: an encrypted stack config value
    cannot be decrypted under mocks; the program must see it as an unknown secret, so that a
    render shows ``[secret]`` and no apply runs on a made-up value. Checked against pulumi
    3.260-3.272.
    """
    loop = asyncio.get_event_loop()
    value, known, is_secret = loop.create_future(), loop.create_future(), loop.create_future()
    value.set_result(None)
    known.set_result(False)
    is_secret.set_result(secret)
    return pulumi.Output(set(), value, known, is_secret)


# --- Reading recorded property values -----------------------------------------------------------


def is_secret_envelope(value: Any) -> bool:
    """Whether ``value`` is a secret in Pulumi's wire envelope.

    Wraps `pulumi.runtime.rpc.is_rpc_secret` (serialization internals). Why: recorded inputs are
    what the monitor received, where a secret is ``{<signature>: <secret signature>, "value":
    ...}``; a render must redact it and a test must be able to tell it is still secret.
    Checked against pulumi 3.260-3.272.
    """
    return rpc.is_rpc_secret(value)


def unwrap_secret_envelope(value: Any) -> Any:
    """The value inside a secret envelope (``value`` unchanged when it is not one).

    Wraps `pulumi.runtime.rpc.unwrap_rpc_secret` (serialization internals); see
    `is_secret_envelope` for why. Checked against pulumi 3.260-3.272.
    """
    return rpc.unwrap_rpc_secret(value)


def is_unknown(value: Any) -> bool:
    """Whether a recorded property value is unknown (computed by the engine later).

    Wraps `pulumi.output.Unknown` (not exported: only its instance `pulumi.UNKNOWN` is) and
    `pulumi.runtime.rpc.UNKNOWN`, the two forms an unknown takes after deserialization. Why: a
    render shows them as ``[computed]``. Checked against pulumi 3.260-3.272.
    """
    return isinstance(value, Unknown) or value == rpc.UNKNOWN
