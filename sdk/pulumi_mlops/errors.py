"""The one error type for bad input, and its translation from pydantic's errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

__all__ = ["InputError", "PlanFormatError", "Problem", "ProgramConfigError", "ValidationError"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input.

    Attributes:
        path: Dotted input path, e.g. ``database.storage_size``.
        rule: What the input must satisfy, e.g. ``must be at least 1``.
        value: The value received (already redacted where it is a secret).
        fix: How to fix it, addressed to the user.
    """

    path: str
    rule: str
    value: Any
    fix: str

    def render(self) -> str:
        """One line: path, rule, received value and fix."""
        return f"`{self.path}` {self.rule} (got {_show(self.value)}). Fix: {self.fix}"


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
    def single(cls, where: str, path: str, rule: str, value: Any, fix: str) -> ValidationError:
        """An error with exactly one problem."""
        return cls(where, [Problem(path, rule, value, fix)])

    @classmethod
    def from_pydantic(
        cls, where: str, exc: pydantic.ValidationError, prefix: str = ""
    ) -> ValidationError:
        """Translate pydantic's errors into ours, with a fix for each.

        Args:
            where: The component instance or config the inputs belong to.
            exc: Pydantic's error.
            prefix: Put before every input path (e.g. ``project:`` for config keys).
        """
        return cls(
            where, [p for err in exc.errors(include_url=False) for p in _problems(err, prefix)]
        )


class InputError(ValueError):
    """Raised by a validator to state the rule and the fix for its field.

    Pydantic wraps it into its own ValidationError; `ValidationError.from_pydantic` unwraps it.
    A model-level validator names the field it is about with ``field``.
    """

    def __init__(self, rule: str, fix: str, field: str = "") -> None:
        super().__init__(rule)
        self.rule = rule
        self.fix = fix
        self.field = field  # set by model-level validators: the field the rule is about


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _loc_to_path(loc: tuple[int | str, ...], prefix: str) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        elif (not item.startswith(("function-", "tagged-union[")) and item not in _UNION_TAGS
              and item != "[key]"):  # pydantic's marker for "the key itself" of a mapping
            parts.append(item)
    return prefix + ".".join(parts) if parts else prefix or "(root)"


# Readable names of the patterns inputs are checked against (filled by `_validation`).
PATTERN_DESCRIPTIONS: dict[str, str] = {}

# Inputs whose values never appear in an error message.
_SECRET_INPUTS = frozenset({"admin_password", "password", "uri", "backend_store_uri",
                            "dataset_headers"})

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


def _problems(err: Any, prefix: str) -> list[Problem]:
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("is-instance[")))
    path = _loc_to_path(loc, prefix)
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, ValidationError):
        # A nested model validated itself (its own __init__): keep its paths under ours.
        return [Problem(_join(path, p.path), p.rule, p.value,
                        p.fix.replace(f"`{p.path}`", f"`{_join(path, p.path)}`"))
                for p in cause.problems]
    value = err.get("input")
    if any(isinstance(x, str) and x in _SECRET_INPUTS for x in loc):
        value = "[redacted]"
    if isinstance(cause, InputError):
        if cause.field:
            path = _join(path, cause.field)
            value = value.get(cause.field) if isinstance(value, dict) else getattr(
                value, cause.field, value)
            if cause.field in _SECRET_INPUTS:
                value = "[redacted]"
        return [Problem(path, cause.rule, value, cause.fix)]
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
