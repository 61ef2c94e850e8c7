"""Stand-ins for the two images the dev stack takes from registries no test here can reach.

- The runtime ``Dockerfile``'s base (``FROM python:3.11.<n>-slim-bookworm AS base``): a Debian
  bookworm root filesystem from ``debootstrap --variant=minbase`` with Debian's Python, imported
  with ``docker import`` and tagged with exactly the name the Dockerfile uses. Bookworm's Python
  has the same minor version (checked against the tag), and like the official image it has
  ``python`` and ``pip`` usable without PEP 668's marker. The host's CA bundle goes in and
  ``PIP_CERT`` points at it, so ``pip install`` inside builds verifies the package index as the
  host does.
- The registry's MLflow image (``ghcr.io/mlflow/mlflow:v<version>-full``): built from that base
  with the pinned MLflow version and the extras the official ``-full`` image installs
  (`MLFLOW_FULL_PACKAGES`), tagged with the name the plan declares.
- MonitoringStack's Prometheus image (``prom/prometheus:v<version>``): Debian's ``prometheus``
  package on that base (bookworm ships 2.42, older than the tag: the rules and config the plan
  renders are also checked with this version's promtool).

Each stand-in carries a label with a hash of its recipe; a run that finds an image with the
same label reuses it (the daemon's data root is kept between runs, see `daemon`). The runtime
image itself is not built here: the apply harness builds it from the recorded
``docker.Image`` resource, as ``pulumi up`` would, and the daemon's build cache makes a second
build quick.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import docker

from tests.docker_engine.daemon import Daemon

RECIPE_LABEL = "dev.pulumi-mlops.test/recipe"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA_BUNDLE = "/usr/local/share/ca-certificates/host-ca-bundle.crt"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
DEBIAN_PYTHON_MINOR = "3.11"
"""Python's minor version in Debian bookworm."""

MLFLOW_FULL_PACKAGES = ("mlflow[extras,azure,db,gateway,genai,auth]=={version}",)
"""What the official ``-full`` image installs on ``python:3.11-slim-bookworm``, and nothing
else (mlflow/mlflow ``docker/Dockerfile.full``: one ``pip install`` of these extras)."""

_FROM_BASE = re.compile(r"^FROM\s+(\S+)\s+AS\s+base\s*$", re.IGNORECASE | re.MULTILINE)
_MLFLOW_TAG = re.compile(r"^ghcr\.io/mlflow/mlflow:v(?P<version>\d+\.\d+\.\d+)-full$")
_PROMETHEUS_TAG = re.compile(r"^prom/prometheus:v\d+\.\d+\.\d+$")
PROMETHEUS_PACKAGES = ("prometheus", "wget")
"""Debian's Prometheus (2.42 on bookworm) and the wget the official image's health check
uses (its busybox has one)."""


class ImageBuildError(RuntimeError):
    """A stand-in image could not be built."""


def dockerfile_base(dockerfile: Path) -> str:
    """The image name the runtime Dockerfile's ``base`` stage starts from."""
    found = _FROM_BASE.search(dockerfile.read_text())
    if found is None:
        raise ImageBuildError(f"{dockerfile} has no `FROM <image> AS base` line")
    return found.group(1)


