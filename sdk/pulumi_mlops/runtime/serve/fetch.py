"""Fetch the model to serve into a local directory, with bounded retries.

A ``models:/`` URI against an HTTP(S) tracking server is fetched over the MLflow REST API,
without importing mlflow.

Importing mlflow and its client stores costs the server about a second of cold start, and the
server needs only a few calls: resolve the version, list its artifacts, download them. This
client covers the deployed case: an ``http(s)`` tracking URI whose server also serves the
artifacts (``mlflow-artifacts:``, as ModelRegistry runs it), with the standard
``MLFLOW_TRACKING_*`` credentials and TLS variables. For anything else `RestRegistry.from_env`
or the download functions return None and the caller falls back to mlflow's own client.

Bounds (`FetchBudget`): what one attempt downloads is capped (``max_model_bytes``, default
4 GiB) and the whole fetch, retries included, has a deadline (``fetch_deadline_seconds``,
default 600 s). Credentials go only to the tracking URI's origin, also across redirects.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import http.client
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["DEFAULT_FETCH_DEADLINE_SECONDS", "DEFAULT_MAX_MODEL_BYTES", "FetchBudget",
           "FetchLimitError", "ModelInfo", "ModelLoadError", "RegistryError", "RestRegistry",
           "fetch_model", "read_mlmodel", "scratch_dir"]

log = logging.getLogger("mlops.serve")

_API = "/api/2.0/mlflow"
_ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
_PROXY_SCHEME = "mlflow-artifacts:/"
_TRUE = ("true", "1", "yes")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
# Errors that retrying cannot fix.
_PERMANENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED",
              "UNAUTHENTICATED", "INSECURE_REDIRECT")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 1 << 20

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


class RegistryError(Exception):
    """The tracking server answered with an error.

    Attributes:
        error_code: MLflow's error code (``RESOURCE_DOES_NOT_EXIST`` …), or ``HTTP_<status>``.
        status: The HTTP status.
    """

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code


@dataclass(frozen=True)
class RestRegistry:
    """A minimal MLflow tracking-server client (registry reads and proxied artifacts).

    Attributes:
        base_url: The tracking URI, without a trailing slash.
        headers: Authorization header, when credentials are configured; sent only to the
            tracking URI's origin.
        timeout: Seconds per HTTP call.
        budget: The fetch's size cap and deadline. Default: none (per-call timeout only).
    """

    base_url: str
    headers: Mapping[str, str]
    context: Any = None  # ssl.SSLContext for https with custom verification
    timeout: float = 30.0
    budget: FetchBudget | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *,
                 budget: FetchBudget | None = None) -> RestRegistry | None:
        """The client for ``MLFLOW_TRACKING_URI``; None when it is not an HTTP(S) server or uses
        an auth plugin (``MLFLOW_TRACKING_AUTH``) that only mlflow's client knows.

        Raises:
            ValueError: the TLS settings contradict each other or their files cannot be loaded.
        """
        uri = environ.get("MLFLOW_TRACKING_URI", "")
        scheme = urllib.parse.urlsplit(uri).scheme
        if scheme not in ("http", "https") or environ.get("MLFLOW_TRACKING_AUTH"):
            return None
        headers: dict[str, str] = {}
        user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get(
            "MLFLOW_TRACKING_PASSWORD")
        token = environ.get("MLFLOW_TRACKING_TOKEN")
        if user and password:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        context = None
        insecure = environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in _TRUE
        ca_file = environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
        client_cert = environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
        if insecure and ca_file:
            # As MLflow's client refuses it: a CA bundle someone set must not be ignored.
            raise ValueError("Only one of `MLFLOW_TRACKING_INSECURE_TLS` or "
                             "`MLFLOW_TRACKING_SERVER_CERT_PATH` can be set.")
        if scheme == "https" and (insecure or ca_file or client_cert):
            import ssl

            try:
                context = ssl.create_default_context(cafile=ca_file)
                if client_cert:
                    context.load_cert_chain(client_cert)
            except OSError as err:
                raise ValueError(f"the TLS files named by `MLFLOW_TRACKING_SERVER_CERT_PATH` "
                                 f"({ca_file}) or `MLFLOW_TRACKING_CLIENT_CERT_PATH` "
                                 f"({client_cert}) cannot be loaded: {err}") from None
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(uri.rstrip("/"), headers, context, budget=budget)

    # ----------------------------------------------------------------- registry

    def model_version(self, name: str, *, version: str | None = None,
                      alias: str | None = None) -> dict[str, Any]:
        """The registered model version (by number or alias), as the REST API returns it."""
        if alias is not None:
            doc = self._json(f"{_API}/registered-models/alias", name=name, alias=alias)
        else:
            doc = self._json(f"{_API}/model-versions/get", name=name, version=str(version))
        result: dict[str, Any] = doc["model_version"]
        return result

    def download_model_version(self, name: str, version: str, dest: Path) -> Path | None:
        """Download a version's model directory into ``dest``; None when its artifacts are not
        served by this tracking server."""
        doc = self._json(f"{_API}/model-versions/get-download-uri", name=name, version=version)
        root = _proxied_path(doc["artifact_uri"])
        if root is None:
            return None
        self._download_tree(root, dest)
        return dest

    def download_run_file(self, run_id: str, path: str, dest: Path) -> Path | None:
        """Download one artifact file of a run; None when the run's artifacts are not served by
        this tracking server.

        Raises:
            RegistryError: ``RESOURCE_DOES_NOT_EXIST`` when the run has no such file.
        """
        info = self._json(f"{_API}/runs/get", run_id=run_id)["run"]["info"]
        root = _proxied_path(info["artifact_uri"])
        if root is None:
            return None
        target = dest / Path(path).name
        self._download_file(f"{root}/{path}", target)
        return target

    # ----------------------------------------------------------------- HTTP

    def _download_tree(self, root: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        listing = self._json(_ARTIFACTS_API, path=root)
        files = listing.get("files", [])
        if not files:
            raise RegistryError(404, "RESOURCE_DOES_NOT_EXIST",
                                f"no artifacts under {_PROXY_SCHEME}{root}")
        for entry in files:
            child = entry["path"]
            if "/" in child or child in ("", ".", ".."):
                raise RegistryError(502, "INVALID_STATE", f"unexpected artifact name {child!r}")
            if entry.get("is_dir"):
                self._download_tree(f"{root}/{child}", dest / child)
            else:
                self._download_file(f"{root}/{child}", dest / child)

    def _download_file(self, path: str, target: Path) -> None:
        with self._response(f"{_ARTIFACTS_API}/{urllib.parse.quote(path)}") as response, \
                open(target, "wb") as out:
            self._copy(response, out)

    def _json(self, endpoint: str, /, **query: str) -> dict[str, Any]:
        with self._response(f"{endpoint}?{urllib.parse.urlencode(query)}") as response:
            body = io.BytesIO()
            self._copy(response, body)
            result: dict[str, Any] = json.loads(body.getvalue())
            return result

    def _copy(self, response: Any, out: IO[bytes]) -> None:
        """Copy a response's body, counted against the budget: nothing past the size cap is
        written (a read asks for at most one byte more than the cap leaves)."""
        budget = self.budget
        while True:
            size = _CHUNK if budget is None else min(_CHUNK, budget.max_bytes - budget.used + 1)
            chunk = response.read(size)
            if budget is not None:
                # Also for the last, empty read: a body cut short by the deadline's shutdown
                # must not pass for a whole one.
                budget.count(len(chunk))
            if not chunk:
                if getattr(response, "length", None):
                    # http.client ends a body cut short of its Content-Length quietly: a
                    # truncated model file must be retried, not served.
                    raise http.client.IncompleteRead(b"", response.length)
                return
            out.write(chunk)

    @contextlib.contextmanager
    def _response(self, path: str) -> Iterator[Any]:
        """The response to a GET of ``path``, open while the block reads it."""
        request = urllib.request.Request(self.base_url + path, headers=dict(self.headers))
        budget = self.budget
        timeout = self.timeout if budget is None else min(self.timeout, budget.remaining())
        opener = urllib.request.build_opener(
            _HTTPHandler(budget), _HTTPSHandler(budget, self.context),
            _SameOriginCredentials(_origin(self.base_url)))
        try:
            with opener.open(request, timeout=timeout) as response:
                yield response
        except urllib.error.HTTPError as err:
            raise _registry_error(err) from None
        except (OSError, http.client.HTTPException) as err:
            if budget is not None and budget.expired:  # the deadline shut the socket down
                raise budget.deadline_error from err
            raise


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS.get(scheme)


class _SameOriginCredentials(urllib.request.HTTPRedirectHandler):
    """Follows the registry's redirects, sending its credentials only to the tracking URI's
    origin (scheme, host and port).

    A redirect to another origin (say a storage service's signed URL for an artifact) is
    followed without the ``Authorization`` header, as MLflow's own client (requests) does:
    refusing it would break registries that hand downloads off that way, and the header would
    give the registry's credentials to whoever the redirect names. A redirect from https to
    plain http is refused: the model would arrive unauthenticated, open to tampering.
    """

    def __init__(self, origin: tuple[str, str, int | None]) -> None:
        super().__init__()
        self._origin = origin

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: http.client.HTTPMessage, newurl: str,
                         ) -> urllib.request.Request | None:
        target = _origin(newurl)
        if _origin(req.full_url)[0] == "https" and target[0] != "https":
            fp.close()
            # Origin only: a signed URL's query string is a credential too.
            raise RegistryError(code, "INSECURE_REDIRECT", "the registry redirected an https "
                                f"request to {target[0]}://{target[1]}:{target[2]}; refused")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and target != self._origin:
            new.remove_header("Authorization")
        return new


class _HTTPConnection(http.client.HTTPConnection):
    """A connection whose socket (the TLS one, for HTTPS) the budget's deadline can shut
    down."""

    def __init__(self, host: str, *, budget: FetchBudget | None, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._budget = budget

    def connect(self) -> None:
        super().connect()
        if self._budget is not None:
            self._budget.watch(self.sock)


class _HTTPSConnection(_HTTPConnection, http.client.HTTPSConnection):
    """`_HTTPConnection` over TLS: HTTPSConnection's connect wraps the socket first."""


class _HTTPHandler(urllib.request.HTTPHandler):
    """Opens connections the budget's deadline can shut down."""

    def __init__(self, budget: FetchBudget | None) -> None:
        super().__init__()
        self._budget = budget

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPConnection, budget=self._budget), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """Opens TLS connections (with the ``MLFLOW_TRACKING_*`` TLS settings) the budget's deadline
    can shut down."""

    def __init__(self, budget: FetchBudget | None, context: Any) -> None:
        super().__init__(context=context)
        self._budget = budget
        self._tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPSConnection, budget=self._budget), req,
                            context=self._tls)


