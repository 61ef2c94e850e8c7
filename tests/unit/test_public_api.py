"""The package's public surface: explicit, sorted, documented; the runtime needs no Pulumi."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pulumi_mlops as mlops


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert mlops.__all__ == sorted(mlops.__all__)
    assert set(mlops.__all__) == set(mlops._EXPORTS)
    for name in mlops.__all__:
        assert getattr(mlops, name) is not None


def test_every_public_name_has_a_docstring() -> None:
    for name in mlops.__all__:
        obj = getattr(mlops, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_the_serving_runtime_imports_without_pulumi() -> None:
    code = ("import sys; import pulumi_mlops.runtime.serve.server, pulumi_mlops.cli; "
            "print(sorted(m for m in sys.modules if m == 'pulumi' or m.startswith('pulumi.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
