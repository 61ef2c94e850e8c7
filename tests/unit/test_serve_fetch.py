"""Model fetch under hostile and careless registries (issue 10): credentials stay with the
tracking URI's origin, downloads are bounded in size and time, and a corrupt drift profile or
MLmodel fails cleanly. Real HTTP servers on 127.0.0.1 stand in for the registry."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from pulumi_mlops.runtime.drift import PROFILE_ARTIFACT_PATH, build_profile
from pulumi_mlops.runtime.serve.fetch import (
    FetchLimitError,
    ModelLoadError,
    fetch_model,
    read_mlmodel,
)
from pulumi_mlops.runtime.serve.loading import load_drift_monitor, load_served_model
from tests.e2e.ports import free_port
from tests.e2e.serving import MLOPS
from tests.loopback import reply
from tests.unit.serving_data import COLUMNS, training_frame

USER, PASSWORD = "reader", "not-for-other-origins"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MODEL_ROOT = "1/models/m-1/artifacts"
RUN_ROOT = "1/r1/artifacts"
WEIGHTS = f"{ARTIFACTS}/{MODEL_ROOT}/data/weights.bin"
PROFILE = f"{ARTIFACTS}/{RUN_ROOT}/{PROFILE_ARTIFACT_PATH}"
MODEL_FILES = {"MLmodel": b"flavors:\n  python_function: {}\n", "data/weights.bin": b"w" * 5000}
MOVED = "/moved"  # a same-origin redirect target: the path after it is served as usual

Route = Callable[[BaseHTTPRequestHandler], None]


class FakeRegistry:
    """The REST calls the fetcher makes, answered from files in memory on 127.0.0.1.

    ``routes`` replaces the answer for one path (a redirect, a drip, an endless body); every
    request is recorded in ``seen`` as (path, lower-cased headers).
    """

    def __init__(self, model_files: dict[str, bytes], *, profile: bytes | None = None,
                 require_auth: bool = True, tls: ssl.SSLContext | None = None) -> None:
        self.files = {f"{MODEL_ROOT}/{k}": v for k, v in model_files.items()}
        if profile is not None:
            self.files[f"{RUN_ROOT}/{PROFILE_ARTIFACT_PATH}"] = profile
        self.require_auth = require_auth
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.stop = threading.Event()
        self._tls = tls
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def __enter__(self) -> FakeRegistry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if self._tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop.set()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def requests_to(self, path: str) -> list[dict[str, str]]:
        """Headers of the requests made for ``path``."""
        return [headers for seen, headers in self.seen if seen == path]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        path, query = urllib.parse.unquote(parts.path), urllib.parse.parse_qs(parts.query)
        self.seen.append((path, {k.lower(): v for k, v in handler.headers.items()}))
        if path in self.routes:
            self.routes[path](handler)
            return
        if self.require_auth and handler.headers.get("Authorization") != AUTH:
            reply(handler, 401, {"error_code": "UNAUTHENTICATED", "message": "who are you?"})
            return
        path = path.removeprefix(MOVED)
        if path == f"{API}/model-versions/get":
            reply(handler, 200, {"model_version": {"name": "m", "version": "1",
                                                   "run_id": "r1"}})
        elif path == f"{API}/model-versions/get-download-uri":
            reply(handler, 200, {"artifact_uri": f"mlflow-artifacts:/{MODEL_ROOT}"})
        elif path == f"{API}/runs/get":
            info = {"artifact_uri": f"mlflow-artifacts:/{RUN_ROOT}"}
            reply(handler, 200, {"run": {"info": info}})
        elif path == ARTIFACTS:
            reply(handler, 200, {"files": self.listing(query["path"][0])})
        elif path.removeprefix(ARTIFACTS + "/") in self.files:
            reply(handler, 200, self.files[path.removeprefix(ARTIFACTS + "/")])
        else:
            reply(handler, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": path})

    def listing(self, root: str) -> list[dict[str, Any]]:
        children: dict[str, bool] = {}
        for name in self.files:
            if name.startswith(root + "/"):
                child, _, rest = name[len(root) + 1:].partition("/")
                children[child] = bool(rest)
        return [{"path": child, "is_dir": is_dir} for child, is_dir in sorted(children.items())]

    # ---------------------------------------------------------------- hostile answers

    def redirect(self, location: str) -> Route:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        return route

    def drip(self, head: bytes) -> Route:
        """Send ``head``, then one byte every 20 ms (for at most 10 s)."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            with contextlib.suppress(OSError):
                handler.wfile.write(head)
                for _ in range(500):
                    if self.stop.is_set():
                        return
                    handler.wfile.write(b"a")
                    time.sleep(0.02)

        return route

    def endless(self, handler: BaseHTTPRequestHandler) -> None:
        """A body without a length, sent as fast as it is read, for at most 64 MiB."""
        handler.send_response(200)
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(4096):
                if self.stop.is_set():
                    return
                handler.wfile.write(b"z" * 16384)




