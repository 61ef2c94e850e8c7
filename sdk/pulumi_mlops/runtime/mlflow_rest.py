"""A small MLflow tracking-server client over its REST API, without importing mlflow: the
registry reads (a version by number or alias) and downloads through the server's artifact
proxy.

Importing mlflow and its client stores costs about a second, and the callers need only a few
calls: the serving runtime (`pulumi_mlops.runtime.serve.fetch`) resolves a version, lists its
artifacts and downloads them; the SDK's alias resolver (``components/resolver.py``) resolves an
alias at preview. The client covers an ``http(s)`` tracking URI whose server also serves the
artifacts (``mlflow-artifacts:``, as ModelRegistry runs it), with the standard
``MLFLOW_TRACKING_*`` credentials and TLS variables. For anything else `RestRegistry.from_env`
or the download methods return None and the caller falls back to mlflow's own client.

Credentials go only to the tracking URI's origin, also across redirects. A `ReadBudget` (the
serving runtime's ``FetchBudget``) bounds what the client reads, in bytes and in time.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import io
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = ["ReadBudget", "RegistryError", "RestRegistry"]

_API = "/api/2.0/mlflow"
_ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
_PROXY_SCHEME = "mlflow-artifacts:/"
_TRUE = ("true", "1", "yes")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 1 << 20


class ReadBudget(Protocol):
    """What bounds the client's reads: bytes, and a deadline that shuts the sockets down
    (`pulumi_mlops.runtime.serve.fetch.FetchBudget` is one)."""

    @property
    def max_bytes(self) -> int:
        """Bytes the reads may take in all."""

    @property
    def used(self) -> int:
        """Bytes read so far."""

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""

    @property
    def deadline_error(self) -> Exception:
        """The error for a read past the deadline."""

    def remaining(self) -> float:
        """Seconds left before the deadline; raises when none are left."""

    def count(self, n: int) -> None:
        """Count ``n`` bytes read; raises past the size cap or the deadline."""

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes."""


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
        budget: What bounds the reads (size cap and deadline). Default: none (the per-call
            timeout only).
    """

    base_url: str
    headers: Mapping[str, str]
    context: Any = None  # ssl.SSLContext for https with custom verification
    timeout: float = 30.0
    budget: ReadBudget | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *,
                 budget: ReadBudget | None = None) -> RestRegistry | None:
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

    def registered_model(self, name: str) -> dict[str, Any]:
        """The registered model (its versions' summary and aliases), as the REST API returns
        it."""
        result: dict[str, Any] = self._json(f"{_API}/registered-models/get",
                                            name=name)["registered_model"]
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

    def __init__(self, host: str, *, budget: ReadBudget | None, **kwargs: Any) -> None:
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

    def __init__(self, budget: ReadBudget | None) -> None:
        super().__init__()
        self._budget = budget

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPConnection, budget=self._budget), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """Opens TLS connections (with the ``MLFLOW_TRACKING_*`` TLS settings) the budget's deadline
    can shut down."""

    def __init__(self, budget: ReadBudget | None, context: Any) -> None:
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

