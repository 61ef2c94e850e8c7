"""Read a stack's configuration into one validated pydantic model, and its entries as the
inputs of the components' own args models."""

from __future__ import annotations

import contextlib
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi
import pydantic
from pydantic import BaseModel
from pydantic.alias_generators import to_camel, to_snake
from pydantic.fields import FieldInfo

from pulumi_mlops import _pulumi_compat as compat
from pulumi_mlops.errors import (
    Problem,
    ValidationError,
    input_types,
    is_model,
    is_secret,
    step_into,
)

__all__ = ["UNKNOWN_SECRET_CONFIG", "ConfigInputs", "load_config"]

# What the render harness passes for an encrypted config value it cannot decrypt.
UNKNOWN_SECRET_CONFIG = "\x00mlops-render:unknown-secret\x00"


M = TypeVar("M", bound=pydantic.BaseModel)


def _stack_config(project: str) -> dict[str, Any]:
    """Every config value of ``project`` (keys without the ``project:`` prefix)."""
    raw = compat.raw_stack_config()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        namespace, _, name = key.partition(":")
        if namespace != project:
            continue
        # Objects and lists arrive JSON-encoded; a plain string (even "123") stays a string.
        if isinstance(value, str) and value[:1] in ("{", "["):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if value == UNKNOWN_SECRET_CONFIG:
            # A secret whose value is not known, as in a preview before it is computed.
            out[name] = compat.unknown_output(secret=True)
        elif compat.is_secret_config(key):
            out[name] = pulumi.Output.secret(value)
        else:
            out[name] = value
    return out


def load_config(model: type[M], project: str | None = None) -> M:
    """The stack's config for ``project`` (default: the current one), validated by ``model``.

    Unknown keys are rejected, so a typo cannot silently fall back to a default.

    Raises:
        ValidationError: naming each config key (``project:key.sub``), the rule and the fix.
    """
    project = project or pulumi.get_project()
    values = _stack_config(project)
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as exc:
        raise ValidationError.from_pydantic(
            f"stack {pulumi.get_stack()!r} config", exc, prefix=f"{project}:", model=model
        ) from None


# --------------------------------------------------------------------------- entries as args

Loc = tuple[str | int, ...]
KeyOf = str | Callable[[str], str]
"""Where an input the program sets itself comes from: its config key (a sub-input's key is
that key, a dot and the sub-input's path), or a function of the sub-input's path (``""`` for the
input itself)."""


@dataclass(frozen=True)
class ConfigInputs:
    """One stack config entry (``mlops:services.fraud`` …) read as the inputs of an args model.

    The entry is written as the args are, with camelCase keys; the args model is the schema:

    - A key naming an input of the model, camelCase (``minReplicas``) or as the input is
      named (``min_replicas``), becomes the input's name, in nested models too. The keys of a
      mapping input (``params``, the metrics of ``gates.min``) are kept as written, and so is
      an unknown key, for the model to reject.
    - A string given for a nested model that has a ``kind`` stands for that kind:
      ``database: postgres`` is ``database: {kind: postgres}``.
    - A mapping given for a nested model whose default is a model is laid over that default:
      ``resources: {cpuLimit: "4"}`` of a retrain schedule keeps its other defaults.

    `key` names the config key an input path of a `Problem` came from, so that the
    component's errors name what the user wrote.

    Attributes:
        entry: The entry's config key, e.g. ``mlops:services.fraud``.
        model: The args model.
        inputs: The inputs, by the model's input names.
        written: Each input location (as in ``inputs``) whose config key is not its camelCase
            name: the location as written.
        given: Inputs the program sets itself, by path: where their values come from.
        separator: Between the entry's key and an input's (``:`` for the top level).
    """

    entry: str
    model: type[BaseModel]
    inputs: Mapping[str, Any]
    written: Mapping[Loc, Loc] = field(default_factory=dict)
    given: Mapping[str, KeyOf] = field(default_factory=dict)
    separator: str = "."

    @classmethod
    def read(cls, entry: str, model: type[BaseModel], values: Mapping[str, Any], *,
             given: Mapping[str, KeyOf] | None = None, separator: str = ".") -> ConfigInputs:
        """The inputs of ``model`` that the config mapping ``values`` of ``entry`` gives.

        Args:
            entry: The entry's config key, e.g. ``mlops:services.fraud``.
            model: The args model the entry is passed to.
            values: The entry, as written.
            given: Inputs the program sets itself (the target, the registry), by path, and
                where their values come from; the entry must not set them.
            separator: Between ``entry`` and an input's key.

        Raises:
            ValidationError: when the entry sets an input the program sets.
        """
        written: dict[Loc, Loc] = {}
        inputs = _as_inputs(model, None, values, (), (), written)
        read = cls(entry, model, inputs, written, dict(given or {}), separator)
        problems = [problem for path, source in read.given.items()
                    if (problem := read._given_problem(path, source)) is not None]
        if problems:
            raise ValidationError(f"stack {pulumi.get_stack()!r} config", problems)
        return read

    def key(self, path: str) -> str:
        """The config key of the input at ``path`` (a `Problem`'s path, such as
        ``autoscaling.min_replicas``): ``mlops:services.fraud.autoscaling.minReplicas``."""
        segments = _segments(path)
        for given, source in self.given.items():
            head = _segments(given)
            if segments[:len(head)] == head:
                rest = _joined(segments[len(head):])
                if callable(source):
                    return source(rest)
                return f"{source}.{rest}" if rest else source
        written: Loc = ()
        annotations: list[Any] = [self.model]
        for i, segment in enumerate(segments):
            here = tuple(segments[:i + 1])
            if here in self.written:
                written = self.written[here]
            elif isinstance(segment, str) and any(
                    is_model(t) and segment in t.model_fields
                    for a in annotations for t, _ in input_types(a)):
                written = (*written, to_camel(segment))
            else:
                written = (*written, segment)  # a mapping's key, an index, an unknown input
            step = step_into(annotations, segment)
            annotations = step[0] if step is not None else annotations
        return f"{self.entry}{self.separator}{_joined(written)}" if written else self.entry

    def _given_problem(self, path: str, source: KeyOf) -> Problem | None:
        """The entry sets ``path``, which the program sets from ``source``."""
        value: Any = self.inputs
        segments = _segments(path)
        for segment in segments:
            if not isinstance(value, Mapping) or segment not in value:
                return None
            value = value[segment]
        origin = source("") if callable(source) else source
        if is_secret([self.model], segments):
            value = "[redacted]"
        written = self.written.get(tuple(segments), tuple(segments))
        return Problem(f"{self.entry}{self.separator}{_joined(written)}",
                       f"is set by the program, from `{origin}`", value,
                       f"remove it, and set `{origin}` instead.", related=(origin,))


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    return [t for t, _ in input_types(annotation) if is_model(t)]


