"""Read a stack's configuration into one validated pydantic model."""

from __future__ import annotations

import contextlib
import json
from typing import Any, TypeVar

import pulumi
import pydantic

from pulumi_mlops import _pulumi_compat as compat
from pulumi_mlops.errors import ValidationError

__all__ = ["UNKNOWN_SECRET_CONFIG", "load_config"]

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
            f"stack {pulumi.get_stack()!r} config", exc, prefix=f"{project}:"
        ) from None
