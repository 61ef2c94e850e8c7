"""Compare two plans (`pulumi_mlops.render.plan`): resources added, removed and changed, the
field paths that changed, and the model versions that move.

Pure functions over plan documents (JSON-ready mappings); nothing here imports Pulumi.

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
import html
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import yaml

__all__ = [
    "ABSENT",
    "DIFF_FORMAT",
    "FieldChange",
    "ModelVersionChange",
    "Named",
    "PlanDiff",
    "ResourceChange",
    "ResourceEntry",
    "apply_changes",
    "diff_json",
    "diff_plans",
    "diff_values",
    "format_markdown",
    "format_text",
    "model_refs",
    "path_text",
]

DIFF_FORMAT = "mlops-plan-diff/v1"
"""The ``format`` of `diff_json` documents."""

VALUE_WIDTH = 80
"""Values longer than this (as JSON) are cut in text and Markdown output."""

MARKDOWN_LIMIT = 60_000
"""Markdown output stays under this many characters (GitHub comments take at most 65,536)."""


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
    """A model whose version (or alias) a resource references differs between the plans.

    Attributes:
        key: The resource's plan key.
        type: Its type token.
        name: Its logical name.
        model: The registered model's name (from a ``models:/`` URI), or the name of the field
            that carries a version (``mlops.dev/model-version``) when no URI says which model.
        old: The versions before (``7``, ``@champion``; several joined by ``, ``), or None when
            the resource did not reference the model.
        new: The versions after, or None when it no longer references the model.
    """

    key: str
    type: str
    name: str
    model: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class PlanDiff:
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

_MODEL_URI = re.compile(
    r"(?:^|(?<=[\s='\"]))models:/(?P<model>[^/@\s'\"]+)"
    r"(?:/(?P<version>[^/\s'\"]+)|@(?P<alias>[^/\s'\"]+))(?=$|[\s'\"])"
)


def _version_field(path: Sequence[Segment]) -> str | None:
    """The field's name when it carries a model version (``mlops.dev/model-version``, env
    ``MODEL_VERSION``, ``modelVersion``): its last segment ends with "model version"."""
    if not path:
        return None
    last = path[-1]
    if last == "value" and len(path) > 1 and isinstance(path[-2], Named):
        last = path[-2]  # an env item: {name: MODEL_VERSION, value: "7"}
    subject = last.name if isinstance(last, Named) else last
    if not isinstance(subject, str):
        return None
    normal = subject.lower().replace("-", "").replace("_", "")
    return subject if normal.endswith("modelversion") else None


def model_refs(value: Any, path: tuple[Segment, ...] = ()) -> set[tuple[str, str]]:
    """The ``(model, version)`` pairs a value references anywhere inside it.

    A string holding a ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` URI (alone,
    after ``=`` or among words) gives ``(name, version)`` or ``(name, "@alias")``; a field
    whose name ends with "model-version" / "model_version" / "modelVersion" gives
    ``(field name, value)``.
    """
    refs: set[tuple[str, str]] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            refs |= model_refs(item, (*path, key))
    elif isinstance(value, list):
        names = _names(value)
        for i, item in enumerate(value):
            refs |= model_refs(item, (*path, Named(names[i]) if names else i))
    elif isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)
        for match in _MODEL_URI.finditer(text):
            version = match["version"] or f"@{match['alias']}"
            refs.add((match["model"], version))
        subject = _version_field(path)
        # MLflow's versions are whole numbers; anything else there (``unresolved``) is none.
        if subject is not None and text.isdigit():
            refs.add((subject, text))
    return refs


def _pinned(versions: str | None) -> str | None:
    """A move's side without its aliases (``"7, @champion"`` → ``"7"``)."""
    kept = [v for v in (versions or "").split(", ") if v and not v.startswith("@")]
    return ", ".join(kept) or None


def _model_version_changes(key: str, type_: str, name: str, old: Any,
                           new: Any) -> list[ModelVersionChange]:
    old_refs, new_refs = model_refs(old), model_refs(new)
    if old_refs == new_refs:
        return []
    models = sorted({m for m, _ in old_refs | new_refs})
    moves: list[tuple[str, str | None, str | None]] = []
    for model in models:
        before = sorted(v for m, v in old_refs if m == model)
        after = sorted(v for m, v in new_refs if m == model)
        if before != after:
            moves.append((model, ", ".join(before) or None, ", ".join(after) or None))
    # A version label that moves exactly like a URI of the same resource says nothing more;
    # an alias the URIs keep naming on both sides (a pod annotation) does not make it differ.
    uri_moves = {(_pinned(o), _pinned(n)) for m, o, n in moves if not _version_field((m,))}
    return [
        ModelVersionChange(key, type_, name, model, o, n) for model, o, n in moves
        if not (_version_field((model,)) and (o, n) in uri_moves)
    ]


# --- plans ------------------------------------------------------------------------------------


def _entry(key: str, entry: Mapping[str, Any]) -> ResourceEntry:
    return ResourceEntry(key, entry["type"], entry["name"], entry.get("parent"), entry["inputs"])


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
            return (f"{_short_type(change.type)} `{change.name}` restarts its pods (its pod "
                    f"template changes: {len(template)} field{'s' if len(template) != 1 else ''})")
    elif change.type == _CONTAINER and change.fields:
        return f"Container `{change.name}` is replaced (its inputs change)"
    return None


def diff_plans(old: Mapping[str, Any], new: Mapping[str, Any]) -> PlanDiff:
    """What changes from plan ``old`` to plan ``new`` (both as `parse_plan` returns them)."""
    old_res: Mapping[str, Any] = old["resources"]
    new_res: Mapping[str, Any] = new["resources"]
    added = tuple(_entry(k, new_res[k]) for k in sorted(new_res.keys() - old_res.keys()))
    removed = tuple(_entry(k, old_res[k]) for k in sorted(old_res.keys() - new_res.keys()))
    changed: list[ResourceChange] = []
    unchanged = 0
    versions: list[ModelVersionChange] = []
    for key in sorted(old_res.keys() | new_res.keys()):
        before: Any = old_res.get(key)
        after: Any = new_res.get(key)
        entry = after if after is not None else before
        versions += _model_version_changes(
            key, entry["type"], entry["name"],
            before["inputs"] if before else {}, after["inputs"] if after else {})
        if before is None or after is None:
            continue
        fields = diff_values(before["inputs"], after["inputs"])
        parent = before.get("parent"), after.get("parent")
        moved = parent if parent[0] != parent[1] else None
        if fields or moved:
            changed.append(ResourceChange(key, after["type"], after["name"], fields, moved))
        else:
            unchanged += 1
    return PlanDiff(
        old_stack=str(old.get("stack", "")),
        new_stack=str(new.get("stack", "")),
        added=added,
        removed=removed,
        changed=tuple(changed),
        unchanged=unchanged,
        outputs=diff_values(dict(old.get("outputs") or {}), dict(new.get("outputs") or {})),
        secret_config=diff_values(dict(old.get("secretConfig") or {}),
                                  dict(new.get("secretConfig") or {})),
        model_versions=tuple(versions),
        warnings=(*(new.get("warnings") or ()),
                  *filter(None, map(_restart_warning, changed))),
        notes=tuple(new.get("notes") or ()),
    )


# --- output -----------------------------------------------------------------------------------


def _short_type(type_: str) -> str:
    """``kubernetes:apps/v1:Deployment`` → ``Deployment``."""
    return type_.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _clip(text: str, start: int, width: int) -> str:
    shown = ("…" if start else "") + text[start:]
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _show(value: Any, width: int = VALUE_WIDTH) -> str:
    return _clip(json.dumps(value, ensure_ascii=False, sort_keys=True), 0, width)


def _show_pair(old: Any, new: Any, width: int) -> tuple[str, str]:
    """Both values, cut to ``width`` around where they start to differ (so that two long URLs
    that differ near their end do not both print as the same prefix)."""
    a = json.dumps(old, ensure_ascii=False, sort_keys=True)
    b = json.dumps(new, ensure_ascii=False, sort_keys=True)
    if len(a) <= width and len(b) <= width:
        return a, b
    common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                  min(len(a), len(b)))
    start = max(0, common - width // 4) if common > width // 2 else 0
    return _clip(a, start, width), _clip(b, start, width)


@dataclass(frozen=True)
class _Line:
    kind: Literal["added", "removed", "changed"]
    path: str
    old: str
    new: str


def _segment_order(segment: Segment) -> tuple[int, str, int]:
    if isinstance(segment, Named):
        return 2, segment.name, 0
    if isinstance(segment, int):
        return 1, "", segment
    return 0, segment, 0


def _lines(changes: Iterable[FieldChange], width: int) -> list[_Line]:
    """Changes as a reader wants them: in path order, and an item removed and another added at
    the same position (``args[3]``) shown as one change."""
    ordered = sorted(changes, key=lambda c: [_segment_order(s) for s in c.path])
    added = {c.path: c for c in ordered if c.kind == "added"}
    lines: list[_Line] = []
    merged: set[tuple[Segment, ...]] = set()
    for change in ordered:
        if change.path in merged:
            continue
        if change.kind == "removed" and change.path in added:
            merged.add(change.path)
            old, new = _show_pair(change.old, added[change.path].new, width)
            lines.append(_Line("changed", change.path_text, old, new))
        elif change.kind == "changed":
            old, new = _show_pair(change.old, change.new, width)
            lines.append(_Line("changed", change.path_text, old, new))
        elif change.kind == "added":
            lines.append(_Line("added", change.path_text, "", _show(change.new, width)))
        else:
            lines.append(_Line("removed", change.path_text, _show(change.old, width), ""))
    return lines


def _counts(diff: PlanDiff) -> str:
    return (f"{len(diff.added)} to add, {len(diff.removed)} to remove, "
            f"{len(diff.changed)} to change")


def _version_text(change: ModelVersionChange) -> tuple[str, str, str]:
    """Model, ``old -> new`` and where, for one model version change."""
    where = f"{_short_type(change.type)} {change.name}"
    if change.old is None:
        where += ", new"
    elif change.new is None:
        where += ", removed"
    return change.model, f"{change.old or 'none'} -> {change.new or 'none'}", where


def _secret_text(change: FieldChange) -> str:
    what = {"added": "added", "removed": "removed",
            "changed": "set again (the value is never shown; it may be the same)"}
    return f"{_config_key(change)}: {what[change.kind]}"


def _config_key(change: FieldChange) -> str:
    # Config keys (``project:key``) are one flat level: shown as written, not as a path.
    return str(change.path[0])


def _resource_rows(diff: PlanDiff) -> list[tuple[str, str, ResourceChange | None]]:
    """(marker, key, change) for every added, removed or changed resource, in key order."""
    rows: list[tuple[str, str, ResourceChange | None]] = [
        *(("+", r.key, None) for r in diff.added),
        *(("-", r.key, None) for r in diff.removed),
        *(("~", c.key, c) for c in diff.changed),
    ]
    return sorted(rows, key=lambda row: row[1])


def _with_parent(change: ResourceChange) -> list[FieldChange]:
    fields = list(change.fields)
    if change.parent:
        fields.insert(0, FieldChange(("(parent)",), change.parent[0], change.parent[1]))
    return fields


def format_text(diff: PlanDiff, *, width: int = VALUE_WIDTH) -> str:
    """The diff for a terminal: model versions first, then one block per resource.

    Args:
        diff: What `diff_plans` returned.
        width: Values longer than this many characters are cut (around the first difference).
    """
    if diff.old_stack == diff.new_stack:
        lines = [f"mlops diff: stack {diff.new_stack}"]
    else:
        lines = [f"mlops diff: stack {diff.old_stack} -> {diff.new_stack}"]
    if diff.model_versions:
        lines.append("Model versions:")
        for model, move, where in map(_version_text, diff.model_versions):
            lines.append(f"  {model} {move} ({where})")
    if diff.warnings:
        lines.append("Warnings:")
        lines += [f"  ! {w}" for w in diff.warnings]
    if diff.notes:
        lines.append("Notes:")
        lines += [f"  {n}" for n in diff.notes]
    if not diff.has_changes:
        lines.append(f"No changes ({diff.unchanged} resources unchanged).")
        return "\n".join(lines) + "\n"
    lines.append(f"Resources: {_counts(diff)} ({diff.unchanged} unchanged)")
    marks = {"added": "+", "removed": "-", "changed": "~"}

    def block(changes: Iterable[FieldChange]) -> list[str]:
        out = []
        for line in _lines(changes, width):
            value = {"added": line.new, "removed": line.old,
                     "changed": f"{line.old} -> {line.new}"}[line.kind]
            out.append(f"    {marks[line.kind]} {line.path}: {value}")
        return out

    for marker, key, change in _resource_rows(diff):
        lines.append(f"{marker} {key}")
        if change is not None:
            lines += block(_with_parent(change))
    if diff.outputs:
        lines.append("Stack outputs:")
        lines += block(diff.outputs)
    if diff.secret_config:
        lines.append("Encrypted config:")
        lines += [f"    {_secret_text(f)}" for f in diff.secret_config]
    return "\n".join(lines) + "\n"


def _fenced(lang: str, body: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body.rstrip()}\n{fence}"


def _code(text: str) -> str:
    return f"<code>{_cell(text)}</code>"


def _cell(text: str) -> str:
    """Text safe in HTML and in a Markdown table cell."""
    return html.escape(text).replace("|", "&#124;")


def _diff_block(changes: Iterable[FieldChange], width: int) -> str:
    """A ```diff block: GitHub shows old values red and new values green."""
    out: list[str] = []
    for line in _lines(changes, width):
        if line.kind != "added":
            out.append(f"- {line.path}: {line.old}")
        if line.kind != "removed":
            out.append(f"+ {line.path}: {line.new}")
    return _fenced("diff", "\n".join(out))


def _details(summary: str, body: str) -> str:
    # The blank lines let GitHub render the Markdown inside the HTML block.
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


_RESOURCE_BODY_LIMIT = 4_000


def _resource_section(marker: str, entry: ResourceEntry | None, change: ResourceChange | None,
                      width: int) -> str:
    if change is not None:
        fields = _with_parent(change)
        count = len(fields)
        summary = (f"{_code(marker)} change {html.escape(_short_type(change.type))} "
                   f"{_code(change.name)} ({_code(change.type)}): {count} "
                   f"field{'s' if count != 1 else ''}")
        return _details(summary, _diff_block(fields, width))
    assert entry is not None
    verb = "add" if marker == "+" else "remove"
    summary = (f"{_code(marker)} {verb} {html.escape(_short_type(entry.type))} "
               f"{_code(entry.name)} ({_code(entry.type)})")
    body = yaml.safe_dump(dict(entry.inputs), sort_keys=True, allow_unicode=True, width=100)
    if len(body) > _RESOURCE_BODY_LIMIT:
        body = (body[:_RESOURCE_BODY_LIMIT]
                + "\n# … cut here; `mlops plan` writes the whole resource\n")
    return _details(summary, _fenced("yaml", body))


def format_markdown(diff: PlanDiff, *, width: int = VALUE_WIDTH,
                    limit: int = MARKDOWN_LIMIT) -> str:
    """The diff as a pull-request comment: a heading with the counts, a table of the model
    versions that move, then one collapsed ``<details>`` per resource.

    Args:
        diff: What `diff_plans` returned.
        width: Values longer than this many characters are cut (around the first difference).
        limit: The comment stays under this many characters; sections past it are listed by
            name only, with a pointer to `mlops diff`.
    """
    if diff.old_stack == diff.new_stack:
        title = f"### mlops diff: `{diff.new_stack}`"
    else:
        title = f"### mlops diff: `{diff.old_stack}` → `{diff.new_stack}`"
    parts = [title]
    if diff.model_versions:
        rows = ["**Model versions**", "", "| Model | Version | Resource |", "|---|---|---|"]
        for v in diff.model_versions:
            model, _move, where = _version_text(v)
            rows.append(f"| {_code(model)} | {_cell(v.old or 'none')} → "
                        f"**{_cell(v.new or 'none')}** | {_cell(where)} |")
        parts.append("\n".join(rows))
    if diff.warnings:
        parts.append("\n".join(["**Warnings**", "", *(f"- :warning: {_cell(w)}"
                                                      for w in diff.warnings)]))
    if diff.notes:
        parts.append(_details("Notes", "\n".join(f"- {_cell(n)}" for n in diff.notes)))
    if not diff.has_changes:
        return "\n\n".join([*parts, f"No changes ({diff.unchanged} resources unchanged)."]
                           ) + "\n"
    parts.append(f"**{_counts(diff)}** ({diff.unchanged} unchanged)")
    entries = {r.key: r for r in (*diff.added, *diff.removed)}
    sections = [(f"{m} {k}", _resource_section(m, entries.get(k), c, width))
                for m, k, c in _resource_rows(diff)]
    if diff.outputs:
        sections.append(("stack outputs",
                         _details("Stack outputs", _diff_block(diff.outputs, width))))
    if diff.secret_config:
        body = "\n".join(f"- {_code(_secret_text(f))}" for f in diff.secret_config)
        sections.append(("encrypted config", _details("Encrypted config", body)))
    out = "\n\n".join(parts)
    skipped: list[str] = []
    for label, section in sections:
        # Room is kept for the list of what did not fit.
        if skipped or len(out) + len(section) + 2_000 > limit:
            skipped.append(label)
        else:
            out += "\n\n" + section
    if skipped:
        tail = ("\n\n**Too long for one comment.** Not shown here (run `mlops diff`):\n\n"
                + _fenced("", "\n".join(skipped)))
        out += tail if len(out) + len(tail) < limit else (
            f"\n\n**Too long for one comment.** {len(skipped)} more sections not shown "
            "(run `mlops diff`).")
    return out + "\n"


def _segment_json(segment: Segment) -> Any:
    return {"name": segment.name} if isinstance(segment, Named) else segment


def _change_json(change: FieldChange) -> dict[str, Any]:
    out: dict[str, Any] = {"path": change.path_text,
                           "segments": [_segment_json(s) for s in change.path],
                           "kind": change.kind}
    if change.old is not ABSENT:
        out["old"] = change.old
    if change.new is not ABSENT:
        out["new"] = change.new
    if change.position is not None:
        out["position"] = change.position
    return out


def diff_json(diff: PlanDiff) -> dict[str, Any]:
    """The diff as a JSON-ready mapping (``format`` `DIFF_FORMAT`), values never cut."""

    def resource(r: ResourceEntry) -> dict[str, Any]:
        return {"key": r.key, "type": r.type, "name": r.name, "parent": r.parent}

    return {
        "format": DIFF_FORMAT,
        "oldStack": diff.old_stack,
        "newStack": diff.new_stack,
        "hasChanges": diff.has_changes,
        "summary": {"add": len(diff.added), "remove": len(diff.removed),
                    "change": len(diff.changed), "unchanged": diff.unchanged},
        "modelVersions": [
            {"key": v.key, "type": v.type, "name": v.name, "model": v.model,
             "old": v.old, "new": v.new} for v in diff.model_versions
        ],
        "added": [resource(r) for r in diff.added],
        "removed": [resource(r) for r in diff.removed],
        "changed": [
            {"key": c.key, "type": c.type, "name": c.name,
             "parent": {"old": c.parent[0], "new": c.parent[1]} if c.parent else None,
             "fields": [_change_json(f) for f in c.fields]}
            for c in diff.changed
        ],
        "outputs": [_change_json(f) for f in diff.outputs],
        "secretConfig": [{"key": _config_key(f), "kind": f.kind} for f in diff.secret_config],
        "warnings": list(diff.warnings),
        "notes": list(diff.notes),
    }
