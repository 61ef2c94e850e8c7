"""How a plan diff (`pulumi_mlops.render.diff`) is shown: text for a terminal, Markdown for a
pull-request comment, JSON for tools."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from pulumi_mlops.render.diff import (
    ABSENT,
    FieldChange,
    ModelVersionChange,
    Named,
    ResourceChange,
    ResourceEntry,
    Segment,
    StackPlanDiff,
    short_type,
)
from pulumi_mlops.render.stack_plan import POLICY_WARNING_PREFIX

__all__ = ["DIFF_FORMAT", "MARKDOWN_LIMIT", "VALUE_WIDTH", "diff_json", "format_markdown",
           "format_text"]

DIFF_FORMAT = "mlops-plan-diff/v1"
"""The ``format`` of `diff_json` documents."""

VALUE_WIDTH = 80
"""Values longer than this (as JSON) are cut in text and Markdown output."""

MARKDOWN_LIMIT = 60_000
"""Markdown output stays under this many characters (GitHub comments take at most 65,536)."""


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


def _counts(diff: StackPlanDiff) -> str:
    return (f"{len(diff.added)} to add, {len(diff.removed)} to remove, "
            f"{len(diff.changed)} to change")


def _version_text(change: ModelVersionChange) -> tuple[str, str, str]:
    """Model, ``old -> new`` and where, for one model version change."""
    where = f"{short_type(change.type)} {change.name}, {change.role}"
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


def _resource_rows(diff: StackPlanDiff) -> list[tuple[str, str, ResourceChange | None]]:
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


def _policy_and_warnings(diff: StackPlanDiff) -> tuple[list[tuple[bool, str]], list[str]]:
    """The new plan's policy violations (blocking?, ``[level] policy: message``) and its
    other warnings (a plan made with `mlops plan --policy` keeps violations among them)."""
    violations = [(w.startswith(POLICY_WARNING_PREFIX + "[mandatory]"),
                   w.removeprefix(POLICY_WARNING_PREFIX))
                  for w in diff.warnings if w.startswith(POLICY_WARNING_PREFIX)]
    return violations, [w for w in diff.warnings if not w.startswith(POLICY_WARNING_PREFIX)]


def format_text(diff: StackPlanDiff, *, width: int = VALUE_WIDTH) -> str:
    """The diff for a terminal: model versions first, then one block per resource.

    Args:
        diff: What `diff_stack_plans` returned.
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
    violations, warnings = _policy_and_warnings(diff)
    if violations:
        lines.append("Policy violations:")
        lines += [f"  {'x' if blocking else '!'} {v}" for blocking, v in violations]
    if warnings:
        lines.append("Warnings:")
        lines += [f"  ! {w}" for w in warnings]
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
        summary = (f"{_code(marker)} change {html.escape(short_type(change.type))} "
                   f"{_code(change.name)} ({_code(change.type)}): {count} "
                   f"field{'s' if count != 1 else ''}")
        return _details(summary, _diff_block(fields, width))
    assert entry is not None
    verb = "add" if marker == "+" else "remove"
    summary = (f"{_code(marker)} {verb} {html.escape(short_type(entry.type))} "
               f"{_code(entry.name)} ({_code(entry.type)})")
    body = yaml.safe_dump(dict(entry.inputs), sort_keys=True, allow_unicode=True, width=100)
    if len(body) > _RESOURCE_BODY_LIMIT:
        body = (body[:_RESOURCE_BODY_LIMIT]
                + "\n# … cut here; `mlops plan` writes the whole resource\n")
    return _details(summary, _fenced("yaml", body))


def format_markdown(diff: StackPlanDiff, *, width: int = VALUE_WIDTH,
                    limit: int = MARKDOWN_LIMIT) -> str:
    """The diff as a pull-request comment: a heading with the counts, a table of the model
    versions that move, then one collapsed ``<details>`` per resource.

    Args:
        diff: What `diff_stack_plans` returned.
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
        rows = ["**Model versions**", "", "| Model | Version | Component |", "|---|---|---|"]
        for v in diff.model_versions:
            model, _move, where = _version_text(v)
            rows.append(f"| {_code(model)} | {_cell(v.old or 'none')} → "
                        f"**{_cell(v.new or 'none')}** | {_cell(where)} |")
        parts.append("\n".join(rows))
    violations, warnings = _policy_and_warnings(diff)
    if violations:
        blocking = sum(b for b, _ in violations)
        heading = (f"**Policy violations** ({blocking} mandatory: blocks the deployment)"
                   if blocking else "**Policy violations** (advisory)")
        parts.append("\n".join([heading, "", *(
            f"- {':no_entry:' if b else ':warning:'} {_cell(v)}" for b, v in violations)]))
    if warnings:
        parts.append("\n".join(["**Warnings**", "", *(f"- :warning: {_cell(w)}"
                                                      for w in warnings)]))
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


def diff_json(diff: StackPlanDiff) -> dict[str, Any]:
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
            {"key": v.key, "type": v.type, "name": v.name, "role": v.role, "model": v.model,
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
