"""`mlops serve` against hostile and careless clients, as a real process on loopback: every
bound of `Limits` at its edge, predictions off the event loop, one-line client errors, bounded
metric labels, worker supervision and a clean exit on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import orjson
import pytest
import requests
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from tests.e2e.registry import Registry, registry_client
from tests.e2e.serving import MLOPS, Server, start_serve
from tests.unit.serving_data import COLUMNS, training_frame

pytestmark = [pytest.mark.e2e]

_SLOW_MODEL = '''
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Slow(PythonModel):
    """Spins in Python code (holding the GIL) for `seconds`, then echoes `key` as text: an
    output that depends on the input, as an LLM's or a lookup's does."""

    def predict(self, context, model_input, params=None):
        end = time.monotonic() + float(model_input["seconds"].iloc[0])
        while time.monotonic() < end:
            pass
        return [str(k) for k in model_input["key"]]


mlflow.models.set_model(Slow())
'''


@pytest.fixture(scope="module")
def sk_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn classifier with a column signature (the fast path)."""
    frame, target = training_frame()
    model = LogisticRegression().fit(frame, target)
    path = tmp_path_factory.mktemp("sk") / "model"
    mlflow.sklearn.save_model(model, str(path), serialization_format="skops",
                              signature=infer_signature(frame, model.predict(frame)))
    return path


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyfunc model saved from code (no pickle) that takes as long as the input says."""
    root = tmp_path_factory.mktemp("slow")
    code = root / "slow_model.py"
    code.write_text(_SLOW_MODEL)
    path = root / "model"
    mlflow.pyfunc.save_model(str(path), python_model=str(code))
    return path


def _row(i: int = 0) -> list[float]:
    return [0.1 * i, 0.2, -0.3, 0.4, 0.5, i % 10]


def _split(rows: list[list[float]]) -> bytes:
    return orjson.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}})


def _slow(seconds: float, keys: list[str] | None = None) -> bytes:
    keys = keys or ["a"]
    return orjson.dumps({"dataframe_split": {"columns": ["seconds", "key"],
                                             "data": [[seconds, k] for k in keys]}})


@pytest.fixture
def served(sk_model: Path, tmp_path: Path) -> Iterator[Server]:
    server = start_serve(str(sk_model), tmp_path, "--max-concurrency", "4",
                         "--max-body-bytes", str(8 * 2**20), "--body-timeout", "2",
                         "--header-timeout", "1", "--max-header-bytes", "8192",
                         "--max-rows", "10")
    yield server
    _stop(server)


def _stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_status(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, head + b"\r\n\r\n" + rest


def _wait_loaded(server: Server, workers: int = 1) -> None:
    """Wait until the general path has loaded in the background in every worker (its imports
    grow the RSS)."""
    deadline = time.monotonic() + 60
    while server.log.read_text().count("general path (MLflow's pyfunc model) loaded") < workers:
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _metric(server: Server, pattern: str) -> list[str]:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return [line for line in text.splitlines() if re.match(pattern, line)]


# --------------------------------------------------------------------------- bodies


def test_held_bodies_are_bounded_by_the_concurrency_limit_and_time_out(served: Server) -> None:
    """The finding: 60 connections each holding ~15 MiB of an unfinished body grew a worker by
    900 MB. Now only --max-concurrency bodies are read; the rest get 503 with Retry-After at
    once, and the held ones get 408 after --body-timeout, which frees their slots."""
    _wait_loaded(served)
    base = _rss_kib(served.process.pid)
    declared, sent = 7 * 2**20, 6 * 2**20
    head = (f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    socks = []
    statuses: list[int] = []
    for _ in range(20):
        sock = _connect(served)
        sock.sendall(head)
        sock.sendall(b"[" * sent)
        socks.append(sock)
    time.sleep(0.5)
    peak = _rss_kib(served.process.pid)
    for sock in socks:
        status, answer = _read_status(sock)
        statuses.append(status)
        if status == 503:
            assert b"retry-after: 1" in answer.lower()
        sock.close()
    assert statuses.count(503) == 16, statuses
    assert statuses.count(408) == 4, statuses
    # Four held bodies of 6 MiB (and the reads' buffers), not twenty.
    assert (peak - base) / 1024 < 4 * 6 + 40, (base, peak)
    after = requests.post(served.url + "/invocations", data=_split([_row()]),
                          headers={"Content-Type": "application/json"}, timeout=5)
    assert after.status_code == 200


def test_rows_over_the_limit_get_413_naming_the_limit(served: Server) -> None:
    for body, content_type in ((_split([_row(i) for i in range(11)]), "application/json"),
                               ((",".join(COLUMNS) + "\n" + "\n".join(
                                   ",".join(map(str, _row(i))) for i in range(11))).encode(),
                                "text/csv")):
        answer = requests.post(served.url + "/invocations", data=body,
                               headers={"Content-Type": content_type}, timeout=10)
        assert answer.status_code == 413, answer.text
        assert "10-row limit" in answer.json()["message"]
        assert "--max-rows" in answer.json()["message"]
    ok = requests.post(served.url + "/invocations", data=_split([_row(i) for i in range(10)]),
                       headers={"Content-Type": "application/json"}, timeout=10)
    assert ok.status_code == 200


# --------------------------------------------------------------------------- heads


def test_an_oversized_head_gets_431_and_the_server_stays_responsive(served: Server) -> None:
    sock = _connect(served)
    started = time.monotonic()
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ")
    with pytest.raises(OSError):  # the server closes while we still send
        for _ in range(4096):  # up to 128 MiB, as in the finding
            sock.sendall(b"a" * 32768)
    with contextlib.suppress(OSError):
        status, _ = _read_status(sock)
        assert status == 431
    sock.close()
    assert time.monotonic() - started < 5
    assert requests.get(served.url + "/ping", timeout=2).status_code == 200
    big = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16000 + b"\r\n\r\n"
    sock = _connect(served)
    sock.sendall(big)  # the whole head in one read
    assert _read_status(sock)[0] == 431
    sock.close()
    sock = _connect(served)  # ... as the second request of a keep-alive connection
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_status(sock)[0] == 200
    sock.sendall(big)
    assert _read_status(sock)[0] == 431
    sock.close()


def test_silent_and_slow_heads_get_408_and_are_closed(served: Server) -> None:
    silent = _connect(served)
    slow = _connect(served)
    started = time.monotonic()
    with contextlib.suppress(OSError):  # the server closes it when the second is over
        for byte in b"GET /ping HTTP/1.1\r\n":  # a byte every 0.2 s: over a second in all
            slow.sendall(bytes([byte]))
            time.sleep(0.2)
    for sock in (silent, slow):
        status, _ = _read_status(sock)
        assert status == 408
        assert sock.recv(1) == b""  # closed
        sock.close()
    assert time.monotonic() - started < 4


def test_a_thousand_idle_connections_do_not_lock_clients_out(served: Server) -> None:
    socks = [_connect(served) for _ in range(1000)]
    try:
        time.sleep(2)  # past --header-timeout: the server has closed them all
        answer = requests.get(served.url + "/ping", timeout=5)
        assert answer.status_code == 200
        closed = sum(1 for s in socks[:50] if _read_status(s)[0] == 408)
        assert closed == 50
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------- predictions


@pytest.fixture
def slow_served(slow_model: Path, tmp_path: Path) -> Iterator[Server]:
    server = start_serve(str(slow_model), tmp_path, "--prediction-timeout", "1.5",
                         "--max-class-labels", "5")
    yield server
    _stop(server)


def test_health_answers_at_once_while_a_long_prediction_runs(slow_served: Server) -> None:
    result: dict[str, requests.Response] = {}

    def post() -> None:
        result["slow"] = requests.post(slow_served.url + "/invocations", data=_slow(4),
                                       headers={"Content-Type": "application/json"},
                                       timeout=30)

    worker = threading.Thread(target=post)
    worker.start()
    time.sleep(0.5)
    # Each answers in well under the second it would wait if it queued behind the prediction
    # (not a latency figure: a loaded CI machine once took 102 ms), and all of them while the
    # prediction still runs.
    for path in ("/ping", "/health", "/v2/health/live", "/metrics"):
        started = time.monotonic()
        assert requests.get(slow_served.url + path, timeout=2).status_code == 200
        assert time.monotonic() - started < 1.0, path
    assert worker.is_alive()
    worker.join(30)
    # Past --prediction-timeout the client gets 504, while the prediction runs on (and holds
    # the prediction thread: a request now would wait for it, and time out too).
    assert result["slow"].status_code == 504
    assert "--prediction-timeout" in result["slow"].json()["message"]
    time.sleep(3)
    answer = requests.post(slow_served.url + "/invocations", data=_slow(0),
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {"predictions": ["a"]}
    assert _metric(slow_served, r'mlops_requests_total\{code="504"\} 1\.0')


def test_class_labels_from_model_output_are_bounded(slow_served: Server) -> None:
    for i in range(30):
        answer = requests.post(slow_served.url + "/invocations",
                               data=_slow(0, [f"k{i}-{j}" for j in range(10)]),
                               headers={"Content-Type": "application/json"}, timeout=30)
        assert answer.status_code == 200
    series = _metric(slow_served, r"mlops_predictions_total\{")
    assert len(series) == 6, series  # five values and __other__
    other = next(s for s in series if 'class="__other__"' in s)
    assert float(other.rsplit(" ", 1)[1]) == 300 - 5


# --------------------------------------------------------------------------- errors


def test_ragged_rows_are_a_400_logged_in_one_line(served: Server) -> None:
    rows = [_row(0), _row(1)[:3]]
    for _ in range(50):
        answer = requests.post(served.url + "/invocations", data=_split(rows),
                               headers={"Content-Type": "application/json"}, timeout=10)
        assert answer.status_code == 400, answer.text
    _stop(served)
    log = served.log.read_text()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "400 /invocations" in line]
    # Rate-limited: a few lines a second, the rest counted.
    assert 1 <= len(lines) <= 20, lines
    assert len(log) < 20_000


def test_the_status_label_is_the_status_sent(served: Server) -> None:
    for body, status in ((_split([_row()]), 200), (b"{", 400), (_split([[True] * 6]), 400)):
        answer = requests.post(served.url + "/invocations", data=body,
                               headers={"Content-Type": "application/json"}, timeout=10)
        assert answer.status_code == status
    answer = requests.post(served.url + "/invocations", data=b"x", timeout=10)
    assert answer.status_code == 415
    assert _metric(served, r'mlops_requests_total\{code="200"\} 1\.0')
    assert _metric(served, r'mlops_requests_total\{code="400"\} 2\.0')
    assert _metric(served, r'mlops_requests_total\{code="415"\} 1\.0')


# --------------------------------------------------------------------------- supervision


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(c) for c in children]
    return found


def test_a_killed_worker_is_restarted_and_readiness_reports_it(sk_model: Path,
                                                               tmp_path: Path) -> None:
    server = start_serve(str(sk_model), tmp_path, "--workers", "2")
    try:
        _wait_loaded(server, workers=2)
        victim = _children(server.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        saw_not_ready = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status = requests.get(server.url + "/health", timeout=2).status_code
            except requests.ConnectionError:  # a connection the killed worker had accepted
                continue
            saw_not_ready |= status == 503
            children = _children(server.process.pid)
            if saw_not_ready and len(children) == 2 and victim not in children and status == 200:
                break
            time.sleep(0.05)
        assert saw_not_ready
        assert len(_children(server.process.pid)) == 2
        assert requests.get(server.url + "/health", timeout=2).status_code == 200
        assert requests.get(server.url + "/ping", timeout=2).status_code == 200
        assert f"(pid {victim}) was killed by signal 9; starting it again" in \
            server.log.read_text()
    finally:
        assert _stop(server) == 0


def test_workers_that_keep_dying_make_the_master_exit_1(tmp_path: Path) -> None:
    script = tmp_path / "crashloop.py"
    script.write_text(
        "import os, socket, sys\n"
        "from pulumi_mlops.runtime.serve import server\n"
        "server._FIRST_BACKOFF_SECONDS = 0.01\n"
        "server._run_worker = lambda *a, **k: os._exit(7)\n"
        "options = server.ServeOptions(model_uri='unused', workers=2)\n"
        "listen = socket.socket(); listen.bind(('127.0.0.1', 0))\n"
        "sys.exit(server._Supervisor((listen,), options, None).run())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert "exited with code 7" in done.stderr
    assert "stopping" in done.stderr


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry run from ModelRegistry's rendered command, with model `limits` v1."""
    with registry_client(tmp_path_factory.mktemp("registry")) as registry:
        frame, target = training_frame()
        model = LogisticRegression().fit(frame, target)
        mlflow.set_experiment("serve-limits")
        with mlflow.start_run():
            mlflow.sklearn.log_model(model, name="model", input_example=frame.head(3),
                                     serialization_format="skops",
                                     registered_model_name="limits")
        yield registry


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_exits_0_and_removes_scratch_directories(registered: Registry, tmp_path: Path,
                                                         workers: int) -> None:
    """The finding: one worker exited 143 on SIGTERM and left its downloaded model behind."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = start_serve("models:/limits/1", tmp_path, "--workers", str(workers),
                         env={**registered.env(), "TMPDIR": str(scratch)})
    assert [p.name for p in scratch.iterdir() if p.name.startswith("mlops-model-")]
    assert requests.post(server.url + "/invocations", data=_split([_row()]),
                         headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 200
    assert _stop(server) == 0
    assert list(scratch.iterdir()) == []


def test_the_cli_refuses_a_bad_limit_naming_the_flag() -> None:
    done = subprocess.run([MLOPS, "serve", "--model-uri", "x", "--max-rows", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "max-rows" in done.stderr
