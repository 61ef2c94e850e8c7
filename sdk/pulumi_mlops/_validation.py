"""Patterns and validators shared by the args models."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import pulumi
import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pulumi_mlops.errors import (
    PATTERN_DESCRIPTIONS,
    InputError,
    Problem,
    SecretInput,
    ValidationError,
    register_model,
)

T = TypeVar("T")

Secret = Annotated[T, SecretInput(), Field(repr=False)]
"""An input whose value is a secret (``admin_password: Secret[Any] = None``): error messages
show ``[redacted]`` instead of it, also inside a value shown, and the model's repr leaves it
out. Mark by type, not by name: a ``model_uri`` is shown, a ``Database.uri`` is not."""

# RFC 1123 label, as Kubernetes requires for most object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A Kubernetes resource quantity, e.g. 250m, 1.5, 512Mi, 10Gi.
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"

HOSTNAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

PATTERN_DESCRIPTIONS.update({
    DNS_LABEL: "a lowercase DNS label: letters, digits and '-', e.g. 'ml-platform'",
    LABEL_VALUE: "a Kubernetes label value: letters, digits, '-', '_' and '.'",
    QUANTITY: "a Kubernetes quantity such as 500m, 2, 512Mi or 10Gi",
    HOSTNAME: "a lowercase DNS name such as mlflow.example.com",
})

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise InputError("must be a network in CIDR notation with no host bits set",
                         "use e.g. '10.20.0.0/16' or '203.0.113.7/32'.") from None


Cidr = Annotated[str, AfterValidator(_cidr)]
"""An IPv4 or IPv6 network, e.g. ``10.20.0.0/16`` (NetworkPolicy ``ipBlock``)."""


class ValidatedModel(BaseModel):
    """A pydantic model whose direct construction raises the project's `ValidationError`.

    Nested models validated as part of a parent raise through the parent instead, which names
    the full input path.
    """

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise ValidationError.from_pydantic(type(self).__name__, exc,
                                                model=type(self)) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # Errors of a validation by name (``Args.model_validate``) find its secret inputs.
        register_model(cls)


class ArgsModel(ValidatedModel):
    """Base of every component's args: immutable, unknown inputs rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def problems(self) -> list[Problem]:
        """Rules that span several inputs (each a `Problem`); none unless an args type says."""
        return []


def check_resource_name(component: str, name: str, max_length: int = 40) -> None:
    """Component names become Kubernetes object and DNS names, so they must be DNS labels."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > max_length:
        raise ValidationError.single(
            f"{component} {name!r}",
            "name",
            f"must be a lowercase DNS label of at most {max_length} characters "
            "(letters, digits and '-', starting with a letter)",
            name,
            "rename the component, e.g. 'fraud-registry'.",
        )


def check_secret_input(value: Any, check: Callable[[str], None]) -> Any:
    """Validate a secret input: a plain string now; an Output once known (by the component)."""
    if value is None or isinstance(value, pulumi.Output):
        return value
    if not isinstance(value, str):
        raise InputError("must be a string or a Pulumi output", "pass a string secret.")
    check(value)
    return value