@pytest.fixture
def registry_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], None]:
    """Point the fetcher at a registry URL with Basic credentials; scratch space in tmp_path."""
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_INSECURE_TLS",
                 "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def point_at(url: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)

    return point_at


def scratch_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- credentials


def test_credentials_are_not_sent_along_a_redirect_to_another_origin(
    registry_env: Callable[[str], None]
) -> None:
    with FakeRegistry(MODEL_FILES) as registry, \
            FakeRegistry(MODEL_FILES, require_auth=False) as elsewhere:
        registry.routes[WEIGHTS] = registry.redirect(elsewhere.url + WEIGHTS)
        registry_env(registry.url)
        path, info = fetch_model("models:/m/1", attempts=1)
    assert (path / "data" / "weights.bin").read_bytes() == MODEL_FILES["data/weights.bin"]
    assert info.version == "1"
    assert all(h.get("authorization") == AUTH for _, h in registry.seen)
    assert elsewhere.requests_to(WEIGHTS), "the redirect was followed"
    assert [h for _, h in elsewhere.seen if "authorization" in h] == []


def test_credentials_are_kept_along_a_redirect_within_the_origin(
    registry_env: Callable[[str], None]
) -> None:
    with FakeRegistry(MODEL_FILES) as registry:
        registry.routes[WEIGHTS] = registry.redirect(registry.url + MOVED + WEIGHTS)
        registry_env(registry.url)
        path, _ = fetch_model("models:/m/1", attempts=1)
    assert (path / "data" / "weights.bin").read_bytes() == MODEL_FILES["data/weights.bin"]
    assert [h.get("authorization") for h in registry.requests_to(MOVED + WEIGHTS)] == [AUTH]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_an_https_registry_redirecting_to_plain_http_is_refused_at_once(
    registry_env: Callable[[str], None], tls_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert_file, key_file = tls_files
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(cert_file))
    with FakeRegistry(MODEL_FILES, tls=tls) as registry, \
            FakeRegistry(MODEL_FILES, require_auth=False) as plain:
        registry.routes[WEIGHTS] = registry.redirect(plain.url + WEIGHTS + "?sig=secret")
        registry_env(registry.url)
        with pytest.raises(ModelLoadError, match="INSECURE_REDIRECT") as caught:
            fetch_model("models:/m/1", attempts=3, first_delay=0.01)
    assert plain.seen == []
    assert len(registry.requests_to(WEIGHTS)) == 1, "refused, not retried"
    assert "secret" not in str(caught.value)
    assert scratch_files(tmp_path) == []