def _recipe(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _current(client: docker.DockerClient, name: str, recipe: str) -> bool:
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return bool((image.labels or {}).get(RECIPE_LABEL) == recipe)


def _unmount_under(root: Path) -> None:
    prefix = str(root.resolve())
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")),
                        reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def ensure_python_base(daemon: Daemon, name: str) -> bool:
    """Build the Debian stand-in for ``name`` (a ``python:3.11…-bookworm`` tag) unless current.

    Returns:
        Whether it was built (False: reused).
    """
    match = re.match(r"^python:(\d+\.\d+)[.\w-]*-(\w+)$", name)
    if match is None or match.group(1) != DEBIAN_PYTHON_MINOR or match.group(2) != DEBIAN_SUITE:
        raise ImageBuildError(
            f"the Dockerfile's base {name!r} is not a python:{DEBIAN_PYTHON_MINOR}.*-"
            f"{DEBIAN_SUITE} tag; the stand-in is Debian {DEBIAN_SUITE}'s Python "
            f"{DEBIAN_PYTHON_MINOR}, so the test environment would not match the image")
    ca = HOST_CA_BUNDLE.read_bytes()
    recipe = _recipe("base", name, DEBIAN_SUITE, *DEBIAN_PACKAGES, hashlib.sha256(ca).hexdigest())
    client = daemon.client()
    if _current(client, name, recipe):
        return False
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: run scripts/system-deps.sh")
    with tempfile.TemporaryDirectory(prefix="mlops-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        try:
            run = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                 DEBIAN_SUITE, str(root)],
                capture_output=True, text=True, timeout=900, check=False)
        finally:
            # An interrupted debootstrap leaves proc/sys mounted in the chroot: unmount them
            # before the directory is removed.
            _unmount_under(root)
        if run.returncode != 0:
            raise ImageBuildError(f"debootstrap failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
        (root / "usr/bin/python").symlink_to("python3")
        (root / "usr/bin/pip").unlink(missing_ok=True)
        (root / "usr/bin/pip").symlink_to("pip3")
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        (root / IMAGE_CA_BUNDLE.lstrip("/")).write_bytes(ca)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / cache, ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        repository, tag = name.rsplit(":", 1)
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"ENV PIP_CERT={IMAGE_CA_BUNDLE}",
            f"LABEL {RECIPE_LABEL}={recipe}",
            'CMD ["python3"]',
        ]
        with archive.open("rb") as data:
            client.api.import_image_from_data(data.read(), repository=repository, tag=tag,
                                              changes=changes)
    if not _current(client, name, recipe):
        raise ImageBuildError(f"docker import did not produce {name}")
    return True


def _build(daemon: Daemon, name: str, dockerfile: str, recipe: str) -> None:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = (dockerfile + f"\nLABEL {RECIPE_LABEL}={recipe}\n").encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        daemon.client().images.build(fileobj=context, custom_context=True, tag=name, rm=True,
                                     forcerm=True, network_mode="host", pull=False)
    except docker.errors.BuildError as exc:
        log = "".join(str(line.get("stream", line)) for line in exc.build_log)
        raise ImageBuildError(f"building {name} failed: {exc}\n{log[-3000:]}") from exc


def ensure_prometheus_image(daemon: Daemon, name: str, base: str) -> bool:
    """Build the stand-in for the official Prometheus image ``name`` from Debian's package
    unless current (MonitoringStack runs ``prometheus`` from PATH with its own flags, and its
    health check runs ``wget``).

    Returns:
        Whether it was built (False: reused).
    """
    if _PROMETHEUS_TAG.match(name) is None:
        raise ImageBuildError(f"{name!r} is not an official prom/prometheus:v<x.y.z> tag; no "
                              "stand-in is defined for it")
    dockerfile = "\n".join([
        f"FROM {base}",
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
        f"--no-install-recommends {' '.join(PROMETHEUS_PACKAGES)} && rm -rf /var/lib/apt/lists/*",
        "RUN prometheus --version && wget --version >/dev/null",
        # As the official image lays them out: its config directory and data directory owned
        # by `nobody` (Docker copies both into a new volume mounted there).
        "RUN mkdir -p /etc/prometheus /prometheus "
        "&& printf 'global: {}\\n' > /etc/prometheus/prometheus.yml "
        "&& chown -R 65534:65534 /etc/prometheus /prometheus",
    ])
    client = daemon.client()
    recipe = _recipe("prometheus", name, dockerfile, client.images.get(base).id)
    if _current(client, name, recipe):
        return False
    _build(daemon, name, dockerfile, recipe)
    return True


def ensure_mlflow_image(daemon: Daemon, name: str, base: str) -> bool:
    """Build the stand-in for the official MLflow ``-full`` image ``name`` unless current.

    Returns:
        Whether it was built (False: reused).
    """
    match = _MLFLOW_TAG.match(name)
    if match is None:
        raise ImageBuildError(f"{name!r} is not an official ghcr.io/mlflow/mlflow:v<x.y.z>-full "
                              "tag; no stand-in is defined for it")
    packages = [p.format(version=match.group("version")) for p in MLFLOW_FULL_PACKAGES]
    dockerfile = "\n".join([
        f"FROM {base}",
        "ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1",
        "RUN pip install " + " ".join(f"'{p}'" for p in packages),
        "RUN python -c \"import mlflow.server.auth, sqlalchemy, psycopg2, pymysql\"",
    ])
    client = daemon.client()
    base_id = client.images.get(base).id
    recipe = _recipe("mlflow", name, dockerfile, base_id)
    if _current(client, name, recipe):
        return False
    _build(daemon, name, dockerfile, recipe)
    return True
