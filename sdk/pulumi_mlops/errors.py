"""The one error type for bad input, and its translation from pydantic's errors."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import pydantic

__all__ = [
    "InputError",
    "PlanFormatError",
    "Problem",
    "ProgramConfigError",
    "SecretInput",
    "ValidationError",
    "input_types",
    "is_model",
    "is_secret",
    "register_model",
    "secret_inputs",
    "step_into",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input.

    The rule and the fix name inputs in backticks, each exactly as `path` or one of `related`
    reads (``must not exceed `max_replicas```), so that `renamed` can rename them there too:
    whoever reports the problem under other names (a stack's config keys) never parses the text.

    Attributes:
        path: Dotted input path, e.g. ``database.storage_size``.
        rule: What the input must satisfy, e.g. ``must be at least 1``.
        value: The value received (already redacted where it is a secret).
        fix: How to fix it, addressed to the user.
        related: Paths of the other inputs the rule or the fix names, e.g.
            ``("rollout.active",)`` beside ``model_uri`` for "Only one of `model_uri` or
            `rollout.active` can be provided". Default: none.
    """

    path: str
    rule: str
    value: Any
    fix: str
    related: tuple[str, ...] = ()

    def render(self) -> str:
        """One line: path, rule, received value and fix."""
        return f"`{self.path}` {self.rule} (got {_show(self.value)}). Fix: {self.fix}"

    def renamed(self, name: Callable[[str], str]) -> Problem:
        """The same problem with its input paths (its own and the related ones) renamed by
        ``name``, where the rule and the fix name them too: e.g. nested under a parent input,
        or as the config keys the values came from."""
        names = {p: name(p) for p in (self.path, *self.related)}
        return Problem(names[self.path], _rename(self.rule, names), self.value,
                       _rename(self.fix, names), tuple(names[p] for p in self.related))


def _rename(text: str, names: Mapping[str, str]) -> str:
    """``text`` with each backticked input path of ``names`` replaced by its new name."""
    parts = text.split("`")
    for i in range(1, len(parts) - 1, 2):  # the closed code spans
        parts[i] = names.get(parts[i], parts[i])
    return "`".join(parts)


class ValidationError(ValueError):
    """Bad input to a component, a target or a stack's config.

    Raised at construction, so at preview, before any resource is declared. The message names
    the component instance, each input path, the rule, the value received and how to fix it.
    """

    def __init__(self, where: str, problems: Iterable[Problem]) -> None:
        self.where = where
        self.problems = tuple(problems)
        lines = [p.render() for p in self.problems]
        if len(lines) == 1:
            message = f"{where}: {lines[0]}"
        else:
            listed = "\n".join(f"  - {x}" for x in lines)
            message = f"{where}: {len(lines)} invalid inputs:\n{listed}"
        super().__init__(message)

    @classmethod
    def single(cls, where: str, path: str, rule: str, value: Any, fix: str,
               related: tuple[str, ...] = ()) -> ValidationError:
        """An error with exactly one problem."""
        return cls(where, [Problem(path, rule, value, fix, related)])

    @classmethod
    def from_pydantic(
        cls, where: str, exc: pydantic.ValidationError, prefix: str = "",
        model: type[BaseModel] | None = None,
    ) -> ValidationError:
        """Translate pydantic's errors into ours, with a fix for each.

        Values of inputs marked `SecretInput` (`pulumi_mlops._validation.Secret`) are
        redacted, also where they are part of a value shown.

        Args:
            where: The component instance or config the inputs belong to.
            exc: Pydantic's error.
            prefix: Put before every input path (e.g. ``project:`` for config keys).
            model: The model that was validated. Default: the args model called like the
                error's title (every `ValidatedModel` is known by its name).
        """
        models = (model,) if model is not None else _MODELS.get(exc.title, ())
        return cls(where, [p for err in exc.errors(include_url=False)
                           for p in _problems(err, prefix, models)])


