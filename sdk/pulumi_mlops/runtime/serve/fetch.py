"""Fetch the model to serve into a local directory, with bounded retries.

A ``models:/`` URI (`pulumi_mlops.contracts.model_uri`) against an HTTP(S) tracking server
that proxies the artifacts is fetched with the REST client of `pulumi_mlops.runtime.mlflow_rest`,
without importing mlflow (which costs the server about a second of cold start). For anything
else the fetch falls back to mlflow's own client.

Bounds (`FetchBudget`): what one attempt downloads is capped (``max_model_bytes``, default
4 GiB) and the whole fetch, retries included, has a deadline (``fetch_deadline_seconds``,
default 600 s). Credentials go only to the tracking URI's origin, also across redirects.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pulumi_mlops.contracts.model_uri import ModelRef, parse_model_uri
from pulumi_mlops.runtime._text import one_line
from pulumi_mlops.runtime.mlflow_rest import RestRegistry

__all__ = ["DEFAULT_FETCH_DEADLINE_SECONDS", "DEFAULT_MAX_MODEL_BYTES", "FetchBudget",
           "FetchLimitError", "ModelInfo", "ModelLoadError", "fetch_model", "read_mlmodel",
           "scratch_dir"]

log = logging.getLogger("mlops.serve")

# Errors that retrying cannot fix.
_PERMANENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED",
              "UNAUTHENTICATED", "INSECURE_REDIRECT")

# Larger than the models a CPU serving pod holds in memory by an order of magnitude (scikit-learn
# and gradient-boosting models are kilobytes to a few hundred MiB), small enough that a registry
# answering without end fails in seconds instead of filling the node's disk.
DEFAULT_MAX_MODEL_BYTES = 4 * 2**30
# 4 GiB at 10 MB/s with the retries' backoff, and Kubernetes' default rollout deadline
# (progressDeadlineSeconds): a replica still fetching by then has failed the rollout anyway.
DEFAULT_FETCH_DEADLINE_SECONDS = 600.0


class ModelLoadError(RuntimeError):
    """The model could not be loaded (after retries, or for a reason retries cannot fix)."""


class FetchLimitError(ModelLoadError):
    """A bound of the fetch was reached (size cap or deadline); never retried."""


class FetchBudget:
    """The bounds of one fetch: bytes per attempt, and a deadline for all attempts together.

    Use it as a context manager: inside, the deadline is enforced while reading. When it passes,
    the sockets the fetch has open are shut down, which ends a read that a registry sending a
    byte now and then would hold forever (a socket timeout bounds one wait, not the whole read).
    Only connecting (and a TLS handshake) is bounded by the per-call timeout alone.

    Args:
        max_bytes: Bytes one attempt may download (files and API answers together). Default:
            `DEFAULT_MAX_MODEL_BYTES` (4 GiB).
        deadline_seconds: Seconds the whole fetch may take, retries and their backoff included.
            Default: `DEFAULT_FETCH_DEADLINE_SECONDS` (600).
        options: How the user sets the two bounds, for the errors. Default: the flags of
            ``mlops serve``.

    Raises:
        ValueError: a bound is not positive.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
                 deadline_seconds: float = DEFAULT_FETCH_DEADLINE_SECONDS, *,
                 options: tuple[str, str] = ("--max-model-bytes", "--fetch-deadline-seconds"),
                 ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"{options[0]} must be an integer >= 1 (got {max_bytes!r}).")
        if not deadline_seconds > 0:
            raise ValueError(f"{options[1]} must be > 0 (got {deadline_seconds!r}).")
        self.options = options
        self.max_bytes = max_bytes
        self.deadline_seconds = deadline_seconds
        self.used = 0
        self._end = time.monotonic() + deadline_seconds
        self._lock = threading.Lock()
        self._expired = False
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._timer = threading.Timer(deadline_seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> FetchBudget:
        self._end = time.monotonic() + self.deadline_seconds
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._timer.cancel()

    @property
    def size_error(self) -> FetchLimitError:
        """The error for a download past the size cap."""
        mib = f" ({self.max_bytes / 2**20:g} MiB)" if self.max_bytes >= 2**20 else ""
        return FetchLimitError(f"the download passed its size cap of {self.max_bytes} bytes"
                               f"{mib}; raise it with {self.options[0]}")

    @property
    def deadline_error(self) -> FetchLimitError:
        """The error for a fetch past its deadline."""
        return FetchLimitError(f"the fetch passed its deadline of {self.deadline_seconds:g} s; "
                               f"raise it with {self.options[1]}")

    @property
    def left(self) -> float:
        """Seconds left before the deadline (0 when it has passed)."""
        return 0.0 if self._expired else max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.left <= 0

    def remaining(self) -> float:
        """Seconds left before the deadline.

        Raises:
            FetchLimitError: none are left.
        """
        left = self.left
        if left <= 0:
            raise self.deadline_error
        return left

    def count(self, n: int) -> None:
        """Count ``n`` bytes read.

        Raises:
            FetchLimitError: the size cap or the deadline is passed.
        """
        self.remaining()
        self.used += n
        if self.used > self.max_bytes:
            raise self.size_error

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has)."""
        with self._lock:
            self._sockets.add(sock)
            expired = self._expired
        if expired:
            _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: ssl.SSLSocket.shutdown would drop
    # the TLS state under the thread that is reading, which then fails with a confusing error.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass(frozen=True)
class ModelInfo:
    """What is being served.

    Attributes:
        uri: The model URI as given.
        name: Registered model name (None for runs:/ and local paths).
        version: Resolved registered version.
        alias: The alias the URI named, if any.
        run_id: The run that logged the model.
    """

    uri: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None


# --------------------------------------------------------------------------- fetching


def scratch_dir() -> Path:
    """A temporary directory removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix="mlops-model-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def read_mlmodel(path: Path) -> dict[str, Any]:
    """The MLmodel document of a model directory.

    Raises:
        ModelLoadError: the file is missing or unreadable, is not YAML, or is not a mapping
            with a mapping of ``flavors``.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    file = path / "MLmodel"
    fix = "the model URI must name an MLflow model (logged with mlflow.<flavor>.log_model)"
    try:
        with open(file, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=loader)
    except FileNotFoundError:
        raise ModelLoadError(f"{file} is missing: {fix}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ModelLoadError(f"{file} cannot be read as YAML ({one_line(err)}): {fix}") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{file} must be a YAML mapping (got {type(doc).__name__}): {fix}")
    flavors = doc.get("flavors")
    if not isinstance(flavors, dict) or not all(isinstance(v, dict) for v in flavors.values()):
        raise ModelLoadError(f"{file}: `flavors` must map flavor names to their settings "
                             f"(got {one_line(repr(flavors))}): {fix}")
    return doc


@contextlib.contextmanager
def _attempt_dir() -> Iterator[Path]:
    """A scratch directory for one attempt's download, deleted at once if the attempt fails:
    partial downloads must not add up on disk over the retries."""
    path = scratch_dir()
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _registered(uri: str) -> ModelRef | None:
    """The registered model version a ``models:/`` URI names; None for other URIs (which
    mlflow's client loads as given)."""
    try:
        return parse_model_uri(uri)
    except ValueError:
        return None


def _fetch_once(uri: str, rest: RestRegistry | None,
                budget: FetchBudget) -> tuple[Path, ModelInfo]:
    ref = _registered(uri)
    if ref is not None and rest is not None:
        mv = rest.model_version(ref.name, version=ref.version, alias=ref.alias)
        info = ModelInfo(uri, ref.name, str(mv["version"]), ref.alias, mv.get("run_id") or None)
        with _attempt_dir() as dest:
            path = rest.download_model_version(ref.name, str(mv["version"]), dest)
        if path is not None:
            return path, info
    if ref is None and Path(uri).is_dir():
        return Path(uri), ModelInfo(uri, None, None, None, None)
    import mlflow.artifacts

    # mlflow's client cannot be stopped mid-download: the deadline is checked before it starts,
    # and its downloads are not under the size cap.
    budget.remaining()
    pinned, info = _resolve_with_mlflow(uri, ref)
    with _attempt_dir() as dest:
        local = mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(dest))
    return Path(local), info


