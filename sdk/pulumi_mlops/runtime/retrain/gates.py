"""The retrain job's gates: the new version's holdout metrics against absolute minimums and
maximums, and against the champion's (least improvement, largest regression). Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pulumi_mlops.runtime.retrain.config import Gates

__all__ = ["HIGHER_IS_BETTER", "GateResult", "apply_gates"]

HIGHER_IS_BETTER: Final[Mapping[str, bool]] = {
    "accuracy": True, "f1": True, "roc_auc": True, "log_loss": False,
    "rmse": False, "mae": False, "r2": True,
}
"""Direction of each metric the job computes."""


@dataclass(frozen=True)
class GateResult:
    """One gate on one metric.

    Attributes:
        gate: ``min``, ``max``, ``min_improvement`` or ``max_regression``.
        metric: The metric.
        threshold: The configured value.
        value: The new version's metric (None when not computed).
        champion: The champion's metric (None when there is no champion or it lacks it).
        passed: Whether the gate passed.
        reason: One line: what was compared.
    """

    gate: str
    metric: str
    threshold: float
    value: float | None
    champion: float | None
    passed: bool
    reason: str


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def apply_gates(new_metrics: Mapping[str, float], champion_metrics: Mapping[str, float] | None,
                gates: Gates) -> list[GateResult]:
    """Check the new version's metrics against every gate.

    A missing or non-finite metric fails its gate. Improvement and regression gates pass when
    there is no champion (``champion_metrics`` None); with a champion that lacks the metric they
    fail. For ``log_loss``, ``rmse`` and ``mae`` (lower is better) an improvement is a decrease.

    Returns:
        One result per configured (gate, metric), in the order min, max, min_improvement,
        max_regression and metric name.
    """
    results: list[GateResult] = []

    def add(gate: str, metric: str, threshold: float, check: Any) -> None:
        value = new_metrics.get(metric)
        champ = None if champion_metrics is None else champion_metrics.get(metric)
        if not _finite(value):
            results.append(GateResult(gate, metric, threshold, value, champ, False,
                                      f"{metric} was not computed (or is not finite)"))
            return
        assert value is not None
        passed, reason = check(value, champ)
        results.append(GateResult(gate, metric, threshold, value, champ, passed, reason))

    for metric, t in sorted(gates.min.items()):
        add("min", metric, t, lambda v, _c, t=t: (v >= t, f"{v:.4f} >= {t:g}"))
    for metric, t in sorted(gates.max.items()):
        add("max", metric, t, lambda v, _c, t=t: (v <= t, f"{v:.4f} <= {t:g}"))

    def relative(kind: str, metric: str, t: float) -> Any:
        sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0

        def check(v: float, c: float | None) -> tuple[bool, str]:
            if champion_metrics is None:
                return True, "no champion to compare with"
            if not _finite(c):
                return False, f"the champion's {metric} was not computed"
            assert c is not None
            improvement = sign * (v - c)
            if kind == "min_improvement":
                return improvement >= t, f"improvement {improvement:+.4f} >= {t:g}"
            return -improvement <= t, f"regression {-improvement:+.4f} <= {t:g}"

        return check

    for metric, t in sorted(gates.min_improvement.items()):
        add("min_improvement", metric, t, relative("min_improvement", metric, t))
    for metric, t in sorted(gates.max_regression.items()):
        add("max_regression", metric, t, relative("max_regression", metric, t))
    return results
