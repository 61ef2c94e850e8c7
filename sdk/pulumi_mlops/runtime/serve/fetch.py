"""Fetch the model to serve into a local directory, with bounded retries.

A ``models:/`` URI against an HTTP(S) tracking server is fetched over the MLflow REST API,
without importing mlflow.

Importing mlflow and its client stores costs the server about a second of cold start, and the
server needs only a few calls: resolve the version, list its artifacts, download them. This
client covers the deployed case: an ``http(s)`` tracking URI whose server also serves the
artifacts (``mlflow-artifacts:``, as ModelRegistry runs it), with the standard
``MLFLOW_TRACKING_*`` credentials and TLS variables. For anything else `RestRegistry.from_env`
or the download functions return None and the caller falls back to mlflow's own client.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelInfo", "ModelLoadError", "RegistryError", "RestRegistry", "fetch_model",
           "read_mlmodel", "scratch_dir"]

log = logging.getLogger("mlops.serve")

_API = "/api/2.0/mlflow"
_ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
_PROXY_SCHEME = "mlflow-artifacts:/"
_TRUE = ("true", "1", "yes")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
# Errors that retrying cannot fix.
_PERMANENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED",
              "UNAUTHENTICATED")


class ModelLoadError(RuntimeError):
    """The model could not be loaded (after retries, or for a reason retries cannot fix)."""


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
        headers: Authorization header, when credentials are configured.
        timeout: Seconds per HTTP call.
    """

    base_url: str
    headers: Mapping[str, str]
    context: Any = None  # ssl.SSLContext for https with custom verification
    timeout: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RestRegistry | None:
        """The client for ``MLFLOW_TRACKING_URI``; None when it is not an HTTP(S) server or uses
        an auth plugin (``MLFLOW_TRACKING_AUTH``) that only mlflow's client knows."""
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
        if scheme == "https" and (insecure or ca_file or client_cert):
            import ssl

            context = ssl.create_default_context(cafile=ca_file)
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if client_cert:
                context.load_cert_chain(client_cert)
        return cls(uri.rstrip("/"), headers, context)

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
        with self._open(f"{_ARTIFACTS_API}/{urllib.parse.quote(path)}") as response, \
                open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)

    def _json(self, endpoint: str, /, **query: str) -> dict[str, Any]:
        with self._open(f"{endpoint}?{urllib.parse.urlencode(query)}") as response:
            result: dict[str, Any] = json.load(response)
            return result

    def _open(self, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path, headers=dict(self.headers))
        try:
            return urllib.request.urlopen(request, timeout=self.timeout, context=self.context)
        except urllib.error.HTTPError as err:
            raise _registry_error(err) from None


def _proxied_path(artifact_uri: str) -> str | None:
    """The path under the tracking server's artifact proxy, for ``mlflow-artifacts:/path``."""
    if not artifact_uri.startswith(_PROXY_SCHEME) or artifact_uri.startswith("mlflow-artifacts://"):
        return None
    return artifact_uri[len(_PROXY_SCHEME):].strip("/")


def _registry_error(err: urllib.error.HTTPError) -> RegistryError:
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
    """The MLmodel document of a model directory."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path / "MLmodel", encoding="utf-8") as f:
        doc: dict[str, Any] = yaml.load(f, Loader=loader)
    return doc


def _fetch_once(uri: str) -> tuple[Path, ModelInfo]:
    match = _MODELS_URI.match(uri)
    rest = RestRegistry.from_env()
    if match is not None and rest is not None:
        name, alias = match["name"], match["alias"]
        mv = rest.model_version(name, version=match["version"], alias=alias)
        info = ModelInfo(uri, name, str(mv["version"]), alias, mv.get("run_id") or None)
        path = rest.download_model_version(name, str(mv["version"]), scratch_dir())
        if path is not None:
            return path, info
    if match is None and Path(uri).is_dir():
        return Path(uri), ModelInfo(uri, None, None, None, None)
    import mlflow.artifacts

    pinned, info = _resolve_with_mlflow(uri, match)
    local = mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(scratch_dir()))
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
                max_delay: float = 30.0) -> tuple[Path, ModelInfo]:
    """The model's files in a local directory, and what they are.

    ``models:/`` URIs are pinned to a version (an alias is resolved). Connection failures are
    retried with exponential backoff.

    Raises:
        ModelLoadError: after ``attempts`` failures, or at once for errors retries cannot fix
            (model, version or alias missing, bad credentials).
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(uri)
        except Exception as err:
            if _permanent(err) or attempt == attempts:
                raise ModelLoadError(
                    f"cannot load {uri!r} (attempt {attempt}/{attempts}): {err}") from err
            log.warning("loading %s failed (attempt %d/%d): %s; retrying in %.1fs",
                        uri, attempt, attempts, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