@pytest.mark.parametrize("settings", [
    {"MLFLOW_TRACKING_INSECURE_TLS": "true", "MLFLOW_TRACKING_SERVER_CERT_PATH": "{cert}"},
    {"MLFLOW_TRACKING_SERVER_CERT_PATH": "{missing}"},
], ids=["insecure-and-a-ca", "missing-ca-file"])
def test_unusable_tls_settings_fail_at_once_naming_them(
    registry_env: Callable[[str], None], tls_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: dict[str, str]
) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(name, value.format(cert=tls_files[0], missing=tmp_path / "no.pem"))
    registry_env("https://127.0.0.1:9")  # never called
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="MLFLOW_TRACKING_SERVER_CERT_PATH"):
        fetch_model("models:/m/1", attempts=6, first_delay=1.0)
    assert time.monotonic() - started < 1.0, "not retried"


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("head", [
    b"HTTP/1.0 200 OK\r\nContent-Length: 1000000\r\n\r\n",  # the body drips
    b"HTTP/1.0 200 OK\r\nX-Slow: ",  # the headers drip
], ids=["body", "headers"])
@pytest.mark.timeout(60)
def test_a_dripping_registry_fails_at_the_deadline(
    registry_env: Callable[[str], None], tmp_path: Path, head: bytes
) -> None:
    with FakeRegistry(MODEL_FILES) as registry:
        registry.routes[WEIGHTS] = registry.drip(head)
        registry_env(registry.url)
        started = time.monotonic()
        with pytest.raises(FetchLimitError) as caught:
            fetch_model("models:/m/1", attempts=3, first_delay=0.01,
                        fetch_deadline_seconds=1.0)
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "deadline of 1 s" in message and "--fetch-deadline-seconds" in message
    assert "\n" not in message
    # Each byte comes well within the 30 s per-call timeout: only the deadline ends this.
    assert 0.9 < elapsed < 2.5
    assert len(registry.requests_to(WEIGHTS)) == 1, "a deadline is not retried"
    assert scratch_files(tmp_path) == []


@pytest.mark.timeout(60)
def test_the_deadline_covers_the_retries(registry_env: Callable[[str], None]) -> None:
    with FakeRegistry(MODEL_FILES) as registry:
        registry.routes[f"{API}/model-versions/get"] = lambda h: reply(
            h, 503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"})
        registry_env(registry.url)
        started = time.monotonic()
        with pytest.raises(FetchLimitError, match="deadline of 1 s"):
            fetch_model("models:/m/1", attempts=1000, first_delay=0.05, max_delay=0.1,
                        fetch_deadline_seconds=1.0)
        elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 2.0
    assert 3 < len(registry.requests_to(f"{API}/model-versions/get")) < 30


@pytest.mark.parametrize("target", [WEIGHTS, ARTIFACTS], ids=["file", "listing"])
@pytest.mark.timeout(60)
def test_an_endless_answer_stops_at_the_size_cap(
    registry_env: Callable[[str], None], tmp_path: Path, target: str
) -> None:
    cap = 64 * 1024
    with FakeRegistry(MODEL_FILES) as registry:
        registry.routes[target] = registry.endless
        registry_env(registry.url)
        with pytest.raises(FetchLimitError) as caught:
            fetch_model("models:/m/1", attempts=3, first_delay=0.01, max_model_bytes=cap)
    message = str(caught.value)
    assert f"size cap of {cap} bytes" in message and "--max-model-bytes" in message
    assert "\n" not in message
    assert len(registry.requests_to(target)) == 1, "a size cap is not retried"
    assert scratch_files(tmp_path) == [], "the partial download is deleted"


def test_a_body_cut_short_is_retried_not_served(
    registry_env: Callable[[str], None], tmp_path: Path
) -> None:
    def truncated(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"w" * 100)

    with FakeRegistry(MODEL_FILES) as registry:
        registry.routes[WEIGHTS] = truncated
        registry_env(registry.url)
        with pytest.raises(ModelLoadError, match=r"attempt 2/2.*IncompleteRead"):
            fetch_model("models:/m/1", attempts=2, first_delay=0.01)
    assert len(registry.requests_to(WEIGHTS)) == 2
    assert scratch_files(tmp_path) == []


def test_a_model_within_the_bounds_is_fetched_whole(
    registry_env: Callable[[str], None]
) -> None:
    # The cap counts the API answers too; 5000 bytes of weights and the rest fit in 8 KiB.
    with FakeRegistry(MODEL_FILES) as registry:
        registry_env(registry.url)
        path, _ = fetch_model("models:/m/1", attempts=1, max_model_bytes=8192,
                              fetch_deadline_seconds=5)
    assert {p.relative_to(path).as_posix(): p.read_bytes()
            for p in path.rglob("*") if p.is_file()} == MODEL_FILES


@pytest.mark.parametrize(("option", "value"), [("max_model_bytes", 0),
                                               ("fetch_deadline_seconds", -1.0)])
def test_a_bound_that_is_not_positive_is_refused(option: str, value: float) -> None:
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag} must be"):
        fetch_model("/nonexistent", attempts=1, **{option: value})