def _as_inputs(annotation: Any, info: FieldInfo | None, value: Any, loc: Loc, written_loc: Loc,
               written: dict[Loc, Loc]) -> Any:
    """``value``, written at ``written_loc`` for an input typed ``annotation``, as the inputs
    of that type; where a key was not written as the input's camelCase name, ``written`` says
    where (by the input's location ``loc``)."""
    models = _models_of(annotation)
    if models:
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if isinstance(value, str) and "kind" in fields:
            written[(*loc, "kind")] = written_loc  # the kind alone: `database: postgres`
            return {"kind": value}
        if not isinstance(value, Mapping):
            return value
        inputs: dict[str, Any] = {}
        default = info.get_default(call_default_factory=True) if info is not None else None
        if isinstance(default, BaseModel):
            # Given in part, a nested input keeps its default for the rest.
            inputs.update(default.model_dump(exclude_defaults=True))
        for key, item in value.items():
            name = _input_name(key, fields)
            if not isinstance(name, str) or key != to_camel(name):
                written[(*loc, name)] = (*written_loc, key)
            inner = fields.get(name)
            inputs[name] = _as_inputs(inner.annotation if inner else Any, inner, item,
                                      (*loc, name), (*written_loc, key), written)
        return inputs
    for member, _ in input_types(annotation):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin in (list, tuple) and args and isinstance(value, list):
            return [_as_inputs(args[0], None, v, (*loc, i), (*written_loc, i), written)
                    for i, v in enumerate(value)]
        if origin in (dict, Mapping) and len(args) == 2 and isinstance(value, Mapping):
            return {k: _as_inputs(args[1], None, v, (*loc, k), (*written_loc, k), written)
                    for k, v in value.items()}
    return value


def _input_name(key: Any, fields: Mapping[str, FieldInfo]) -> Any:
    """The input a config key names: itself, or the input of its snake_case name; an unknown
    key as written."""
    if not isinstance(key, str) or key in fields:
        return key
    snake = to_snake(key)
    return snake if snake in fields else key


def _segments(path: str) -> list[str | int]:
    """An input path's parts: ``allowed_from[0].pod_labels`` → allowed_from, 0, pod_labels."""
    if path in ("", "(root)"):
        return []
    segments: list[str | int] = []
    for part in path.split("."):
        name, bracket, indexes = part.partition("[")
        if name:
            segments.append(name)
        for index in (indexes.removesuffix("]").split("][") if bracket else []):
            segments.append(int(index) if index.isdigit() else index)
    return segments


def _joined(loc: Loc | list[str | int]) -> str:
    """A location as a config key's tail: ``autoscaling.minReplicas``, ``allowFrom[0]``."""
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text
