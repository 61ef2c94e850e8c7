"""Compare two plans (`pulumi_mlops.render.stack_plan`): resources added, removed and changed, the
field paths that changed, and the model versions that move (as the components declare them in
the plans' ``models``, never guessed from field names).

Pure functions over plan documents (JSON-ready mappings); nothing here imports Pulumi. How a
diff is shown (text, Markdown, JSON) is `pulumi_mlops.render.diff_format`.

Field paths follow the shape of the inputs. Lists whose items are all mappings with a unique
``name`` (containers, env, ports, volumes) are compared item by item by name, as Kubernetes
merges them, so that ``spec.template.spec.containers[name=server].env[name=MODEL_URI].value``
names the change whatever was added or removed around it (when the items both lists share were
reordered, items are compared by position instead). Lists of plain values (``args``) are
compared position by position when their length is unchanged, and otherwise as a sequence with
insertions and deletions. `apply_changes` replays the changes and rebuilds the new inputs, which
the tests use to show that a diff loses nothing.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

__all__ = [
    "ABSENT",
    "FieldChange",
    "ModelVersionChange",
    "Named",
    "ResourceChange",
    "ResourceEntry",
    "StackPlanDiff",
    "apply_changes",
    "diff_stack_plans",
    "diff_values",
    "path_text",
    "short_type",
]



class _Absent(Enum):
    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent.ABSENT
"""The old value of an added field, the new value of a removed one."""


@dataclass(frozen=True)
class Named:
    """A path segment: the item of a list of mappings whose ``name`` is `name`."""

    name: str


Segment = str | int | Named
"""A path segment: a mapping key, a list index or a named list item."""


@dataclass(frozen=True)
class FieldChange:
    """One difference between two values.

    Attributes:
        path: Where, from the root of the compared values.
        old: The old value, or `ABSENT` when the field was added.
        new: The new value, or `ABSENT` when the field was removed.
        position: For an item added to a named list, its index in the new list.
    """

    path: tuple[Segment, ...]
    old: Any
    new: Any
    position: int | None = None

    @property
    def kind(self) -> Literal["added", "removed", "changed"]:
        """``added``, ``removed`` or ``changed``."""
        if self.old is ABSENT:
            return "added"
        if self.new is ABSENT:
            return "removed"
        return "changed"

    @property
    def path_text(self) -> str:
        """The path as ``spec.template.spec.containers[name=server].args[2]``."""
        return path_text(self.path)


@dataclass(frozen=True)
class ResourceEntry:
    """A resource of one plan (one that the other plan does not have)."""

    key: str
    type: str
    name: str
    parent: str | None
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class ResourceChange:
    """A resource in both plans whose inputs or parent differ.

    Attributes:
        key: Its plan key (``type::name``).
        type: Type token.
        name: Logical name.
        fields: The input changes, paths from the root of the inputs.
        parent: ``(old, new)`` parent keys when it moved to another parent (Pulumi replaces
            it unless the program declares an alias), else None.
    """

    key: str
    type: str
    name: str
    fields: tuple[FieldChange, ...]
    parent: tuple[str | None, str | None] | None = None


@dataclass(frozen=True)
class ModelVersionChange:
    """A model version a component deploys that differs between the plans.

    Attributes:
        key: The component's plan key.
        type: Its type token (``mlops:index:ModelService``).
        name: Its name.
        role: What the model is to it (a service's track: ``stable``, ``canary`` …).
        model: The registered model's name.
        old: The version before (``7``; ``@champion`` while the alias was unresolved), or None
            when the component did not deploy the model in that role.
        new: The version after, or None when it no longer does.
    """

    key: str
    type: str
    name: str
    role: str
    model: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class StackPlanDiff:
    """What changes from one plan to another.

    Attributes:
        old_stack: The old plan's stack.
        new_stack: The new plan's stack.
        added: Resources only the new plan has, by key.
        removed: Resources only the old plan has, by key.
        changed: Resources in both that differ, by key.
        unchanged: How many resources are in both and identical.
        outputs: Changes to the stack outputs (paths from the outputs mapping).
        secret_config: Encrypted config values added, removed or set again (ciphertext digests).
        model_versions: Model versions that move, in resource key order.
        warnings: The new plan's warnings (what `pulumi preview` would print as warnings),
            then one per workload the change restarts (a pod template or a container).
        notes: The new plan's notes (e.g. which registry aliases were resolved at).
    """

    old_stack: str
    new_stack: str
    added: tuple[ResourceEntry, ...] = ()
    removed: tuple[ResourceEntry, ...] = ()
    changed: tuple[ResourceChange, ...] = ()
    unchanged: int = 0
    outputs: tuple[FieldChange, ...] = ()
    secret_config: tuple[FieldChange, ...] = ()
    model_versions: tuple[ModelVersionChange, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        """Whether anything differs (resources, outputs or encrypted config)."""
        return bool(self.added or self.removed or self.changed or self.outputs
                    or self.secret_config)


# --- comparing values ------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def _same_scalar(a: Any, b: Any) -> bool:
    # JSON keeps true, 1 and 1.0 apart; Python's == does not. (Plans hold whole numbers as
    # ints: `redact` turns the floats they travel as back into ints.)
    return type(a) is type(b) and bool(a == b)


def _names(items: Sequence[Any]) -> list[str] | None:
    """The items' names when every item is a mapping with a unique string ``name``."""
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
        return names  # type: ignore[return-value]
    return None


def _diff_named(path: tuple[Segment, ...], old: Sequence[Any], new: Sequence[Any],
                old_names: list[str], new_names: list[str]) -> Iterator[FieldChange]:
    old_by, new_by = dict(zip(old_names, old, strict=True)), dict(zip(new_names, new, strict=True))
    for name in reversed(old_names):
        if name not in new_by:
            yield FieldChange((*path, Named(name)), old_by[name], ABSENT)
    for name in new_names:
        if name in old_by:
            yield from _diff((*path, Named(name)), old_by[name], new_by[name])
    for position, name in enumerate(new_names):
        if name not in old_by:
            yield FieldChange((*path, Named(name)), ABSENT, new_by[name], position)


def _diff_list(path: tuple[Segment, ...], old: Sequence[Any],
               new: Sequence[Any]) -> Iterator[FieldChange]:
    # Every list's changes come in the order `apply_changes` needs: removals (last first),
    # changes in place, additions (first first).
    old_names, new_names = _names(old), _names(new)
    if old_names is not None and new_names is not None:
        # Matched by name unless the items they share were reordered (then by position).
        old_set, new_set = set(old_names), set(new_names)
        if [n for n in old_names if n in new_set] == [n for n in new_names if n in old_set]:
            yield from _diff_named(path, old, new, old_names, new_names)
            return
    scalars = all(isinstance(v, _SCALARS) for v in (*old, *new))
    if scalars and len(old) != len(new):
        # Flags inserted or dropped: a sequence diff, so that one new argument is one change.
        matcher = difflib.SequenceMatcher(a=[json.dumps(v) for v in old],
                                          b=[json.dumps(v) for v in new], autojunk=False)
        opcodes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
        for _tag, i1, i2, _j1, _j2 in reversed(opcodes):
            for i in reversed(range(i1, i2)):
                yield FieldChange((*path, i), old[i], ABSENT)
        for _tag, _i1, _i2, j1, j2 in opcodes:
            for j in range(j1, j2):
                yield FieldChange((*path, j), ABSENT, new[j])
        return
    common = min(len(old), len(new))
    for i in reversed(range(common, len(old))):
        yield FieldChange((*path, i), old[i], ABSENT)
    for i in range(common):
        yield from _diff((*path, i), old[i], new[i])
    for i in range(common, len(new)):
        yield FieldChange((*path, i), ABSENT, new[i])


def _diff(path: tuple[Segment, ...], old: Any, new: Any) -> Iterator[FieldChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            if key not in new:
                yield FieldChange((*path, key), old[key], ABSENT)
            elif key not in old:
                yield FieldChange((*path, key), ABSENT, new[key])
            else:
                yield from _diff((*path, key), old[key], new[key])
    elif isinstance(old, list) and isinstance(new, list):
        yield from _diff_list(path, old, new)
    elif not _same_scalar(old, new):  # a scalar changed, or the kind of value did
        yield FieldChange(path, old, new)


def diff_values(old: Any, new: Any) -> tuple[FieldChange, ...]:
    """Every difference between two JSON-like values, leaf by leaf (see the module doc)."""
    return tuple(_diff((), old, new))


def _resolve(container: Any, segment: Segment) -> Any:
    if isinstance(segment, Named):
        return next(item for item in container if item.get("name") == segment.name)
    return container[segment]


def apply_changes(value: Any, changes: Iterable[FieldChange]) -> Any:
    """``value`` with ``changes`` (as `diff_values` returns them, in order) applied; a copy.

    ``apply_changes(old, diff_values(old, new)) == new``.
    """
    root = {"": copy.deepcopy(value)}
    for change in changes:
        path: tuple[Segment, ...] = ("", *change.path)
        parent: Any = root
        for segment in path[:-1]:
            parent = _resolve(parent, segment)
        last = path[-1]
        new = copy.deepcopy(change.new)
        if isinstance(last, Named):
            if change.kind == "added":
                parent.insert(change.position, new)
            else:
                index = parent.index(_resolve(parent, last))
                if change.kind == "removed":
                    del parent[index]
                else:
                    parent[index] = new
        elif isinstance(parent, list) and isinstance(last, int) and change.kind == "added":
            parent.insert(last, new)
        elif change.kind == "removed":
            del parent[last]
        else:
            parent[last] = new
    return root[""]


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def path_text(path: Sequence[Segment]) -> str:
    """A path as text: ``metadata.labels["app.kubernetes.io/name"]``, ``args[2]``,
    ``containers[name=server]``; the empty path is ``(root)``."""
    out = ""
    for segment in path:
        if isinstance(segment, Named):
            plain = _PLAIN_KEY.fullmatch(segment.name) is not None
            out += f"[name={segment.name if plain else json.dumps(segment.name)}]"
        elif isinstance(segment, int):
            out += f"[{segment}]"
        elif _PLAIN_KEY.fullmatch(segment):
            out += f".{segment}" if out else segment
        else:
            out += f"[{json.dumps(segment)}]"
    return out or "(root)"


# --- model versions --------------------------------------------------------------------------


def _version(ref: Mapping[str, Any] | None) -> str | None:
    """``7``, or ``@champion`` for an alias the plan could not resolve; None for no model."""
    if ref is None:
        return None
    return str(ref["version"]) if ref.get("version") else f"@{ref.get('alias')}"


def _model_version_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                           resources: Mapping[str, Any]) -> list[ModelVersionChange]:
    """Every (component, role) whose declared model or version differs."""
    changes: list[ModelVersionChange] = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, {}), new.get(key, {})
        entry = resources.get(key, {})
        for role in sorted(before.keys() | after.keys()):
            b, a = before.get(role), after.get(role)
            if b is not None and a is not None and b["model"] != a["model"]:
                # Another model in the same role: one leaves, one comes.
                pairs = [(b["model"], _version(b), None), (a["model"], None, _version(a))]
            else:
                pairs = [((a or b or {})["model"], _version(b), _version(a))]
            changes += [
                ModelVersionChange(key, entry.get("type", ""), entry.get("name", key), role,
                                   model, o, n)
                for model, o, n in pairs if o != n
            ]
    return changes