def _resolve_with_mlflow(uri: str, ref: ModelRef | None) -> tuple[str, ModelInfo]:
    """Pin ``models:/name@alias`` to its current version; other URIs load as given."""
    if ref is None:
        return uri, ModelInfo(uri, None, None, None, None)
    from mlflow.tracking import MlflowClient

    name, alias = ref.name, ref.alias
    client = MlflowClient()
    mv = (client.get_model_version_by_alias(name, alias) if alias
          else client.get_model_version(name, ref.version))
    return f"models:/{name}/{mv.version}", ModelInfo(uri, name, str(mv.version), alias,
                                                     mv.run_id)


def _permanent(err: BaseException) -> bool:
    code = getattr(err, "error_code", "")
    return any(p in str(code) for p in _PERMANENT)


def fetch_model(uri: str, *, attempts: int = 6, first_delay: float = 1.0,
                max_delay: float = 30.0, max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
                fetch_deadline_seconds: float = DEFAULT_FETCH_DEADLINE_SECONDS,
                ) -> tuple[Path, ModelInfo]:
    """The model's files in a local directory, and what they are.

    ``models:/`` URIs are pinned to a version (an alias is resolved). Connection failures are
    retried with exponential backoff.

    Args:
        uri: ``models:/name/version``, ``models:/name@alias``, ``runs:/…`` or a local path.
        attempts: Fetch attempts before giving up. Default: 6.
        first_delay: Seconds before the first retry, doubled for each next one. Default: 1.
        max_delay: Longest wait between attempts, in seconds. Default: 30.
        max_model_bytes: Bytes one attempt may download from the tracking server (a failed
            attempt's files are deleted before the next). Default: 4 GiB.
        fetch_deadline_seconds: Seconds the whole fetch may take, retries included, enforced
            while reading. Default: 600.

    Raises:
        ModelLoadError: after ``attempts`` failures, or at once for errors retries cannot fix
            (model, version or alias missing, bad credentials, a bound of the fetch reached:
            `FetchLimitError`).
    """
    with FetchBudget(max_model_bytes, fetch_deadline_seconds) as budget:
        try:
            rest = RestRegistry.from_env(budget=budget)
        except ValueError as err:  # settings, which retrying cannot fix
            raise ModelLoadError(f"cannot load {uri!r}: {one_line(err)}") from None
        delay = first_delay
        for attempt in range(1, attempts + 1):
            budget.used = 0
            try:
                return _fetch_once(uri, rest, budget)
            except FetchLimitError as err:
                raise FetchLimitError(f"cannot load {uri!r}: {err}") from err
            except Exception as err:
                if _permanent(err) or attempt == attempts:
                    raise ModelLoadError(f"cannot load {uri!r} (attempt {attempt}/{attempts}): "
                                         f"{one_line(err)}") from err
                if budget.left <= delay:
                    raise FetchLimitError(f"cannot load {uri!r}: {budget.deadline_error} "
                                          f"(attempt {attempt}/{attempts}: {one_line(err)})"
                                          ) from err
                log.warning("loading %s failed (attempt %d/%d): %s; retrying in %.1fs",
                            uri, attempt, attempts, one_line(err), delay)
                time.sleep(delay)
                delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
