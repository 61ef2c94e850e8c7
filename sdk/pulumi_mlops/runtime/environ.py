"""Process environment set for a block: the MLflow client reads its tracking URI and
credentials from the environment on every request, so talking to one registry, then another,
in one process means setting them around each conversation."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

__all__ = ["environment"]


@contextlib.contextmanager
def environment(variables: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a value) or unset (None) ``variables`` in ``os.environ``; restore them after."""
    saved = {key: os.environ.get(key) for key in variables}
    try:
        _apply(variables)
        yield
    finally:
        _apply(saved)


def _apply(variables: Mapping[str, str | None]) -> None:
    for key, value in variables.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