# --- plans ------------------------------------------------------------------------------------


def _entry(key: str, entry: Mapping[str, Any]) -> ResourceEntry:
    return ResourceEntry(key, entry["type"], entry["name"], entry.get("parent"), entry["inputs"])


def short_type(type_: str) -> str:
    """``kubernetes:apps/v1:Deployment`` → ``Deployment``."""
    return type_.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


# Kinds whose pods are replaced when their pod template changes (a rolling restart), and Docker
# containers, which pulumi-docker replaces when their inputs change.
_POD_OWNERS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet",
               "kubernetes:apps/v1:DaemonSet")
_CONTAINER = "docker:index/container:Container"


def _restart_warning(change: ResourceChange) -> str | None:
    """What a reviewer should know when a change replaces running pods or containers."""
    if change.type in _POD_OWNERS:
        template = [f for f in change.fields if f.path[:2] == ("spec", "template")]
        if template:
            return (f"{short_type(change.type)} `{change.name}` restarts its pods (its pod "
                    f"template changes: {len(template)} field{'s' if len(template) != 1 else ''})")
    elif change.type == _CONTAINER and change.fields:
        return f"Container `{change.name}` is replaced (its inputs change)"
    return None


def diff_stack_plans(old: Mapping[str, Any], new: Mapping[str, Any]) -> StackPlanDiff:
    """What changes from plan ``old`` to plan ``new`` (both as `parse_stack_plan` returns them)."""
    old_res: Mapping[str, Any] = old["resources"]
    new_res: Mapping[str, Any] = new["resources"]
    added = tuple(_entry(k, new_res[k]) for k in sorted(new_res.keys() - old_res.keys()))
    removed = tuple(_entry(k, old_res[k]) for k in sorted(old_res.keys() - new_res.keys()))
    changed: list[ResourceChange] = []
    unchanged = 0
    for key in sorted(old_res.keys() & new_res.keys()):
        before, after = old_res[key], new_res[key]
        fields = diff_values(before["inputs"], after["inputs"])
        parent = before.get("parent"), after.get("parent")
        moved = parent if parent[0] != parent[1] else None
        if fields or moved:
            changed.append(ResourceChange(key, after["type"], after["name"], fields, moved))
        else:
            unchanged += 1
    return StackPlanDiff(
        old_stack=str(old.get("stack", "")),
        new_stack=str(new.get("stack", "")),
        added=added,
        removed=removed,
        changed=tuple(changed),
        unchanged=unchanged,
        outputs=diff_values(dict(old.get("outputs") or {}), dict(new.get("outputs") or {})),
        secret_config=diff_values(dict(old.get("secretConfig") or {}),
                                  dict(new.get("secretConfig") or {})),
        model_versions=tuple(_model_version_changes(
            old["models"], new["models"], {**old_res, **new_res})
            if old.get("models") is not None and new.get("models") is not None else ()),
        warnings=(*(new.get("warnings") or ()),
                  *filter(None, map(_restart_warning, changed))),
        notes=(*(new.get("notes") or ()), *_unrecorded_models(old, new)),
    )


def _unrecorded_models(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """A note when a plan of an earlier version did not record model versions."""
    if old.get("models") is None or new.get("models") is None:
        return ["model versions are not compared: a plan written by an earlier mlops does not "
                "record them; write both plans with this version"]
    return []
