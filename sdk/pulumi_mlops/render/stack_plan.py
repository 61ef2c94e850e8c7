"""The stack plan (`mlops plan`): what a stack declares, rendered under mocks, in a stable
diffable form. (A component's plan, the target-neutral decisions it materializes, is another
thing: `pulumi_mlops.plans`.)

A stack plan lists every resource of a stack under a key that does not depend on the stack or
the project (``type::name``), with its parent's key and its inputs, secrets redacted, and the
model versions the components declare. Two plans of the same program and config are
byte-identical (`dump_stack_plan` sorts every mapping), so a plan of the base branch and one of
the head branch can be compared by `pulumi_mlops.render.diff`.

Secrets and what a plan can say about them:
    Every value that travels as a Pulumi secret is written as ``[secret]`` (a secret mapping
    keeps its keys), never as plaintext and never as a hash of its value. Under the mock runtime
    a hash would not even describe the deployed value: encrypted config cannot be decrypted
    without the stack's secrets provider (the program sees an unknown secret), and generated
    secrets (``RandomPassword``) are computed by the engine, so the mock's stand-ins would be
    hashed. Where a literal secret does reach an input, an unkeyed hash of a low-entropy value
    (a short password, a database URI) can be reversed by guessing, and a keyed hash needs a key
    the credential-less CI that runs `mlops plan` does not have. What stays visible is therefore:
    a value becoming or ceasing to be secret, the keys of a secret mapping, the non-secret inputs
    that drive generated secrets (length, keepers), and, for encrypted stack config, a digest of
    the *ciphertext* committed in ``Pulumi.<stack>.yaml`` (``secretConfig``). The ciphertext is
    public in the repository already and its digest says nothing about the value; it changes
    whenever the secret is set again (the nonce is fresh), even to the same value.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pulumi_mlops.errors import PlanFormatError
from pulumi_mlops.policy import evaluate, resources_from_recording
from pulumi_mlops.render.harness import (
    Recording,
    load_secure_config,
    load_stack_config,
    record_program,
)
from pulumi_mlops.render.manifests import redact

__all__ = [
    "POLICY_WARNING_PREFIX",
    "STACK_PLAN_FORMAT",
    "PlanFormatError",
    "add_policy_violations",
    "build_stack_plan",
    "dump_stack_plan",
    "load_stack_plan",
    "parse_stack_plan",
    "plan_stack",
    "resource_key",
]

STACK_PLAN_FORMAT = "mlops-plan/v1"
"""The ``format`` of the documents this version writes and reads."""

_URN_PREFIX = "urn:pulumi:"

POLICY_WARNING_PREFIX = "policy violation "
"""How a policy violation starts among a plan's warnings (``policy violation [mandatory]
retrain-gated: …``), which `mlops diff` shows in a section of their own."""


def resource_key(type_: str, name: str) -> str:
    """The key of a resource in a plan: ``type::name`` (the URN without stack and project)."""
    return f"{type_}::{name}"


def _urn_parts(urn: str) -> tuple[str, str, str, str]:
    """``urn:pulumi:<stack>::<project>::<qualified type>::<name>`` split into its four parts."""
    head, project, qualified_type, name = urn.split("::", 3)
    return head.removeprefix(_URN_PREFIX), project, qualified_type, name


def _keys(recording: Recording) -> dict[str, str]:
    """URN → plan key. ``type::name`` unless two resources share it (children of different
    components may); those are told apart by their URN's type chain (parent types included),
    which is unique within a stack and, like the plain key, independent of stack and project."""
    counts = Counter((r.type, r.name) for r in recording.resources)
    keys: dict[str, str] = {}
    for r in recording.resources:
        if counts[(r.type, r.name)] == 1:
            keys[r.urn] = resource_key(r.type, r.name)
        else:
            keys[r.urn] = resource_key(_urn_parts(r.urn)[2], r.name)
    return keys


def _fingerprint(ciphertext: str) -> str:
    return "sha256:" + hashlib.sha256(ciphertext.encode()).hexdigest()[:16]


def build_stack_plan(
    recording: Recording,
    *,
    stack: str | None = None,
    project: str | None = None,
    secure_config: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The plan document of a recording.

    Args:
        recording: What the program declared (`record` / `record_program`).
        stack: Stack name. Default: read from the resources' URNs ("" when there are none).
        project: Project name. Default: read from the URNs like ``stack``.
        secure_config: Encrypted stack config, ``project:key`` → ciphertext
            (`load_secure_config`); only a digest of each ciphertext is kept.

    Returns:
        A JSON-ready mapping: ``format``, ``project``, ``stack``, ``resources`` (key →
        ``type``, ``name``, ``parent`` key or None for the stack, ``custom``, redacted
        ``inputs``), redacted stack ``outputs``, ``secretConfig`` (key → ciphertext digest),
        ``warnings`` (what `pulumi preview` would print as warnings: an unresolved alias, a
        canary's effective weight, unknown stack references), ``notes`` (info messages,
        e.g. which registry an alias was resolved at) and ``models`` (component key → role →
        ``model``, ``version`` (None while an alias is unresolved) and ``alias``: the model
        versions the components declare they deploy).
    """
    if recording.resources and (stack is None or project is None):
        urn_stack, urn_project, _, _ = _urn_parts(recording.resources[0].urn)
        stack = urn_stack if stack is None else stack
        project = urn_project if project is None else project
    keys = _keys(recording)
    resources = {
        keys[r.urn]: {
            "type": r.type,
            "name": r.name,
            "parent": keys.get(r.parent),
            "custom": r.custom,
            "inputs": redact(dict(r.inputs)),
        }
        for r in recording.resources
    }
    # Round-trip through JSON so that the document is exactly what `load_stack_plan` reads back
    # (tuples become lists, every key a string).
    plan: dict[str, Any] = json.loads(json.dumps({
        "format": STACK_PLAN_FORMAT,
        "project": project or "",
        "stack": stack or "",
        "resources": resources,
        "outputs": redact(dict(recording.outputs)),
        "secretConfig": {k: _fingerprint(v) for k, v in (secure_config or {}).items()},
        # Sorted: the engine's messages arrive in no fixed order, and a plan is byte-stable.
        "warnings": sorted(recording.warnings),
        "notes": sorted(recording.notes),
        "models": _declared_models(recording, keys),
    }))
    return plan


