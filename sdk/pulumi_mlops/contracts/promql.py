"""PromQL over the metric contract that both sides spell alike: MonitoringStack's rules (SDK
side) and ``mlops canary-check`` (runtime side, which may import `pulumi_mlops.contracts` but
not `pulumi_mlops.plans`). One spelling of "the 5xx ratio" or "the p99 per track", so the
canary check judges what the ``mlops:track_*`` rules and the ``MlopsCanaryWorseThanStable``
alert record.

Pure string building from the names of `pulumi_mlops.contracts.metrics` and the target labels
of `pulumi_mlops.contracts.scrape`; standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulumi_mlops.contracts import metrics as m
from pulumi_mlops.contracts.scrape import SERVICE_LABEL, TRACK_LABEL

__all__ = ["CANARY_TRACK", "SERVER_ERROR", "SERVING_TRACKS", "STABLE_TRACK", "error_ratio",
           "feedback_increase", "latency_quantile", "request_increase", "select"]

SERVER_ERROR = '=~"5.."'
"""The `~pulumi_mlops.contracts.metrics.CODE_LABEL` matcher of an answer that failed the
client (a 4xx is the client's own error)."""
SERVING_TRACKS = '!~"shadow|preview"'
"""The `TRACK_LABEL` matcher of the tracks whose answers reach clients (a shadow's are
discarded, a preview is not routed)."""
CANARY_TRACK = "canary"
"""The `TRACK_LABEL` value of a canary rollout's candidate."""
STABLE_TRACK = "stable"
"""The `TRACK_LABEL` value of the model serving most traffic."""


def select(service: str | None, **matchers: str) -> str:
    """A label selector: ``service`` (when given) and ``matchers``, each ``label=matcher``
    with the operator included (``code='=~"5.."'``); empty for no label."""
    labels = [f'{SERVICE_LABEL}="{service}"'] if service is not None else []
    labels += [f"{k}{v}" for k, v in matchers.items()]
    return "{" + ",".join(labels) + "}" if labels else ""


def error_ratio(service: str | None, window: str = "5m",
                by: Sequence[str] = (SERVICE_LABEL,), *, serving_only: bool = False) -> str:
    """Share of scoring requests answered with a 5xx, all replicas, per ``by`` labels (of one
    service, or of every service). 0, not no data, while a service answers no 5xx. With
    ``serving_only``, the tracks clients do not reach (shadow, preview) are left out."""
    tracks = {TRACK_LABEL: SERVING_TRACKS} if serving_only else {}
    every = f"{m.REQUESTS}_total{select(service, **tracks)}"
    errors = m.REQUESTS + "_total" + select(service, **{m.CODE_LABEL: SERVER_ERROR}, **tracks)
    group = ", ".join(by)
    return (f"sum by ({group}) (\n  rate({errors}[{window}])\n  or\n  0 * rate({every}"
            f"[{window}])\n)\n/\nsum by ({group}) (rate({every}[{window}]))")


def latency_quantile(service: str, quantile: float = 0.99, window: str = "5m",
                     by: Sequence[str] = (SERVICE_LABEL,)) -> str:
    """The ``quantile`` of ``service``'s scoring latency in seconds, all replicas, per ``by``
    labels."""
    group = ", ".join([*by, "le"])
    return (f"histogram_quantile({quantile}, sum by ({group}) "
            f"(rate({m.REQUEST_DURATION}_bucket{select(service)}[{window}])))")


def request_increase(service: str, window: str, by: Sequence[str] = (SERVICE_LABEL,)) -> str:
    """Scoring requests ``service`` answered over ``window``, any status, per ``by`` labels."""
    return (f"sum by ({', '.join(by)}) "
            f"(increase({m.REQUESTS}_total{select(service)}[{window}]))")


def feedback_increase(counter: str, service: str, window: str,
                      by: Sequence[str] = (SERVICE_LABEL,), **matchers: str) -> str:
    """How much a feedback ``counter`` (a name of `pulumi_mlops.contracts.metrics` without
    ``_total``: `~pulumi_mlops.contracts.metrics.FEEDBACK`, ``FEEDBACK_CORRECT`` ...) grew over
    ``window``, per ``by`` labels."""
    return (f"sum by ({', '.join(by)}) "
            f"(increase({counter}_total{select(service, **matchers)}[{window}]))")
