"""Generate the "Inputs" table of each component's docs page from its args model.

The args model is the single source: input names, types (with their bounds) and defaults come
from pydantic's ``model_fields``, descriptions from the ``Attributes:`` section of the args
class's docstring (its "Default: ..." prose included). Each page holds its table under a
heading ``Inputs (`<ArgsClass>`)``; ``tests/unit/test_docs.py`` fails when a page's table is
not the generated one.

Run it with the project's interpreter (``make docs``)::

    .venv/bin/python scripts/docs_tables.py           # exit 1 if a page's table is stale
    .venv/bin/python scripts/docs_tables.py --write   # rewrite the tables in place
    .venv/bin/python scripts/docs_tables.py --gaps    # inputs whose docstring is incomplete

Pure: it imports only ``pulumi_mlops.plans``, ``.errors`` and ``.contracts``, and touches nothing
but the pages it is asked to rewrite.
"""

from __future__ import annotations

import argparse
import ast
import enum
import inspect
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pulumi_mlops.contracts.version import __version__
from pulumi_mlops.errors import PATTERN_DESCRIPTIONS
from pulumi_mlops.plans.image import RuntimeImageArgs
from pulumi_mlops.plans.monitoring_stack import MonitoringStackArgs
from pulumi_mlops.plans.registry import ModelRegistryArgs
from pulumi_mlops.plans.retrain import RetrainScheduleArgs
from pulumi_mlops.plans.service import ModelServiceArgs

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"

# Each component's page and the args model its Inputs table is generated from.
PAGES: dict[str, type[BaseModel]] = {
    "model-registry.md": ModelRegistryArgs,
    "model-service.md": ModelServiceArgs,
    "monitoring-stack.md": MonitoringStackArgs,
    "retrain-schedule.md": RetrainScheduleArgs,
    "runtime-image.md": RuntimeImageArgs,
}

HEADER = "| Input | Type | Default | Description |"
RULE = "|---|---|---|---|"
VERSION = "<pulumi-mlops version>"


def note(model: type[BaseModel]) -> str:
    """The comment above a generated table, telling editors where its text comes from."""
    return (f"<!-- Generated from {model.__name__} by `make docs` "
            "(scripts/docs_tables.py): edit the docstring, not this table. -->")


# --------------------------------------------------------------------------- docstrings


def attributes(model: type[BaseModel]) -> dict[str, str]:
    """The ``Attributes:`` section of the class docstring: name -> text (lines joined)."""
    doc = inspect.cleandoc(model.__doc__ or "")
    found: dict[str, str] = {}
    lines = iter(doc.splitlines())
    for line in lines:
        if line.strip() == "Attributes:":
            break
    indent: int | None = None
    name = ""
    for line in lines:
        if not line.strip():
            if found:
                break
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        match = re.match(r"(\w+): ?(.*)$", line.strip())
        if depth == indent and match:
            name = match[1]
            found[name] = match[2]
        elif name:
            found[name] = f"{found[name]} {line.strip()}".strip()
    return found


def _markdown(text: str) -> str:
    """Docstring markup as Markdown inside a table cell."""
    return text.replace("``", "`").replace("|", "\\|")


# --------------------------------------------------------------------------- types