def _declared_models(recording: Recording,
                     keys: Mapping[str, str]) -> dict[str, dict[str, dict[str, str | None]]]:
    """Component key → role → the model version it declares (`Component.declared_models`)."""
    by_name = {(r.type, r.name): keys[r.urn] for r in recording.resources if not r.custom}
    models: dict[str, dict[str, dict[str, str | None]]] = {}
    for component in recording.components:
        declared = component.declared_models()
        key = by_name.get((component.type_token, component.component_name))
        if declared and key is not None:
            models[key] = {role: {"model": ref.name, "version": ref.version, "alias": ref.alias}
                           for role, ref in declared.items()}
    return models


def add_policy_violations(plan: dict[str, Any], recording: Recording,
                          config: Mapping[str, Mapping[str, Any]] | None = None) -> list[Any]:
    """Run the policy rules (`pulumi_mlops.policy`) on a recording and record what they find
    in its plan: a ``policy`` section (``violations``: ``policy``, ``level``, ``message``,
    ``resource`` key or None) and one warning each (`POLICY_WARNING_PREFIX`), which `mlops
    diff` shows in every format.

    Returns:
        The violations (`pulumi_mlops.policy.Violation`), in rule order.

    Raises:
        PolicyConfigError: ``config`` names an unknown rule or has a bad value.
    """
    violations = evaluate(resources_from_recording(recording), config)
    keys = _keys(recording)
    plan["policy"] = {"violations": [
        {"policy": v.policy, "level": str(v.level), "message": v.message,
         "resource": keys.get(v.urn)} for v in violations]}
    plan["warnings"] = sorted([*plan["warnings"],
                               *(POLICY_WARNING_PREFIX + v.line() for v in violations)])
    return violations


def stack_policy_config(cwd: Path, stack: str) -> dict[str, dict[str, Any]]:
    """Policy config the stack's own config implies: ``mlops:requireImageDigest: true``
    requires images pinned by digest (``image-digest``'s ``requireDigest``)."""
    _project, config, _secrets = load_stack_config(cwd.resolve(), stack)
    required = any(key.endswith(":requireImageDigest") and value.strip().lower() == "true"
                   for key, value in config.items())
    return {"image-digest": {"requireDigest": True}} if required else {}


