"""Run a component or a whole Pulumi program under Pulumi's mock runtime and record it.

No engine, no provider plugins, no cluster: `pulumi.runtime.set_mocks` stands in for the engine
and every resource registration is recorded with its type, name, parent and inputs (secrets
still wrapped, so they can be redacted or asserted on).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import runpy
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

from pulumi_mlops import _pulumi_compat as compat
from pulumi_mlops.components._base import DECLARED
from pulumi_mlops.config import UNKNOWN_SECRET_CONFIG
from pulumi_mlops.errors import ProgramConfigError

__all__ = [
    "ProgramConfigError",
    "RecordedResource",
    "Recording",
    "SecretOutput",
    "load_secure_config",
    "record",
    "record_program",
    "unwrap_secrets",
]

RecordedResource = compat.ResourceRegistration
"""One resource the program declared: type, name, URN, parent URN ("" for the stack), inputs
as the engine received them (secrets in Pulumi's envelope, see `unwrap_secrets`), whether it is
a custom (provider) resource, its custom timeouts and the URNs it depends on."""


@dataclass
class Recording:
    """Everything a program declared, in registration order, plus the stack's outputs."""

    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Warnings the program logged (`pulumi.log.warn`) and those of the mock runtime."""
    notes: list[str] = field(default_factory=list)
    """What the program logged at info level (`pulumi.log.info`), e.g. resolved aliases."""
    components: list[Any] = field(default_factory=list)
    """The pulumi-mlops component objects the program built (with their plans)."""

    def of_type(self, type_: str) -> list[RecordedResource]:
        """Resources of one type token."""
        return [r for r in self.resources if r.type == type_]

    def get(self, type_: str, name: str) -> RecordedResource:
        """The one resource with this type and name."""
        found = [r for r in self.resources if r.type == type_ and r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources of type {type_} named {name!r}")
        return found[0]

    def parent_of(self, resource: RecordedResource) -> RecordedResource | None:
        """The resource's parent, or None when it is the stack."""
        return next((r for r in self.resources if r.urn == resource.parent), None)


def _fake_value(name: str, length: int) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return (digest * (length // len(digest) + 1))[:length]


@dataclass(frozen=True)
class SecretOutput:
    """A stack output that a `pulumi.StackReference` reads as a secret (see `record`).

    Attributes:
        value: The output's value.
    """

    value: Any


class _Mocks(pulumi.runtime.Mocks):
    """Outputs for resources whose state the engine would compute."""

    def __init__(self, stack_outputs: Mapping[str, Mapping[str, Any]] | None,
                 warnings: list[str], preview: bool) -> None:
        self.stack_outputs = stack_outputs or {}
        self.warnings = warnings
        self.preview = preview

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == "pulumi:pulumi:StackReference":
            outputs = self.stack_outputs.get(args.name)
            if outputs is None:
                # As `pulumi preview` shows a value it cannot know: what depends on the
                # outputs is [computed] in the plan.
                state["outputs"] = compat.UNKNOWN_PROPERTY
                self.warnings.append(
                    f"StackReference `{args.name}`: its outputs are unknown here, so what "
                    "depends on them shows as [computed]; pass `--stack-outputs FILE` to plan "
                    "with them")
            else:
                state["outputs"] = {k: v.value if isinstance(v, SecretOutput) else v
                                    for k, v in outputs.items()}
                state["secretOutputNames"] = sorted(
                    k for k, v in outputs.items() if isinstance(v, SecretOutput))
        elif args.typ in ("random:index/randomPassword:RandomPassword",
                        "random:index/randomString:RandomString"):
            state["result"] = _fake_value(args.name, int(args.inputs.get("length", 16)))
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = "sha256:" + _fake_value(args.name, 64)
            state["repoDigest"] = f"{args.inputs.get('name')}@sha256:{_fake_value(args.name, 64)}"
        elif args.typ == "docker:index/image:Image":
            # The provider reports the pushed digest, or without a push the local image ID;
            # a preview does not build (buildOnPreview is off), so it is not known there.
            state["repoDigest"] = (compat.UNKNOWN_PROPERTY if self.preview
                                   else "sha256:" + _fake_value(args.name, 64))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def record(
    program: Callable[[], Any],
    *,
    project: str = "mlops",
    stack: str = "dev",
    config: Mapping[str, str] | None = None,
    secret_keys: list[str] | None = None,
    preview: bool = False,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Recording:
    """Run ``program`` as a Pulumi stack under mocks and return what it declared.

    Args:
        program: Declares resources (and may call `pulumi.export`).
        project: Project name (URNs and unqualified config keys use it).
        stack: Stack name.
        config: Config as the engine passes it: ``{"project:key": "value"}``, objects as JSON.
        secret_keys: Config keys that are secrets.
        preview: Run as a preview (``pulumi.runtime.is_dry_run()`` is true).
        stack_outputs: Outputs of the stacks the program reads with `pulumi.StackReference`,
            by stack name; wrap a value in `SecretOutput` to make it a secret output.

    Raises:
        Whatever the program raises (a `ValidationError` for bad input, for example).
    """
    recording = Recording()

    def run() -> None:
        # Pulumi needs a current event loop; asyncio.run() elsewhere may have unset it.
        compat.ensure_event_loop()
        compat.forget_root_stack()
        mocks = _Mocks(stack_outputs, recording.warnings, preview)
        monitor = compat.RecordingMonitor(mocks, on_register=recording.resources.append,
                                          on_stack_outputs=recording.outputs.update)
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview,
                                 monitor=monitor, logger=_PROGRAM_LOGGER)
        # set_mocks registered its own root stack; run_in_new_stack declares the real one.
        compat.forget_root_stack()
        recording.resources.clear()
        compat.set_stack_config(config or {}, secret_keys or [])
        compat.forget_pending_work()
        DECLARED.set(recording.components)
        compat.run_in_new_stack(program)

    collect = _Collect(recording)
    _PROGRAM_LOGGER.addHandler(collect)
    try:
        contextvars.copy_context().run(run)
    finally:
        _PROGRAM_LOGGER.removeHandler(collect)
    return recording


class _Collect(logging.Handler):
    def __init__(self, recording: Recording) -> None:
        super().__init__(logging.INFO)
        self.recording = recording

    def emit(self, record: logging.LogRecord) -> None:
        into = (self.recording.warnings if record.levelno >= logging.WARNING
                else self.recording.notes)
        message = record.getMessage()
        if message not in into:
            into.append(message)


_PROGRAM_LOGGER = logging.getLogger("pulumi_mlops.program")
"""Where the mock engine sends what the program logs (it reaches the root logger's handlers,
as the engine's messages reach the terminal)."""
_PROGRAM_LOGGER.setLevel(logging.INFO)


def _config_value(value: Any) -> tuple[str, bool]:
    """Config as the engine passes it, and whether it is a secret."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        # Encrypted values need the engine's secrets provider: under mocks they are unknown.
        return UNKNOWN_SECRET_CONFIG, True
    if isinstance(value, str):
        return value, False
    return json.dumps(value), False


def _read_stack(cwd: Path, stack: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pulumi.yaml and the stack file's ``config`` map, keys qualified as ``project:key``."""
    project_file = cwd / "Pulumi.yaml"
    if not project_file.is_file():
        raise ProgramConfigError(f"no Pulumi.yaml in {cwd}: pass --cwd with the project directory")
    project = yaml.safe_load(project_file.read_text()) or {}
    config_dir = cwd / str(project.get("stackConfigDir", "."))
    stack_file = config_dir / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        known = sorted(p.name[7:-5] for p in config_dir.glob("Pulumi.*.yaml"))
        raise ProgramConfigError(
            f"no stack config {stack_file}: known stacks are {', '.join(known) or 'none'}"
        )
    raw = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
    return project, {
        key if ":" in key else f"{project['name']}:{key}": value for key, value in raw.items()
    }


def load_stack_config(cwd: Path, stack: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Read Pulumi.yaml and the stack's config file.

    Returns:
        The project file, the config map (``project:key`` → string) and the secret keys.
    """
    project, raw = _read_stack(cwd, stack)
    config: dict[str, str] = {}
    secrets: list[str] = []
    for full, value in raw.items():
        config[full], secret = _config_value(value)
        if secret:
            secrets.append(full)
    return project, config, secrets


def load_secure_config(cwd: Path, stack: str) -> dict[str, str]:
    """The stack's encrypted config values as written in its file: ``project:key`` → ciphertext.

    Under mocks these cannot be decrypted (the program sees them as unknown secrets); the
    ciphertext is what is committed, so a plan can tell that a secret was re-set without
    knowing it.
    """
    _project, raw = _read_stack(cwd.resolve(), stack)
    return {
        key: str(value["secure"]) for key, value in raw.items()
        if isinstance(value, dict) and set(value) == {"secure"}
    }


@contextlib.contextmanager
def _program_dir(main: Path) -> Iterator[None]:
    old_cwd, old_path = os.getcwd(), list(sys.path)
    os.chdir(main)
    sys.path.insert(0, str(main))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


def load_stack_outputs(path: Path) -> dict[str, dict[str, Any]]:
    """Read stand-ins for referenced stacks' outputs (``mlops plan --stack-outputs``): a YAML
    or JSON mapping of stack name (as the program passes it to `pulumi.StackReference`) to
    its outputs; an output written as ``{secret: value}`` is a secret output.

    Raises:
        ProgramConfigError: the file cannot be read or is not such a mapping.
    """
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ProgramConfigError(f"--stack-outputs {path}: cannot read it: {err}") from None
    if not isinstance(doc, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in doc.items()):
        raise ProgramConfigError(
            f"--stack-outputs {path}: must map each referenced stack's name to its outputs, "
            "e.g. {\"org/platform/prod\": {\"tracking_uri\": \"http://...\"}}")
    return {stack: {name: SecretOutput(value["secret"])
                    if isinstance(value, dict) and set(value) == {"secret"} else value
                    for name, value in outputs.items()}
            for stack, outputs in doc.items()}


def record_program(cwd: Path, stack: str, *, preview: bool = True,
                   stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
                   config_overrides: Mapping[str, Any] | None = None) -> Recording:
    """Run the Pulumi program in ``cwd`` with the config of ``stack`` and record it.

    ``stack_outputs`` stand in for the outputs of stacks it references (see `record`).
    ``config_overrides`` replace (or add) config keys (``key`` or ``project:key``) as
    ``pulumi config set`` would, with values as they would be written in the stack file.
    """
    cwd = cwd.resolve()
    project, config, secrets = load_stack_config(cwd, stack)
    for key, value in (config_overrides or {}).items():
        full = key if ":" in key else f"{project['name']}:{key}"
        config[full], _secret = _config_value(value)
    main = cwd / str(project.get("main", "."))
    entry = main / "__main__.py"
    if not entry.is_file():
        raise ProgramConfigError(f"{entry} not found: `main` in Pulumi.yaml must name a directory "
                                 "with a __main__.py")

    def program() -> None:
        with _program_dir(main):
            runpy.run_path(str(entry), run_name="__main__")

    return record(program, project=str(project["name"]), stack=stack, config=config,
                  secret_keys=secrets, preview=preview, stack_outputs=stack_outputs)


def unwrap_secrets(value: Any) -> Any:
    """The value with Pulumi's secret envelopes removed (for asserting on secret inputs)."""
    if compat.is_secret_envelope(value):
        return unwrap_secrets(compat.unwrap_secret_envelope(value))
    if isinstance(value, dict):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value