class InputError(ValueError):
    """Raised by a validator to state the rule and the fix for its field.

    Pydantic wraps it into its own ValidationError; `ValidationError.from_pydantic` unwraps it.
    A model-level validator names the field it is about with ``field``. Other inputs the rule
    or the fix names (in backticks) are listed in ``related``, by their paths relative to the
    validated model (siblings of a field validator's field): they become `Problem.related`.
    """

    def __init__(self, rule: str, fix: str, field: str = "",
                 related: tuple[str, ...] = ()) -> None:
        super().__init__(rule)
        self.rule = rule
        self.fix = fix
        self.field = field  # set by model-level validators: the field the rule is about
        self.related = related


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _loc_parts(loc: tuple[int | str, ...]) -> list[str]:
    """The input path's parts of pydantic's ``loc`` (list indexes joined to their list)."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        elif (not item.startswith(("function-", "tagged-union[")) and item not in _UNION_TAGS
              and item != "[key]"):  # pydantic's marker for "the key itself" of a mapping
            parts.append(item)
    return parts


def _path(parts: list[str], prefix: str) -> str:
    return prefix + ".".join(parts) if parts else prefix or "(root)"


# Readable names of the patterns inputs are checked against (filled by `_validation`).
PATTERN_DESCRIPTIONS: dict[str, str] = {}


# --------------------------------------------------------------------------- secrets


class SecretInput:
    """Marks an input whose value is a secret (``Annotated`` metadata; write
    `pulumi_mlops._validation.Secret`): its value never appears in an error message, nor
    anything under it (a mapping's values)."""

    def __repr__(self) -> str:
        return "SecretInput()"


# The validated models by name, which pydantic's errors carry as their title (filled by
# `_validation.ValidatedModel`): how an error's ``loc`` is walked through the model's fields.
_MODELS: dict[str, tuple[type[BaseModel], ...]] = {}


def register_model(model: type[BaseModel]) -> None:
    """Let `ValidationError.from_pydantic` find ``model``'s secret inputs by its name."""
    _MODELS[model.__name__] = (*_MODELS.get(model.__name__, ()), model)


def input_types(annotation: Any) -> Iterator[tuple[Any, bool]]:
    """The types an annotation admits (Annotated and unions unwrapped), each with whether it
    is marked secret."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        secret = any(isinstance(m, SecretInput) for m in metadata)
        yield from ((t, s or secret) for t, s in input_types(inner))
    elif origin in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            yield from input_types(member)
    else:
        yield annotation, False


def is_model(annotation: Any) -> bool:
    """Whether an annotation is a pydantic model class."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def step_into(annotations: Iterable[Any], item: int | str) -> tuple[list[Any], bool] | None:
    """The annotations one ``loc`` item further down, and whether that step crosses a secret
    input; None when ``item`` is no step of the input's structure (a union tag, a validator's
    name), which then stays where it is."""
    found: list[Any] = []
    secret = False
    for member, marked in (m for a in annotations for m in input_types(a)):
        secret = secret or marked
        origin, args = typing.get_origin(member), typing.get_args(member)
        if is_model(member) and isinstance(item, str) and item in member.model_fields:
            field = member.model_fields[item]
            secret = secret or any(isinstance(m, SecretInput) for m in field.metadata)
            found.append(field.annotation)
        elif isinstance(item, int) and origin in (list, tuple, set, frozenset) and args:
            found.append(args[0])
        elif origin in (dict, Mapping) and len(args) == 2 and isinstance(item, str):
            found.append(args[1])
    return (found, secret) if found or secret else None


def is_secret(models: Iterable[type[BaseModel]], loc: Iterable[int | str]) -> bool:
    """Whether the input at ``loc`` is (or is inside) a secret input of one of ``models``."""
    annotations: list[Any] = list(models)
    for item in loc:
        step = step_into(annotations, item)
        if step is None:
            continue
        annotations, secret = step
        if secret:
            return True
    return any(marked for a in annotations for _, marked in input_types(a))


def _redacted(models: Iterable[type[BaseModel]], loc: tuple[int | str, ...], value: Any) -> Any:
    """``value``, received at ``loc``, as an error message may show it: ``[redacted]`` for a
    secret input, and a mapping or list with the secret inputs inside it redacted."""
    models = tuple(models)
    if is_secret(models, loc):
        return "[redacted]"
    if isinstance(value, Mapping):
        return {k: _redacted(models, (*loc, k), v) if isinstance(k, str) else v
                for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_redacted(models, (*loc, i), v) for i, v in enumerate(value))
    return value


def secret_inputs(model: type[BaseModel]) -> tuple[str, ...]:
    """Every input path of ``model`` marked secret, nested models' included (e.g.
    ``database.uri``); an input of a list or mapping of models is written ``name[0]`` or
    ``name.<key>``."""
    found: list[str] = []

    def walk(annotation: Any, path: str, seen: frozenset[type]) -> None:
        for member, marked in input_types(annotation):
            if marked:
                found.append(path)
                return
            origin, args = typing.get_origin(member), typing.get_args(member)
            if is_model(member) and member not in seen:
                for name, field in member.model_fields.items():
                    here = f"{path}.{name}" if path else name
                    if any(isinstance(m, SecretInput) for m in field.metadata):
                        found.append(here)
                    else:
                        walk(field.annotation, here, seen | {member})
            elif origin in (list, tuple, set, frozenset) and args:
                walk(args[0], f"{path}[0]", seen)
            elif origin in (dict, Mapping) and len(args) == 2:
                walk(args[1], f"{path}.<key>", seen)

    walk(model, "", frozenset())
    return tuple(dict.fromkeys(found))

# Pydantic inserts union members' type names and discriminator tags (the target kinds) into
# `loc`; those are not user input paths.
_UNION_TAGS = frozenset(
    {"str", "int", "float", "bool", "Output", "Output[str]", "is-instance[Output]",
     "kubernetes", "docker"}
)


def _join(base: str, path: str) -> str:
    if base in ("", "(root)"):
        return path
    if path in ("", "(root)"):
        return base
    return f"{base}.{path}"


def _problems(err: Any, prefix: str, models: tuple[type[BaseModel], ...]) -> list[Problem]:
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("is-instance[")))
    parts = _loc_parts(loc)
    path = _path(parts, prefix)
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, ValidationError):
        # A nested model validated itself (its own __init__): keep its paths under ours.
        return [p.renamed(lambda q: _join(path, q)) for p in cause.problems]
    # A missing input received nothing (pydantic gives the mapping it is missing from).
    value = None if err["type"] == "missing" else _redacted(models, loc, err.get("input"))
    if isinstance(cause, InputError):
        if cause.field:
            # A model's validator: its field and the related inputs are the model's.
            received = err.get("input")
            received = (received.get(cause.field) if isinstance(received, dict)
                        else getattr(received, cause.field, received))
            value = _redacted(models, (*loc, cause.field), received)
            base, own = parts, cause.field
        else:
            # A field's validator: the related inputs are the field's siblings.
            base, own = parts[:-1], parts[-1] if parts else "(root)"
        problem = Problem(own, cause.rule, value, cause.fix, cause.related)
        return [problem.renamed(lambda q: _path([*base, q] if q != "(root)" else base, prefix))]
    kind = err["type"]
    described = PATTERN_DESCRIPTIONS.get(ctx.get("pattern", ""))
    if kind == "string_pattern_mismatch" and described:
        return [Problem(path, f"must be {described}", value, f"set `{path}` to {described}.")]
    known = _RULES.get(kind)
    if known is None:
        message = str(err["msg"])
        return [Problem(path, message[0].lower() + message[1:], value, f"correct `{path}`.")]
    rule, fix = known
    return [Problem(path, rule.format(**ctx), value, fix.format(path=path, **ctx))]