def _type_name(annotation: Any) -> str:
    if annotation is Any:
        return "Any"
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _constraints(metadata: list[Any]) -> list[str]:
    """Bounds and patterns, in words."""
    bounds = {kind: getattr(m, kind) for m in metadata
              for kind in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
              if getattr(m, kind, None) is not None}
    said: list[str] = []
    if "ge" in bounds and "le" in bounds:
        said.append(f"{_number(bounds['ge'])}\N{EN DASH}{_number(bounds['le'])}")
    else:
        limits = [f"{sign} {_number(bounds[kind])}" for kind, sign in
                  (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")) if kind in bounds]
        said += [" and ".join(limits)] if limits else []
    if bounds.get("min_length") == 1:
        said.append("not empty")
    elif "min_length" in bounds:
        said.append(f"at least {bounds['min_length']} characters")
    if "max_length" in bounds:
        said.append(f"at most {bounds['max_length']} characters")
    described = PATTERN_DESCRIPTIONS.get(str(bounds.get("pattern", "")))
    if described:
        said.append(described)
    return said


def _parts(annotation: Any, metadata: list[Any]) -> Iterator[tuple[Any, list[Any]]]:
    """The (type, its metadata) of each member of a union, Annotated unwrapped."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            yield from _parts(member, [])
    elif typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        more = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        yield from _parts(inner, metadata + more)
    else:
        yield annotation, metadata


def type_cell(field: FieldInfo) -> str:
    """The input's type, without ``None`` when that is its default, and what it accepts."""
    members = [(t, m) for t, m in _parts(field.annotation, list(field.metadata))
               if not (t is type(None) and field.default is None)]
    cell = "`" + " | ".join(_type_name(t) for t, _ in members) + "`"
    said = [c for _, m in members for c in _constraints(m)]
    for member, _ in members:
        if isinstance(member, type) and issubclass(member, enum.Enum):
            said.append("one of " + ", ".join(f"`{m.name}`" for m in member))
        for item in typing.get_args(member):
            item_said = [c for _, m in _parts(item, []) for c in _constraints(m)]
            if item_said:
                said.append("each " + ", ".join(item_said))
    return _markdown(cell + (": " + "; ".join(said) if said else ""))


# --------------------------------------------------------------------------- defaults


def _literal(value: Any) -> str:
    """A default value as Python source, the package version written as a placeholder."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, str):
        text = value if value != __version__ else VERSION
        text = re.sub(rf":{re.escape(__version__)}$", f":{VERSION}", text)
        return '"' + text.replace('"', '\\"') + '"'
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        given = [f"{name}={_literal(getattr(value, name))}" for name, field in fields.items()
                 if field.default is PydanticUndefined
                 or getattr(value, name) != field.default]
        return f"{type(value).__name__}({', '.join(given)})"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return _number(value)


def _is_public(name: str) -> bool:
    return not any(part.startswith("_") or part == "<lambda>" for part in name.split("."))


def _lambda_source(factory: Callable[..., Any]) -> str | None:
    """The expression a ``default_factory=lambda: ...`` returns, when it names public things."""
    try:
        source = textwrap.dedent(inspect.getsource(factory))
    except (OSError, TypeError):
        return None
    # getsource gives the lambda's whole line, e.g. `x: T = Field(default_factory=lambda: ...)`.
    tree = None
    for candidate in (source, f"({source.strip().rstrip(',')})", f"_ = {source.strip()}"):
        try:
            tree = ast.parse(candidate)
            break
        except SyntaxError:
            continue
    lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)] if tree else []
    if len(lambdas) != 1:
        return None
    body = lambdas[0].body
    try:
        return _literal(ast.literal_eval(body))
    except ValueError:
        pass
    names = [n.id for n in ast.walk(body) if isinstance(n, ast.Name)]
    names += [n.attr for n in ast.walk(body) if isinstance(n, ast.Attribute)]
    return ast.unparse(body) if all(_is_public(n) for n in names) else None


def default_cell(field: FieldInfo) -> str:
    """The default from ``model_fields``; a ``default_factory`` as the call it makes."""
    factory = field.default_factory
    if factory is None:
        if field.default is PydanticUndefined:
            return "required"
        return f"`{_literal(field.default)}`"
    empty = {list: "[]", dict: "{}", set: "set()", tuple: "()"}
    if factory in empty:
        return f"`{empty[factory]}`"
    name = getattr(factory, "__qualname__", "")
    if _is_public(name) and (isinstance(factory, type) or inspect.ismethod(factory)):
        return f"`{name}()`"
    source = _lambda_source(factory) if name.endswith("<lambda>") else None
    if source is not None:
        return f"`{source}`"
    return f"`{_literal(factory())}`"  # type: ignore[call-arg]


# --------------------------------------------------------------------------- tables


def table(model: type[BaseModel]) -> list[str]:
    """The generated block: the note, then the table (one row per input, in field order)."""
    described = attributes(model)
    rows = [note(model), HEADER, RULE]
    for name, field in model.model_fields.items():
        text = _markdown(described.get(name, ""))
        rows.append(f"| `{name}` | {type_cell(field)} | {default_cell(field)} | {text} |")
    return rows


class PageError(Exception):
    """A page without the heading or the table its inputs belong under."""


def _heading(model: type[BaseModel]) -> re.Pattern[str]:
    return re.compile(rf"^#{{2,4}} Inputs \(`{model.__name__}`\)$")


@dataclass(frozen=True)
class Found:
    """Where a page's table is: lines ``start`` to ``end`` (exclusive) of ``lines``."""

    lines: list[str]
    start: int
    end: int

    @property
    def block(self) -> list[str]:
        """The page's current table (with the note above it, when there is one)."""
        return self.lines[self.start:self.end]


def locate(page: Path, model: type[BaseModel]) -> Found:
    """The table under the page's ``Inputs (`<ArgsClass>`)`` heading."""
    lines = page.read_text().splitlines()
    heading = next((i for i, line in enumerate(lines) if _heading(model).match(line)), None)
    if heading is None:
        raise PageError(f"docs/{page.name}: no heading '## Inputs (`{model.__name__}`)'")
    start = next((i for i in range(heading + 1, len(lines))
                  if lines[i].startswith(("|", "<!-- Generated"))), None)
    if start is None or any(lines[i].startswith("#") for i in range(heading + 1, start)):
        raise PageError(f"docs/{page.name}: no table under '## Inputs (`{model.__name__}`)'")
    end = start + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return Found(lines, start, end)


def first_difference(page: str) -> str | None:
    """None when the page's table is the generated one, else the first differing row."""
    model = PAGES[page]
    found = locate(DOCS / page, model)
    want = table(model)
    for have, should in zip(found.block, want, strict=False):
        if have != should:
            return f"first differing row:\n  page:      {have}\n  generated: {should}"
    if len(found.block) > len(want):
        return f"a row only in the page: {found.block[len(want)]}"
    if len(found.block) < len(want):
        return f"a row missing from the page: {want[len(found.block)]}"
    return None


def write(page: str) -> bool:
    """Rewrite the page's table; whether it changed."""
    model = PAGES[page]
    path = DOCS / page
    found = locate(path, model)
    lines = found.lines[:found.start] + table(model) + found.lines[found.end:]
    text = "\n".join(lines) + "\n"
    if text == path.read_text():
        return False
    path.write_text(text)
    return True


# --------------------------------------------------------------------------- gaps


def gaps(model: type[BaseModel]) -> list[str]:
    """Inputs the docstring does not describe, or whose default it does not state."""
    described = attributes(model)
    found = [f"`{name}`: not in the `Attributes:` section"
             for name in model.model_fields if name not in described]
    found += [f"`{name}`: in the `Attributes:` section but not an input"
              for name in described if name not in model.model_fields]
    found += [f"`{name}`: optional, but its description says nothing about the default"
              for name, field in model.model_fields.items()
              if not field.is_required() and name in described
              and "Default:" not in described[name]]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in place")
    mode.add_argument("--gaps", action="store_true",
                      help="list inputs whose docstring is missing or says no default")
    args = parser.parse_args(argv)
    try:
        return _run(args.write, args.gaps)
    except PageError as exc:
        print(exc, file=sys.stderr)
        return 1


def _run(rewrite: bool, list_gaps: bool) -> int:
    status = 0
    for page, model in PAGES.items():
        if rewrite:
            print(f"docs/{page}: {'rewritten' if write(page) else 'up to date'}")
        elif list_gaps:
            for gap in gaps(model):
                print(f"{model.__name__} (docs/{page}): {gap}")
        else:
            difference = first_difference(page)
            if difference is not None:
                print(f"docs/{page}: the Inputs table is not the one generated from "
                      f"{model.__name__} ({difference}); run `make docs`", file=sys.stderr)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