def plan_stack(cwd: Path, stack: str,
                 stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
                 *, policy_config: Mapping[str, Mapping[str, Any]] | None = None,
                 ) -> dict[str, Any]:
    """Run the program in ``cwd`` with ``stack``'s config under mocks and return its plan
    (``stack_outputs``: stand-ins for referenced stacks' outputs, see `record`).

    With ``policy_config`` (``{}`` for the defaults) the policy rules run too and their
    violations are recorded (`add_policy_violations`), on top of what the stack's config
    implies (`stack_policy_config`); without it the plan is as before.
    """
    recording = record_program(cwd, stack, stack_outputs=stack_outputs)
    plan = build_stack_plan(recording, stack=stack, secure_config=load_secure_config(cwd, stack))
    if policy_config is not None:
        config = stack_policy_config(cwd, stack)
        for name, values in policy_config.items():
            config[name] = {**config.get(name, {}), **values}
        add_policy_violations(plan, recording, config)
    return plan


def dump_stack_plan(plan: Mapping[str, Any]) -> str:
    """The plan as JSON text: sorted keys, two-space indent, ASCII only, final newline."""
    return json.dumps(plan, indent=2, sort_keys=True) + "\n"


def _require(condition: bool, source: str, problem: str) -> None:
    if not condition:
        raise PlanFormatError(f"{source}: {problem}")


def parse_stack_plan(text: str, source: str = "plan") -> dict[str, Any]:
    """Read a plan document and check its format and shape.

    Raises:
        PlanFormatError: not JSON, not a plan, a plan of another format version, or malformed;
            the message names ``source`` and what to do.
    """
    try:
        doc: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as err:
        raise PlanFormatError(f"{source}: not a plan (invalid JSON: {err}); write plans with "
                              "`mlops plan --stack <stack> --out <file>`") from None
    _require(isinstance(doc, dict) and "format" in doc, source,
             "not a plan (no `format` field); write plans with `mlops plan`")
    if doc["format"] != STACK_PLAN_FORMAT:
        raise PlanFormatError(
            f"{source}: plan format {doc['format']!r} is not supported (this mlops reads "
            f"{STACK_PLAN_FORMAT!r}); write both plans with the same version of mlops"
        )
    _require(isinstance(doc.get("stack"), str), source, "`stack` must be a string")
    resources: Any = doc.get("resources")
    _require(isinstance(resources, dict), source, "`resources` must be a mapping")
    for key, entry in resources.items():
        _require(isinstance(entry, dict) and isinstance(entry.get("type"), str)
                 and isinstance(entry.get("name"), str) and isinstance(entry.get("inputs"), dict)
                 and (entry.get("parent") is None or isinstance(entry.get("parent"), str)),
                 source, f"resource {key!r} needs `type`, `name`, `parent` and `inputs`")
    for section in ("outputs", "secretConfig"):
        _require(isinstance(doc.setdefault(section, {}), dict), source,
                 f"`{section}` must be a mapping")
    for section in ("warnings", "notes"):  # absent from plans of earlier versions
        found = doc.setdefault(section, [])
        _require(isinstance(found, list) and all(isinstance(m, str) for m in found), source,
                 f"`{section}` must be a list of strings")
    # None: a plan of an earlier version, which did not record the declared model versions.
    models: Any = doc.setdefault("models", None)
    _require(models is None or (isinstance(models, dict) and all(
        isinstance(roles, dict) and all(
            isinstance(ref, dict) and isinstance(ref.get("model"), str)
            and all(isinstance(ref.get(k), str | None) for k in ("version", "alias"))
            for ref in roles.values())
        for roles in models.values())), source,
        "`models` must map component keys to roles to {model, version, alias}")
    policy: Any = doc.get("policy")  # only in plans made with `mlops plan --policy`
    _require(policy is None or (isinstance(policy, dict) and isinstance(
        policy.get("violations"), list) and all(
            isinstance(v, dict) and all(isinstance(v.get(k), str)
                                        for k in ("policy", "level", "message"))
            for v in policy["violations"])), source,
        "`policy` must hold `violations`, each with `policy`, `level` and `message`")
    return doc


def load_stack_plan(path: Path) -> dict[str, Any]:
    """Read and check the plan in ``path`` (see `parse_stack_plan`)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise PlanFormatError(f"{path}: cannot read the plan: {err.strerror}") from None
    return parse_stack_plan(text, str(path))
