"""Kubernetes quantities as the materializers and the requests <= limits rule read them; what
a workload's sidecars may be."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pulumi_mlops.plans.workload import (
    ConfigFile,
    HttpCheck,
    Mount,
    Workload,
    cpu_cores,
    quantity_bytes,
)
from pulumi_mlops.targets.docker._containers import cpus


@pytest.mark.parametrize("quantity, cores", [
    ("500m", 0.5), ("250m", 0.25), ("1", 1.0), ("1.5", 1.5), ("2", 2.0), ("0.1", 0.1),
])
def test_cpu_quantities_keep_their_fraction(quantity: str, cores: float) -> None:
    assert cpu_cores(quantity) == pytest.approx(cores)


@pytest.mark.parametrize("quantity, expected", [
    ("512Mi", 512 * 2**20), ("1Gi", 2**30), ("1.5Gi", 3 * 2**29), ("1G", 10**9), ("100", 100),
])
def test_memory_quantities_in_bytes(quantity: str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected


def test_docker_cpus_of_a_fractional_limit() -> None:
    # As the provider reads `cpus` back from the engine (kreuzwerker's nanoInt64ToDecimalString).
    assert (cpus("1.5"), cpus("500m"), cpus("2"), cpus("250m")) == ("1.5", "0.5", "2.0", "0.25")


def test_every_container_gets_a_process_bound_and_the_init_container_a_small_one() -> None:
    from pulumi_mlops.errors import InputError
    from pulumi_mlops.plans.workload import INIT_RESOURCES, PIDS_LIMIT, Resources
    from pulumi_mlops.targets.docker._containers import limits

    assert Resources().pids_limit == PIDS_LIMIT == 4096
    assert limits(Resources())["ulimits"] == [{"name": "nproc", "soft": 4096, "hard": 4096}]
    assert limits(INIT_RESOURCES) == {
        "memory": 64, "memory_swap": 64, "cpus": "0.25",
        "ulimits": [{"name": "nproc", "soft": 32, "hard": 32}]}
    with pytest.raises((InputError, ValueError)):
        Resources(pids_limit=8)  # too few for a Python server's own threads


def _serving(name: str, *mounts: Mount) -> Workload:
    return Workload(name=name, image="i:1", command=("serve",), env={}, port=9101,
                    health=HttpCheck("/metrics"), mounts=mounts)


@pytest.mark.parametrize("sidecar", [
    # A mount the workload does not have, or has as a data volume.
    _serving("metrics", Mount("other", "/x", "scratch", "1Mi", read_only=True)),
    _serving("metrics", Mount("data", "/d", "data", "1Gi")),
    # A batch sidecar (nothing to serve, nothing to keep it alive beside a server).
    Workload(name="job", image="i:1", command=("run",), env={}, port=None, health=None),
    # Files and nested sidecars are not materialized for a sidecar.
    replace(_serving("metrics"), files=(ConfigFile("/etc/x", "y"),)),
    replace(_serving("metrics"), sidecars=(_serving("nested"),)),
], ids=["unknown-mount", "data-mount", "batch", "files", "nested"])
def test_a_sidecar_serves_and_mounts_only_its_workloads_scratch(sidecar: Workload) -> None:
    with pytest.raises(ValueError, match="sidecar"):
        Workload(name="main", image="i:1", command=("main",), env={}, port=5000,
                 health=HttpCheck("/health"),
                 mounts=(Mount("metrics", "/m", "scratch", "128Mi"),
                         Mount("data", "/d", "data", "1Gi")),
                 sidecars=(sidecar,))


def test_shared_mounts_are_those_a_sidecar_mounts() -> None:
    main = Workload(name="main", image="i:1", command=("main",), env={}, port=5000,
                    health=HttpCheck("/health"),
                    mounts=(Mount("metrics", "/m", "scratch", "128Mi"),
                            Mount("tmp", "/tmp", "scratch", "1Gi")),
                    sidecars=(_serving("metrics", Mount("metrics", "/m", "scratch", "128Mi",
                                                        read_only=True)),))
    assert main.shared_mounts() == frozenset({"metrics"})
