"""The one shape of every component: args → problems → plan → materialize → register outputs.

A component subclasses `Component`, names its args type and type token, and implements `_plan`
(pure, may raise `ValidationError`) and `_declare` (declares the children for the plan and
returns the outputs to register). Nothing is declared before the inputs and the plan are valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Generic, TypeVar

import pulumi
import pydantic

from pulumi_mlops._validation import ArgsModel, check_resource_name
from pulumi_mlops.contracts.model_uri import ModelRef
from pulumi_mlops.errors import ValidationError

__all__ = ["DECLARED", "Component", "build_args", "note_declared", "secret_data"]


A = TypeVar("A", bound=ArgsModel)
P = TypeVar("P")


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


class Component(pulumi.ComponentResource, Generic[A, P]):
    """Base of every mlops component.

    Subclasses set `kind` (the noun of the ``mlops:index:<kind>`` type token) and `args_type`,
    and implement `_plan` and `_declare`.
    """

    kind: ClassVar[str]
    args_type: ClassVar[type[ArgsModel]]

    args: A
    """The validated inputs."""
    plan: P
    """The target-neutral plan the component was built from."""
    type_token: str
    """``mlops:index:<kind>``."""
    component_name: str
    """The name it was declared with."""

    def __init__(self, name: str, args: A | None, opts: pulumi.ResourceOptions | None,
                 kwargs: dict[str, Any]) -> None:
        valid: A = build_args(self.kind, name, self.args_type, args, kwargs)  # type: ignore[assignment]
        problems = valid.problems()
        if problems:
            raise ValidationError(self.where(name), problems)
        plan = self._plan(name, valid)
        self.type_token, self.component_name = f"mlops:index:{self.kind}", name
        super().__init__(self.type_token, name, None, opts)
        self.args = valid
        self.plan = plan
        note_declared(self)
        self.register_outputs(dict(self._declare(name, valid, plan)))

    def where(self, name: str) -> str:
        """How error messages name this instance: ``ModelService 'fraud'``."""
        return f"{self.kind} {name!r}"

    def declared_models(self) -> Mapping[str, ModelRef]:
        """The registered model versions the component deploys, by role (a service's tracks),
        as a stack plan lists them for review. Default: none."""
        return {}

    def _plan(self, name: str, args: A) -> P:
        """The plan for ``args`` (pure; raises `ValidationError` for inputs it cannot plan)."""
        raise NotImplementedError

    def _declare(self, name: str, args: A, plan: P) -> Mapping[str, Any]:
        """Declare the children for ``plan``, set the output attributes, return the outputs."""
        raise NotImplementedError

    @property
    def _child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self)


def secret_data(values: Mapping[str, Any]) -> pulumi.Output[dict[str, str]]:
    """Secret data key → Pulumi input, as one Pulumi secret (a component's Secret's data)."""
    keys = sorted(values)
    return pulumi.Output.secret(pulumi.Output.all(*[values[k] for k in keys])
                                .apply(lambda v: dict(zip(keys, v, strict=True))))


# Components declared while a render is recording (see `pulumi_mlops.render.harness.record`).
DECLARED: ContextVar[list[Any] | None] = ContextVar("mlops_declared_components", default=None)


def note_declared(component: Any) -> None:
    """Let an active recording know about a component (demo and plan read their plans)."""
    declared = DECLARED.get()
    if declared is not None:
        declared.append(component)