def _proxied_path(artifact_uri: str) -> str | None:
    """The path under the tracking server's artifact proxy, for ``mlflow-artifacts:/path``."""
    if not artifact_uri.startswith(_PROXY_SCHEME) or artifact_uri.startswith("mlflow-artifacts://"):
        return None
    return artifact_uri[len(_PROXY_SCHEME):].strip("/")


def _registry_error(err: urllib.error.HTTPError) -> RegistryError:
    with err:
        body = err.read(65536)
    code, message = f"HTTP_{err.code}", body.decode("utf-8", "replace")[:500]
    try:
        doc = json.loads(body)
        code = doc.get("error_code", code)
        message = doc.get("message", message)
    except (ValueError, AttributeError):
        pass
    if err.code == 401:
        code = "UNAUTHENTICATED"
    elif err.code == 403:
        code = "PERMISSION_DENIED"
    return RegistryError(err.code, code, message)


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
        raise ModelLoadError(f"{file} cannot be read as YAML ({_one_line(err)}): {fix}") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{file} must be a YAML mapping (got {type(doc).__name__}): {fix}")
    flavors = doc.get("flavors")
    if not isinstance(flavors, dict) or not all(isinstance(v, dict) for v in flavors.values()):
        raise ModelLoadError(f"{file}: `flavors` must map flavor names to their settings "
                             f"(got {_one_line(repr(flavors))}): {fix}")
    return doc


