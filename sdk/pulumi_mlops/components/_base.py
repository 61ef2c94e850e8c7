"""What every component does with its inputs before declaring anything."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, TypeVar

import pydantic

from pulumi_mlops._validation import check_resource_name
from pulumi_mlops.errors import ValidationError

A = TypeVar("A", bound=pydantic.BaseModel)


def build_args(
    component: str, name: str, args_type: type[A], args: A | None, kwargs: dict[str, Any]
) -> A:
    """Validated args from an args object or keyword arguments (exactly one of the two).

    Raises:
        ValidationError: naming the component, each bad input, the rule and the fix.
    """
    check_resource_name(component, name)
    where = f"{component} {name!r}"
    if args is not None and kwargs:
        raise ValidationError.single(
            where, "args", "Only one of `args` or keyword arguments can be provided",
            sorted(kwargs), "pass either an args object or keyword arguments, not both.",
        )
    if args is not None:
        if not isinstance(args, args_type):
            raise ValidationError.single(
                where, "args", f"must be a {args_type.__name__}", type(args).__name__,
                f"pass {args_type.__name__}(...) or keyword arguments.",
            )
        return args
    try:
        return args_type.model_validate(kwargs)
    except pydantic.ValidationError as exc:
        raise ValidationError.from_pydantic(where, exc) from None


# Components declared while a render is recording (see `pulumi_mlops.render.harness.record`).
DECLARED: ContextVar[list[Any] | None] = ContextVar("mlops_declared_components", default=None)


def note_declared(component: Any) -> None:
    """Let an active recording know about a component (demo and plan read their plans)."""
    declared = DECLARED.get()
    if declared is not None:
        declared.append(component)
