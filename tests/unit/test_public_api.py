"""The package's public surface: explicit, sorted, documented."""

from __future__ import annotations

import inspect

import pulumi_mlops as mlops


def test_all_is_sorted_and_complete() -> None:
    assert mlops.__all__ == sorted(mlops.__all__)
    # Submodules appear as attributes once imported anywhere; they are not re-exports.
    public = {n for n, v in vars(mlops).items()
              if not n.startswith("_") and not inspect.ismodule(v)}
    assert set(mlops.__all__) == public


def test_every_public_name_has_a_docstring() -> None:
    for name in mlops.__all__:
        obj = getattr(mlops, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