def _one_line(text: object, limit: int = 300) -> str:
    """``text`` as one log line (a YAML error's message spans several)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


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


def _fetch_once(uri: str, rest: RestRegistry | None,
                budget: FetchBudget) -> tuple[Path, ModelInfo]:
    match = _MODELS_URI.match(uri)
    if match is not None and rest is not None:
        name, alias = match["name"], match["alias"]
        mv = rest.model_version(name, version=match["version"], alias=alias)
        info = ModelInfo(uri, name, str(mv["version"]), alias, mv.get("run_id") or None)
        with _attempt_dir() as dest:
            path = rest.download_model_version(name, str(mv["version"]), dest)
        if path is not None:
            return path, info
    if match is None and Path(uri).is_dir():
        return Path(uri), ModelInfo(uri, None, None, None, None)
    import mlflow.artifacts

    # mlflow's client cannot be stopped mid-download: the deadline is checked before it starts,
    # and its downloads are not under the size cap.
    budget.remaining()
    pinned, info = _resolve_with_mlflow(uri, match)
    with _attempt_dir() as dest:
        local = mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(dest))
    return Path(local), info


def _resolve_with_mlflow(uri: str, match: re.Match[str] | None) -> tuple[str, ModelInfo]:
    """Pin ``models:/name@alias`` to its current version; other URIs load as given."""
    if match is None:
        return uri, ModelInfo(uri, None, None, None, None)
    from mlflow.tracking import MlflowClient

    name, version, alias = match["name"], match["version"], match["alias"]
    client = MlflowClient()
    mv = (client.get_model_version_by_alias(name, alias) if alias
          else client.get_model_version(name, version))
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
            raise ModelLoadError(f"cannot load {uri!r}: {_one_line(err)}") from None
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
                                         f"{_one_line(err)}") from err
                if budget.left <= delay:
                    raise FetchLimitError(f"cannot load {uri!r}: {budget.deadline_error} "
                                          f"(attempt {attempt}/{attempts}: {_one_line(err)})"
                                          ) from err
                log.warning("loading %s failed (attempt %d/%d): %s; retrying in %.1fs",
                            uri, attempt, attempts, _one_line(err), delay)
                time.sleep(delay)
                delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
