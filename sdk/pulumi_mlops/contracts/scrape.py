"""Where Prometheus scrapes a workload, as components declare it and MonitoringStack reads it.

The ``prometheus.io/*`` annotations are the convention Prometheus' Kubernetes service
discovery examples relabel on; the ``mlops.dev/scrape`` label selects every scrapable Service.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REGISTRY_LABEL", "SCHEDULE_LABEL", "SCRAPE_LABEL", "SERVICE_LABEL", "TRACK_LABEL",
           "VERSION_LABEL", "ScrapeTarget"]

SCRAPE_LABEL = "mlops.dev/scrape"
"""Label (value ``"true"``) on every Service whose endpoints serve Prometheus metrics."""

# The target labels MonitoringStack's scrape configuration gives every series of a model
# service, and its rules and dashboards select and aggregate by.
SERVICE_LABEL = "service"
"""The ModelService's name."""
TRACK_LABEL = "track"
"""The rollout track that answered: ``stable``, ``canary``, ``shadow`` or ``preview``."""
VERSION_LABEL = "version"
"""The model version the replica serves (the registry's version number)."""
REGISTRY_LABEL = "registry"
"""The target label of a ModelRegistry's series: its name."""
SCHEDULE_LABEL = "schedule"
"""The target label of a retrain scheduler's series (Docker): the scheduler container's name."""


@dataclass(frozen=True)
class ScrapeTarget:
    """A workload's metrics endpoint.

    Attributes:
        port: The TCP port its server listens on.
        path: The HTTP path of the Prometheus exposition.
    """

    port: int
    path: str = "/metrics"

    def annotations(self) -> dict[str, str]:
        """The ``prometheus.io/*`` annotations for the workload's pods and Service."""
        return {"prometheus.io/scrape": "true", "prometheus.io/port": str(self.port),
                "prometheus.io/path": self.path}