_RULES: dict[str, tuple[str, str]] = {
    "missing": ("is required", "provide `{path}`."),
    "extra_forbidden": (
        "is not a known input",
        "remove `{path}` or check its spelling against the documented inputs.",
    ),
    "greater_than_equal": ("must be at least {ge}", "set `{path}` to {ge} or more."),
    "greater_than": ("must be greater than {gt}", "set `{path}` to more than {gt}."),
    "less_than_equal": ("must be at most {le}", "set `{path}` to {le} or less."),
    "less_than": ("must be less than {lt}", "set `{path}` to less than {lt}."),
    "int_type": ("must be a whole number", "set `{path}` to an integer."),
    "int_parsing": ("must be a whole number", "set `{path}` to an integer."),
    "int_from_float": ("must be a whole number", "set `{path}` to an integer."),
    "bool_type": ("must be true or false", "set `{path}` to true or false."),
    "bool_parsing": ("must be true or false", "set `{path}` to true or false."),
    "string_type": ("must be a string", "set `{path}` to a string."),
    "list_type": ("must be a list", "set `{path}` to a list."),
    "dict_type": ("must be a mapping", "set `{path}` to a mapping of keys to values."),
    "model_type": ("has the wrong type", "pass the documented type for `{path}`."),
    "model_attributes_type": ("must be a mapping", "set `{path}` to a mapping of inputs."),
    "enum": ("must be one of {expected}", "set `{path}` to one of {expected}."),
    "literal_error": ("must be one of {expected}", "set `{path}` to one of {expected}."),
    "string_pattern_mismatch": (
        "must match the pattern `{pattern}`",
        "set `{path}` to a value matching `{pattern}`.",
    ),
    "string_too_short": (
        "must be at least {min_length} characters",
        "use at least {min_length} characters for `{path}`.",
    ),
    "string_too_long": (
        "must be at most {max_length} characters",
        "use at most {max_length} characters for `{path}`.",
    ),
    "too_short": (
        "must have at least {min_length} items",
        "give `{path}` at least {min_length} items.",
    ),
    "union_tag_invalid": (
        "must be one of {expected_tags}",
        "set `{path}` to one of {expected_tags}.",
    ),
    "union_tag_not_found": (
        "needs its `{discriminator}` field",
        "add `{discriminator}` to `{path}`.",
    ),
    "is_instance_of": ("has the wrong type", "pass a {class} for `{path}`."),
}


class ProgramConfigError(ValueError):
    """The program directory or its stack configuration cannot be read."""


class PlanFormatError(ValueError):
    """A file is not a plan this version of ``mlops`` can read."""
