"""`mlops serve --exit-when-unhealthy-seconds`: real processes, on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow.sklearn
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from pulumi_mlops.runtime.serve.watchdog import EXIT_UNHEALTHY, HealthWatchdog, probe_host
from tests.unit.serving_data import training_frame

BOUND = 60.0  # no wait in these tests is longer

# A server whose /health answers 200 until the file named by argv[2] exists, then 503 (or,
# with argv[3] == "hang", no answer at all), watched by the watchdog in the same process.
SERVER = textwrap.dedent("""
    import http.server, os, sys, threading, time
    from pulumi_mlops.runtime.serve.watchdog import HealthWatchdog
    flag, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if os.path.exists(flag):
                if mode == "hang":
                    time.sleep(3600)
                self.send_response(503)
            else:
                self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    HealthWatchdog("127.0.0.1", server.server_address[1], seconds).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()
""")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever still runs at its end is killed by PID."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=BOUND)
        if process.stdout is not None:
            process.stdout.close()


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + BOUND
    while health(port) != 200:
        assert process.poll() is None, "the server exited before it became healthy"
        assert time.monotonic() < deadline, "the server never became healthy"
        time.sleep(0.2)


def start_toy(tmp_path: Path, started: list[subprocess.Popen[bytes]], mode: str,
              seconds: float) -> tuple[subprocess.Popen[bytes], int, Path]:
    flag = tmp_path / "unhealthy"
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(flag), mode, str(seconds)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started.append(process)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, port, flag


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_a_server_unhealthy_for_the_bound_exits_4_within_it(
        tmp_path: Path, started: list[subprocess.Popen[bytes]], mode: str) -> None:
    seconds = 1.5
    process, port, flag = start_toy(tmp_path, started, mode, seconds)
    wait_healthy(port, process)
    time.sleep(0.5)  # a probe has seen it healthy: the watchdog is armed

    flag.touch()
    failed = time.monotonic()
    code = process.wait(timeout=BOUND)
    took = time.monotonic() - failed

    assert code == EXIT_UNHEALTHY
    # Not before the bound; after it, at most one probe interval and one probe timeout more.
    assert seconds <= took <= seconds + 3
    assert process.stdout is not None
    assert "/health has failed for" in process.stdout.read().decode()


def test_a_server_never_healthy_is_left_to_its_start_up_deadline(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    flag = tmp_path / "unhealthy"
    flag.touch()  # unhealthy from the start: the watchdog never arms
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(flag), "503", "0.5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(process)
    time.sleep(3)
    assert process.poll() is None


def test_a_stopped_watchdog_never_calls_out() -> None:
    calls: list[float] = []
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    watchdog = HealthWatchdog("127.0.0.1", port, 0.3, on_unhealthy=lambda: calls.append(1))
    watchdog.stop()
    watchdog.start()
    time.sleep(1)
    assert calls == []


@pytest.mark.parametrize(("bind", "probe"), [("0.0.0.0", "127.0.0.1"), ("::", "::1"),
                                             ("127.0.0.1", "127.0.0.1")])
def test_the_probe_reaches_a_wildcard_bind_over_loopback(bind: str, probe: str) -> None:
    assert probe_host(bind) == probe


# ------------------------------------------------------- `mlops serve` itself, as Docker runs it


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame, target = training_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, target)
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def start_serve(model_path: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]],
                *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "pulumi_mlops.cli", "serve", "--model-uri", str(model_path),
               "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    started.append(process)
    wait_healthy(port, process)
    return process, port, log


def test_mlops_serve_whose_workers_hang_exits_4_and_takes_them_along(
        model_path: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    seconds = 2.0
    master, _, log = start_serve(model_path, tmp_path, started, "--workers", "2",
                                 "--exit-when-unhealthy-seconds", str(seconds))
    workers = children(master.pid)
    assert len(workers) == 2
    time.sleep(1)  # armed

    hung = time.monotonic()
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # alive, answering nothing
        code = master.wait(timeout=BOUND)
        took = time.monotonic() - hung
    finally:
        for pid in workers:  # stopped by this test: never left behind
            if master.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    assert code == EXIT_UNHEALTHY
    assert seconds <= took <= seconds + 8
    deadline = time.monotonic() + BOUND
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "the hung workers outlived their master"
        time.sleep(0.1)
    assert "/health has failed for" in log.read_text()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_mlops_serve_draining_after_sigterm_exits_0_not_4(
        model_path: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    # Draining answers 503 on /health for longer than the watchdog's bound: that is stopping,
    # not being unhealthy.
    server, port, _ = start_serve(model_path, tmp_path, started, "--drain-seconds", "3",
                                  "--exit-when-unhealthy-seconds", "1")
    time.sleep(1)  # armed

    server.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert health(port) == 503

    assert server.wait(timeout=BOUND) == 0