# --------------------------------------------------------------------------- drift profile


CORRUPT_PROFILES = {
    "not-json": b"{\"format\": ",
    "not-an-object": b"[1, 2, 3]",
    "another-format": json.dumps({"format": "someone-else/v9", "rows": 3,
                                  "features": {}}).encode(),
    "bad-feature": json.dumps({"format": "mlops-drift-profile/v1", "rows": 3,
                               "features": {"f0": {"kind": "numeric", "edges": "x"}}}).encode(),
    "over-the-cap": b" " * 5000 + b"{}",
}


@pytest.mark.parametrize("profile", CORRUPT_PROFILES.values(), ids=CORRUPT_PROFILES.keys())
def test_a_corrupt_drift_profile_disables_drift_with_one_warning(
    registry_env: Callable[[str], None], caplog: pytest.LogCaptureFixture, profile: bytes
) -> None:
    with FakeRegistry(MODEL_FILES, profile=profile) as registry:
        registry_env(registry.url)
        with caplog.at_level(logging.INFO, logger="mlops.serve"):
            monitor = load_drift_monitor("r1", 100, max_profile_bytes=4096)
    assert monitor is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "r1" in line and "drift gauges disabled" in line and "\n" not in line


def test_a_valid_drift_profile_still_gives_a_monitor(
    registry_env: Callable[[str], None]
) -> None:
    frame, _ = training_frame()
    profile = json.dumps(build_profile(frame)).encode()
    with FakeRegistry(MODEL_FILES, profile=profile) as registry:
        registry_env(registry.url)
        monitor = load_drift_monitor("r1", 100)
    assert monitor is not None
    assert set(monitor.numeric_features) == set(COLUMNS)


@pytest.mark.timeout(300)
def test_a_model_with_a_corrupt_profile_is_served_without_drift(
    registry_env: Callable[[str], None], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # About the profile, not the model's format: the model is MLflow's default save.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame, target = training_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, target)
    saved = tmp_path / "saved"
    mlflow.sklearn.save_model(model, str(saved),
                              signature=infer_signature(frame, model.predict(frame)))
    files = {p.relative_to(saved).as_posix(): p.read_bytes()
             for p in saved.rglob("*") if p.is_file()}
    with FakeRegistry(files, profile=b"\x00garbage") as registry:
        registry_env(registry.url)
        with caplog.at_level(logging.WARNING, logger="mlops.serve"):
            served = load_served_model("models:/m/1", attempts=1)
    assert served.drift is None
    assert "drift gauges disabled" in caplog.text
    row = [*frame.iloc[0, :5].tolist(), int(frame["n"].iloc[0])]
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [row]}}).encode()
    answer = served.invoke(body, "application/json")
    assert answer.status == 200
    assert json.loads(answer.body)["predictions"] == model.predict(frame.iloc[:1]).tolist()


# --------------------------------------------------------------------------- MLmodel


BAD_MLMODELS = {
    "not-yaml": b"flavors: [unclosed\n  - : :\n",
    "not-a-mapping": b"- just\n- a list\n",
    "flavors-not-a-mapping": b"flavors: sklearn\n",
    "not-utf8": b"\xff\xfe\x00bad",
}


@pytest.mark.parametrize("content", BAD_MLMODELS.values(), ids=BAD_MLMODELS.keys())
def test_a_bad_mlmodel_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "MLmodel").write_bytes(content)
    with pytest.raises(ModelLoadError, match="MLmodel") as caught:
        read_mlmodel(tmp_path)
    assert "\n" not in str(caught.value)
    assert "log_model" in str(caught.value)


def test_a_missing_mlmodel_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="MLmodel is missing"):
        read_mlmodel(tmp_path)


@pytest.mark.parametrize("content", [BAD_MLMODELS["not-yaml"], None], ids=["garbage", "missing"])
def test_mlops_serve_exits_3_with_one_line_for_a_bad_mlmodel(
    tmp_path: Path, content: bytes | None
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    if content is not None:
        (model / "MLmodel").write_bytes(content)
    done = subprocess.run([MLOPS, "serve", "--model-uri", str(model), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert "MLmodel" in errors[0]
