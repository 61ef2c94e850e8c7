"""Compare `mlops serve` with its peers and with the bare ceiling, on the same model.

Every server serves the same scikit-learn LogisticRegression on 20 numeric features: registered
as ``models:/bench/1`` (logged with an input example, so it has a signature, and with a
training-data drift profile, so our drift monitor runs) in a throwaway MLflow store in a temp
directory, behind a local ``mlflow server`` by default (``--store sqlite`` opens the store
directly); servers that load a file get the very same estimator, dumped with joblib.

Servers (``--servers``, comma-separated):

- ``ours``: ``mlops serve`` (validation, metrics and drift on).
- ``ceiling``: the bare ceiling, `ceiling_server.py`: uvicorn + orjson + ``np.asarray`` +
  ``predict``, nothing else. ``ours / ceiling`` at the same worker count is our overhead.
- ``mlflow``: ``mlflow models serve --env-manager local``.
- ``mlserver-sklearn``: MLServer's scikit-learn runtime over the V2 protocol
  (``POST /v2/models/bench/infer``, an FP64 ``[rows, 20]`` tensor).
- ``mlserver-mlflow``: MLServer's MLflow runtime over ``/invocations`` (``dataframe_split``).
  Each MLServer runtime runs in its own virtual environment, created on first use under
  ``--venv-dir`` with pip, at MLServer's defaults and tuned (``debug`` off) at each
  ``parallel_workers`` of ``--mlserver-configs``.

For each server the script measures cold start (process start to the first 200 from its health
route), waits until the server's processes are idle (work a server defers past its first
answer, such as our background load of MLflow's pyfunc model for the general path, is over; the
wait is printed), then drives it with 1-row and 100-row requests from one load generator:
``wrk`` when it is on PATH, otherwise a small asyncio generator over raw keep-alive HTTP/1.1
connections. Each
of ``--rounds`` rounds starts every server in turn and loads it; the figures are medians over
the rounds. Before any server it measures the generator's own ceiling against a trivial server.

Everything listens on 127.0.0.1. Every process it starts is stopped (SIGTERM to its process group,
then SIGKILL) and the temp directory removed, also on Ctrl-C, SIGTERM and errors.

Usage::

    .venv/bin/python benchmarks/serve_benchmark.py --duration 10 --json out/serve.json
    .venv/bin/python benchmarks/serve_benchmark.py --servers ours,ceiling --workers 1,2
    .venv/bin/python benchmarks/serve_benchmark.py \
        --servers mlflow,ours,ceiling,mlserver-sklearn,mlserver-mlflow

See benchmarks/README.md for what each figure means.
"""


from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

MODEL_NAME = "bench"
MODEL_URI = f"models:/{MODEL_NAME}/1"
N_FEATURES = 20
COLUMNS = [f"f{i}" for i in range(N_FEATURES)]
HOST = "127.0.0.1"
PAYLOAD_ROWS = (1, 100)
ESTIMATOR_FILE = "model.joblib"
V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
SERVER_KINDS = ("mlflow", "ours", "ceiling", "mlserver-sklearn", "mlserver-mlflow")
MLSERVER_KINDS = ("mlserver-sklearn", "mlserver-mlflow")
PING_INTERVAL_S = 0.02
SETTLE_INTERVAL_S = 0.25
SETTLE_IDLE_SHARE = 0.05
SETTLE_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0

# The goals ours is held to, as ours/mlflow ratios.
GOAL_RPS_1_ROW = 10.0
GOAL_ROWS_PER_S_100_ROWS = 5.0
GOAL_COLD_START = 1 / 3
# ...and as shares of the bare ceiling (ours/ceiling at the same worker count), and against the
# best MLServer configuration.
GOAL_CEILING_SHARE_ONE_WORKER = 0.80
GOAL_CEILING_SHARE_WORKERS = 0.70
GOAL_MLSERVER = 1.0
AIM_MLSERVER = 1.5

# A result above this share of the generator's ceiling says more about the generator than the
# server.
GENERATOR_BOUND_SHARE = 0.5

VENV_BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class LoadResult:
    """Figures of one load run against one server with one payload size."""

    server: str
    rows: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    rows_per_s: float
    errors: int
    generator_bound: bool = False
    rounds: int = 1
    spread: float = 0.0


@dataclass
class ServerResult:
    """Cold start and load runs of one server; ``skipped`` says why when it did not run."""

    name: str
    kind: str = ""
    workers: int | None = None
    command: list[str] = field(default_factory=list)
    cold_start_s: float | None = None
    cold_starts_s: list[float] = field(default_factory=list)
    settle_s: list[float | None] = field(default_factory=list)
    loads: list[LoadResult] = field(default_factory=list)
    runs: list[LoadResult] = field(default_factory=list)
    skipped: str | None = None
    predictions: dict[int, Any] = field(default_factory=dict)

    def load(self, rows: int) -> LoadResult | None:
        """The load run with ``rows`` rows per request, if it ran."""
        return next((r for r in self.loads if r.rows == rows), None)


class BenchmarkError(RuntimeError):
    """A server or the load generator could not be run; the message says which and why."""


# --------------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Starts processes in their own process groups and always stops them all.

    Each process gets a new session, so its workers (uvicorn forks some) share its process group
    and the terminal's Ctrl-C reaches only this script, which then stops them in order.
    """

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], *, env: dict[str, str], log: Path,
              cwd: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` with output to ``log``; raises FileNotFoundError for a missing program."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group, wait up to the grace period, then SIGKILL what is left."""
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(5)
        # Workers can outlive their parent; the group id stays valid while any of them runs.
        deadline = time.monotonic() + STOP_GRACE_S
        while _signal_group(proc.pid, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still running, newest first."""
        for proc in reversed(list(self._procs)):
            try:
                self.stop(proc)
            except Exception as err:  # keep stopping the others
                print(f"warning: could not stop pid {proc.pid}: {err}", file=sys.stderr)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def wait_ready(proc: subprocess.Popen[bytes], port: int, started: float, timeout_s: float,
               log: Path, path: str = "/ping") -> float:
    """Poll ``GET path`` every 20 ms; return seconds from ``started`` to the first 200.

    Raises:
        BenchmarkError: the process exited, or no 200 came within ``timeout_s``.
    """
    url = f"http://{HOST}:{port}{path}"
    max_polls = int(timeout_s / PING_INTERVAL_S) + 1
    for _ in range(max_polls):
        if proc.poll() is not None:
            raise BenchmarkError(f"exited with code {proc.returncode} before answering {path}; "
                                 f"last lines of {log}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            pass
        if time.perf_counter() - started > timeout_s:
            break
        time.sleep(PING_INTERVAL_S)
    raise BenchmarkError(f"no 200 from {url} within {timeout_s:.0f} s; last lines of {log}:\n"
                         f"{_tail(log)}")


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group ``pgid``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited meanwhile
            continue
        # After the command name: state, ppid, pgrp, ... utime and stime are fields 14 and 15.
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_idle(pgid: int, timeout_s: float) -> float | None:
    """Wait until the server's processes stop using CPU on their own (under SETTLE_IDLE_SHARE of
    one core over SETTLE_INTERVAL_S twice in a row), so that work a server defers past its
    first answer (ours loads MLflow's pyfunc model for the general path in the background)
    is not measured as throughput; seconds waited, or None when it did not settle within
    ``timeout_s`` or /proc is missing."""
    if not Path(f"/proc/{pgid}/stat").exists():
        return None
    started = time.perf_counter()
    before, quiet = _group_cpu_s(pgid), 0
    while time.perf_counter() - started < timeout_s:
        time.sleep(SETTLE_INTERVAL_S)
        now = _group_cpu_s(pgid)
        quiet = quiet + 1 if now - before < SETTLE_IDLE_SHARE * SETTLE_INTERVAL_S else 0
        before = now
        if quiet >= 2:
            return time.perf_counter() - started
    return None


# --------------------------------------------------------------------------------------------------
# Reference model and payloads


def start_tracking_server(procs: Processes, tmp: Path, env: dict[str, str], mlflow_cmd: str,
                          timeout_s: float) -> str:
    """Run ``mlflow server`` on a throwaway SQLite store with proxied artifacts, as a deployed
    registry serves models; returns its tracking URI."""
    port = _free_port()
    log = tmp / "tracking-server.log"
    argv = [*shlex.split(mlflow_cmd), "server", "--host", HOST, "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
            "--artifacts-destination", str(tmp / "artifacts"), "--workers", "1"]
    proc = procs.start(argv, env=env, log=log, cwd=tmp)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"the tracking server exited ({proc.returncode}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise BenchmarkError(f"the tracking server did not answer /health:\n{_tail(log)}")


def train_reference_model(tmp: Path, tracking_uri: str) -> list[list[float]]:
    """Train, log and register the reference model as ``bench`` version 1 in the store.

    Returns:
        The feature rows payloads are cut from.
    """
    import joblib
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from pulumi_mlops.runtime.drift import PROFILE_ARTIFACT_PATH, build_profile

    mlflow.set_tracking_uri(tracking_uri)
    # A local store keeps artifacts in a directory; a server proxies them (its default).
    location = None if tracking_uri.startswith("http") else (tmp / "artifacts").as_uri()
    experiment_id = mlflow.create_experiment("serve-benchmark", artifact_location=location)
    features, labels = make_classification(n_samples=5000, n_features=N_FEATURES, random_state=0)
    frame = pd.DataFrame(features, columns=COLUMNS)
    model = LogisticRegression(max_iter=1000).fit(frame, labels)
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.sklearn.log_model(model, name="model", input_example=frame.head(5),
                                 registered_model_name=MODEL_NAME)
        # The training-data profile turns our server's drift monitor on, as a retrain job would.
        mlflow.log_dict(build_profile(frame), PROFILE_ARTIFACT_PATH)
    # The very estimator, for the servers that load a file rather than the registry (the
    # ceiling, MLServer's scikit-learn runtime).
    joblib.dump(model, tmp / ESTIMATOR_FILE)
    version = MlflowClient(tracking_uri).get_model_version(MODEL_NAME, "1")
    if version.status != "READY":
        raise BenchmarkError(f"registered {MODEL_URI} is {version.status}, not READY")
    return cast("list[list[float]]", frame.head(max(PAYLOAD_ROWS)).to_numpy().tolist())


def payload(rows: list[list[float]], n: int) -> bytes:
    """The ``dataframe_split`` JSON body for the first ``n`` rows."""
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows[:n]}}).encode()


def v2_payload(rows: list[list[float]], n: int) -> bytes:
    """The Open Inference Protocol (V2) body for the first ``n`` rows: one FP64 [n, 20] tensor."""
    flat = [value for row in rows[:n] for value in row]
    return json.dumps({"inputs": [{"name": "input-0", "shape": [n, N_FEATURES],
                                   "datatype": "FP64", "data": flat}]}).encode()


def post_once(port: int, body: bytes, path: str = "/invocations") -> tuple[int, bytes]:
    """One ``POST path``; returns status and body (also for error statuses)."""
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


# --------------------------------------------------------------------------------------------------
# Load generators


@dataclass
class LoadConfig:
    """How hard and how long to drive a server."""

    connections: int
    duration_s: float
    warmup_s: float
    wrk_threads: int


def _summarise(server: str, rows: int, requests: int, duration_s: float, p50_ms: float,
               p99_ms: float, errors: int) -> LoadResult:
    rps = requests / duration_s if duration_s > 0 else 0.0
    return LoadResult(server=server, rows=rows, requests=requests, duration_s=duration_s, rps=rps,
                      p50_ms=p50_ms, p99_ms=p99_ms, rows_per_s=rps * rows, errors=errors)


_WRK_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open({body_path}, "rb"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"status_errors": %d, "socket_errors": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def run_wrk(server: str, port: int, path: str, body: bytes, rows: int, cfg: LoadConfig,
            workdir: Path) -> LoadResult:
    """Drive ``POST path`` with wrk: a warm-up run, then the measured run.

    wrk counts responses with status >= 400 and socket errors (connect, read, write, timeout) as
    errors; both are reported together.
    """
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in server)
    body_path = workdir / f"body-{stem}-{rows}.json"
    body_path.write_bytes(body)
    script = workdir / f"post-{stem}-{rows}.lua"
    script.write_text(_WRK_LUA.format(body_path=json.dumps(str(body_path))))
    url = f"http://{HOST}:{port}{path}"
    threads = max(1, min(cfg.wrk_threads, cfg.connections))

    def wrk(duration_s: float) -> dict[str, Any]:
        argv = ["wrk", "-t", str(threads), "-c", str(cfg.connections),
                "-d", f"{max(1, round(duration_s))}s", "--timeout", "10s", "-s", str(script), url]
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=duration_s + 60, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                return dict(json.loads(line.removeprefix("BENCH_JSON ")))
        raise BenchmarkError(f"wrk printed no summary (exit {done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")

    if cfg.warmup_s > 0:
        wrk(cfg.warmup_s)
    out = wrk(cfg.duration_s)
    return _summarise(server, rows, int(out["requests"]), out["duration_us"] / 1e6,
                      out["p50_us"] / 1e3, out["p99_us"] / 1e3,
                      int(out["status_errors"]) + int(out["socket_errors"]))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; returns its status and whether the server will close."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            await reader.readexactly(size + 2)
    elif length:
        await reader.readexactly(length)
    return status, close


async def _python_load(port: int, request: bytes,
                       cfg: LoadConfig) -> tuple[list[float], int, float]:
    """Keep ``cfg.connections`` connections busy; returns latencies (s), errors, window (s)."""
    now = time.perf_counter()
    measure_from = now + cfg.warmup_s
    until = measure_from + cfg.duration_s
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while (start := time.perf_counter()) < until:
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(HOST, port)
                    assert reader is not None
                    writer.write(request)
                    status, close = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ValueError):
                    if start >= measure_from:
                        errors += 1
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    await asyncio.sleep(0.01)  # a refusing server must not become a busy loop
                    continue
                end = time.perf_counter()
                if start >= measure_from and end <= until:
                    if status == 200:
                        latencies.append(end - start)
                    else:
                        errors += 1
                if close:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(cfg.connections)]
    # A request stuck past the window must not hold the benchmark: cancel after a grace period.
    _, pending = await asyncio.wait(tasks, timeout=cfg.warmup_s + cfg.duration_s + 30)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return latencies, errors, cfg.duration_s


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return cast("Callable[[], asyncio.AbstractEventLoop]", uvloop.new_event_loop)


def _percentile_ms(sorted_s: list[float], pct: float) -> float:
    if not sorted_s:
        return float("nan")
    index = min(len(sorted_s) - 1, max(0, round(pct / 100 * len(sorted_s) + 0.5) - 1))
    return sorted_s[index] * 1e3


def run_python(server: str, port: int, path: str, body: bytes, rows: int, cfg: LoadConfig,
               workdir: Path) -> LoadResult:
    """Drive ``POST path`` with the asyncio generator (warm-up, then measured window).

    Only requests started after the warm-up and finished within the window count. Non-200
    responses and connection failures are errors.
    """
    del workdir
    request = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    # The parent holds MLflow and pandas; keep the collector from scanning them mid-run.
    gc.collect()
    gc.freeze()
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        latencies, errors, window = runner.run(_python_load(port, request, cfg))
    latencies.sort()
    return _summarise(server, rows, len(latencies), window, _percentile_ms(latencies, 50),
                      _percentile_ms(latencies, 99), errors)


LoadRunner = Callable[[str, int, str, bytes, int, LoadConfig, Path], LoadResult]


# --------------------------------------------------------------------------------------------------
# Trivial server, for the generator's ceiling


def trivial_server(port: int) -> None:
    """Answer every HTTP/1.1 request with a fixed 200 JSON response, as fast as Python can."""
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 20\r\n\r\n{\"predictions\": [0]}")

    class Fixed(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports do not subclass asyncio.Transport, hence the cast.
            self.transport = cast(asyncio.Transport, transport)
            self.buf = bytearray()

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                head = bytes(self.buf[:end]).lower()
                at = head.find(b"content-length:")
                length = 0
                if at >= 0:
                    stop = head.find(b"\r\n", at)
                    length = int(head[at + 15:stop if stop >= 0 else None])
                total = end + 4 + length
                if len(self.buf) < total:
                    return
                del self.buf[:total]
                self.transport.write(response)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Fixed, HOST, port, backlog=1024)
        async with server:
            await server.serve_forever()

    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(serve())


def measure_ceiling(procs: Processes, runner: LoadRunner, body: bytes, cfg: LoadConfig,
                    workdir: Path, env: dict[str, str]) -> LoadResult:
    """Run the generator against the trivial server (sharing the cores as a real server would)."""
    port = _free_port()
    log = workdir / "trivial-server.log"
    proc = procs.start([sys.executable, str(Path(__file__).resolve()), "--trivial-server",
                        str(port)], env=env, log=log, cwd=workdir)
    try:
        wait_ready(proc, port, time.perf_counter(), 30, log)
        return runner("trivial", port, "/invocations", body, 1, cfg, workdir)
    finally:
        procs.stop(proc)


# --------------------------------------------------------------------------------------------------
# Servers under test


@dataclass
class ServerSpec:
    """How to start, check and load one server configuration."""

    name: str
    kind: str
    command: Callable[[int], list[str]]
    bodies: dict[int, bytes]
    path: str = "/invocations"
    ready_path: str = "/ping"
    workers: int | None = None
    cold_starts: int = 1
    answer: Callable[[Any], Any] = lambda doc: doc["predictions"]


def mlflow_command(mlflow_cmd: str, port: int, workers: int | None) -> list[str]:
    """The ``mlflow models serve`` command line for ``port``."""
    argv = [*shlex.split(mlflow_cmd), "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
            "-h", HOST, "-p", str(port)]
    if workers:
        argv += ["-w", str(workers)]
    return argv


def ours_command(ours_cmd: str, port: int, workers: int | None) -> list[str]:
    """The ``mlops serve`` command line for ``port``."""
    argv = [*shlex.split(ours_cmd), "--model-uri", MODEL_URI, "--host", HOST, "--port", str(port)]
    if workers:
        argv += ["--workers", str(workers)]
    return argv


def ceiling_command(estimator: Path, port: int, workers: int | None) -> list[str]:
    """The bare ceiling (`ceiling_server.py`) command line for ``port``."""
    argv = [sys.executable, str(HERE / "ceiling_server.py"), "--model", str(estimator),
            "--host", HOST, "--port", str(port)]
    if workers:
        argv += ["--workers", str(workers)]
    return argv


def ours_missing(ours_cmd: str, env: dict[str, str]) -> str | None:
    """Why our server cannot run (no program, or no ``serve`` subcommand yet), or None."""
    argv = [*shlex.split(ours_cmd), "--help"]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return f"`{argv[0]}` not found"
    except subprocess.TimeoutExpired:
        return f"`{shlex.join(argv)}` did not answer within 120 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"`{shlex.join(argv)}` exited {done.returncode}: {last}"
    return None


def _mlserver_packages(kind: str) -> list[str]:
    """What the runtime's venv gets: MLServer and the runtime by package name, with the
    numerical stack pinned to this venv's versions, so that it loads and computes with the same
    code as the other servers."""
    from importlib.metadata import PackageNotFoundError, version

    # MLServer 1.7's inference-pool workers call asyncio.get_event_loop() with no loop set,
    # which uvloop 0.22 and later refuse: the pool workers die and no model loads.
    packages = ["mlserver", kind, "uvloop<0.22"]
    pinned = ["numpy", "scikit-learn"] + (["mlflow"] if kind == "mlserver-mlflow" else [])
    for name in pinned:
        try:
            packages.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            packages.append(name)
    return packages


def ensure_mlserver_venv(kind: str, venv_dir: Path) -> Path:
    """The virtual environment of an MLServer runtime, created with pip on first use.

    Raises:
        BenchmarkError: the venv could not be created or the packages not installed.
    """
    packages = _mlserver_packages(kind)
    venv = venv_dir / kind
    marker = venv / "bench-packages.txt"
    wanted = "\n".join(packages) + "\n"
    mlserver = venv / "bin" / "mlserver"
    if mlserver.exists() and marker.exists() and marker.read_text() == wanted:
        return venv
    venv_dir.mkdir(parents=True, exist_ok=True)
    (venv_dir / ".gitignore").write_text("*\n")
    log = venv_dir / f"{kind}-pip.log"
    print(f"[{kind}] creating {venv} with pip install {' '.join(packages)} (once; this takes "
          f"a few minutes, log in {log})", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    with log.open("wb") as out:
        for argv in ([sys.executable, "-m", "venv", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install",
                      "--disable-pip-version-check", *packages]):
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800,
                                      check=False, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise BenchmarkError(f"`{shlex.join(argv)}` took over 30 minutes") from None
            if done.returncode != 0:
                raise BenchmarkError(f"`{shlex.join(argv)}` exited {done.returncode}; last "
                                     f"lines of {log}:\n{_tail(log)}")
    marker.write_text(wanted)
    return venv


def mlserver_command(venv: Path, kind: str, config: str, repo: Path,
                     model_uri: str) -> Callable[[int], list[str]]:
    """A command factory for MLServer with one runtime: it writes the repository's
    ``settings.json`` (server-wide: ports, ``parallel_workers``, ``debug``) and the model's
    ``model-settings.json`` (runtime implementation, ``parameters.uri``) for ``port``.

    ``config`` is ``default`` (MLServer's own defaults: ``parallel_workers`` 1, ``debug`` on,
    which logs every request) or a ``parallel_workers`` count, run with ``debug`` off.
    """
    implementation = {"mlserver-sklearn": "mlserver_sklearn.SKLearnModel",
                      "mlserver-mlflow": "mlserver_mlflow.MLflowRuntime"}[kind]

    def command(port: int) -> list[str]:
        settings: dict[str, Any] = {
            "host": HOST, "http_port": port, "grpc_port": _free_port(),
            "metrics_port": _free_port(), "metrics_dir": str(repo / ".metrics"),
            "environments_dir": str(repo / ".envs"),
        }
        if config != "default":
            settings |= {"debug": False, "parallel_workers": int(config)}
        shutil.rmtree(repo, ignore_errors=True)
        (repo / MODEL_NAME).mkdir(parents=True)
        (repo / ".metrics").mkdir()
        (repo / "settings.json").write_text(json.dumps(settings, indent=2))
        (repo / MODEL_NAME / "model-settings.json").write_text(json.dumps({
            "name": MODEL_NAME, "implementation": implementation,
            "parameters": {"uri": model_uri, "version": "1"},
        }, indent=2))
        return [str(venv / "bin" / "mlserver"), "start", str(repo)]

    return command


def run_round(spec: ServerSpec, result: ServerResult, first: bool, procs: Processes,
              runner: LoadRunner, cfg: LoadConfig, workdir: Path, env: dict[str, str],
              ready_timeout_s: float) -> None:
    """Start the server (``spec.cold_starts`` times in the first round, timing each), check one
    answer per payload size in the first round, then load it once per size."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in spec.name)
    log = workdir / f"{stem}-server.log"
    starts = spec.cold_starts if first else 1
    proc: subprocess.Popen[bytes] | None = None
    port = 0
    for attempt in range(starts):
        port = _free_port()
        argv = spec.command(port)
        result.command = argv
        if first and attempt == 0:
            print(f"[{spec.name}] starting: {shlex.join(argv)}", flush=True)
        started = time.perf_counter()
        try:
            proc = procs.start(argv, env=env, log=log, cwd=workdir)
        except FileNotFoundError as err:
            result.skipped = f"cannot start: {err}"
            return
        try:
            result.cold_starts_s.append(
                wait_ready(proc, port, started, ready_timeout_s, log, spec.ready_path))
        except BenchmarkError as err:
            result.skipped = str(err)
            print(f"[{spec.name}] failed: {err}", file=sys.stderr, flush=True)
            procs.stop(proc)
            return
        if attempt < starts - 1:
            procs.stop(proc)
    assert proc is not None
    settled = wait_idle(proc.pid, SETTLE_TIMEOUT_S)
    result.settle_s.append(settled)
    print(f"[{spec.name}] ready after {result.cold_starts_s[-1]:.2f} s, idle "
          + (f"{settled:.2f} s later" if settled is not None else "not reached"), flush=True)
    try:
        for rows, body in spec.bodies.items():
            if first:
                status, answer = post_once(port, body, spec.path)
                if status != 200:
                    print(f"[{spec.name}] {rows}-row request answered {status}: "
                          f"{answer[:300]!r}; load runs skipped", file=sys.stderr, flush=True)
                    continue
                result.predictions[rows] = spec.answer(json.loads(answer))
            elif rows not in result.predictions:
                continue
            load = runner(spec.name, port, spec.path, body, rows, cfg, workdir)
            print(f"[{spec.name}] {rows:>3} rows: {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, "
                  f"p99 {load.p99_ms:.2f} ms, {load.errors} errors", flush=True)
            result.runs.append(load)
    except BenchmarkError as err:
        result.skipped = str(err)
        print(f"[{spec.name}] failed: {err}", file=sys.stderr, flush=True)
    finally:
        procs.stop(proc)


def median_load(runs: list[LoadResult]) -> LoadResult:
    """One figure per field over the rounds: medians of req/s and latencies, sums of counts."""
    rps = statistics.median(r.rps for r in runs)
    rows = runs[0].rows
    return LoadResult(
        server=runs[0].server, rows=rows, requests=sum(r.requests for r in runs),
        duration_s=sum(r.duration_s for r in runs), rps=rps,
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs), rows_per_s=rps * rows,
        errors=sum(r.errors for r in runs), rounds=len(runs),
        spread=(max(r.rps for r in runs) - min(r.rps for r in runs)) / rps if rps else 0.0)


def finish(result: ServerResult) -> None:
    """Reduce the rounds of a server to its medians."""
    for rows in PAYLOAD_ROWS:
        runs = [r for r in result.runs if r.rows == rows]
        if runs:
            result.loads.append(median_load(runs))
    if result.cold_starts_s:
        result.cold_start_s = statistics.median(result.cold_starts_s)


# --------------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return format(value, spec)


def _effective_workers(result: ServerResult) -> int | None:
    if result.kind in ("ours", "ceiling"):
        return result.workers or 1
    return result.workers


def best_mlserver(results: list[ServerResult], rows: int) -> tuple[ServerResult, LoadResult] | None:
    """The MLServer configuration with the most req/s at ``rows`` rows, if any ran."""
    candidates = [(r, load) for r in results if r.kind in MLSERVER_KINDS
                  if (load := r.load(rows)) is not None]
    return max(candidates, key=lambda c: c[1].rps, default=None)


def _ratio(mine: LoadResult | None, theirs: LoadResult | None) -> float | None:
    return mine.rps / theirs.rps if mine and theirs and theirs.rps else None


def ratios(results: list[ServerResult]) -> list[dict[str, Any]]:
    """Every goal with its value; ``met`` is None when a figure is missing."""
    def load(server: ServerResult | None, rows: int) -> LoadResult | None:
        return server.load(rows) if server else None

    def goal(name: str, value: float | None, target: str, met: bool | None) -> None:
        out.append({"goal": name, "value": value, "target": target,
                    "met": None if value is None else met})

    out: list[dict[str, Any]] = []
    ours_all = [r for r in results if r.kind == "ours"]
    for ours in ours_all:
        w = _effective_workers(ours) or 1
        ceiling = next((r for r in results if r.kind == "ceiling"
                        and _effective_workers(r) == w), None)
        share = GOAL_CEILING_SHARE_ONE_WORKER if w == 1 else GOAL_CEILING_SHARE_WORKERS
        for rows in PAYLOAD_ROWS:
            value = _ratio(load(ours, rows), load(ceiling, rows))
            goal(f"{ours.name} / ceiling, {rows} row{'s' * (rows > 1)}, {w} worker"
                 f"{'s' * (w > 1)}", value, f">= {share:.2f}x",
                 value is not None and value >= share)
        for rows in PAYLOAD_ROWS:
            best = best_mlserver(results, rows)
            value = _ratio(load(ours, rows), best[1] if best else None)
            goal(f"{ours.name} / best MLServer, {rows} row{'s' * (rows > 1)}", value,
                 f"> {GOAL_MLSERVER:g}x, aim {AIM_MLSERVER:g}x",
                 value is not None and value > GOAL_MLSERVER)
    first = ours_all[0] if ours_all else None
    mlflow = next((r for r in results if r.kind == "mlflow"
                   and (first is None or r.workers == first.workers)), None)
    value = _ratio(load(first, 1), load(mlflow, 1))
    goal("req/s at 1 row, ours/mlflow", value, f">= {GOAL_RPS_1_ROW:g}x",
         value is not None and value >= GOAL_RPS_1_ROW)
    value = _ratio(load(first, 100), load(mlflow, 100))
    goal("rows/s at 100 rows, ours/mlflow", value, f">= {GOAL_ROWS_PER_S_100_ROWS:g}x",
         value is not None and value >= GOAL_ROWS_PER_S_100_ROWS)
    for rows in PAYLOAD_ROWS:
        mine, theirs = load(first, rows), load(mlflow, rows)
        value = mine.p99_ms / theirs.p50_ms if mine and theirs and theirs.p50_ms else None
        goal(f"our p99 / mlflow p50 at {rows} row{'s' * (rows > 1)}", value, "< 1x",
             value is not None and value < 1)
    mine_s = first.cold_start_s if first else None
    theirs_s = mlflow.cold_start_s if mlflow else None
    value = mine_s / theirs_s if mine_s is not None and theirs_s else None
    goal("cold start, ours/mlflow", value, f"<= {GOAL_COLD_START:.2f}x",
         value is not None and value <= GOAL_COLD_START)
    return out


def print_report(results: list[ServerResult], ceiling: LoadResult | None, generator: str,
                 cfg: LoadConfig, rounds: int) -> list[dict[str, Any]]:
    """Print the figures table, ours against the ceiling and MLServer, cold starts and goal
    ratios; returns the ratios."""
    print()
    print(f"generator: {generator}, {cfg.connections} connections, {cfg.duration_s:g} s "
          f"measured after {cfg.warmup_s:g} s warm-up, median of {rounds} round"
          f"{'s' * (rounds > 1)}, on {os.cpu_count()} cores shared with the server")
    if ceiling:
        print(f"generator ceiling (1-row POST against a trivial asyncio server): "
              f"{ceiling.rps:,.0f} req/s, p50 {ceiling.p50_ms:.2f} ms, "
              f"p99 {ceiling.p99_ms:.2f} ms")
    print()
    width = max([len(r.name) for r in results] + [8])
    header = (f"{'server':<{width}} {'workers':>7} {'rows':>5} {'req/s':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'rows/s':>10} {'spread':>7} {'errors':>6}")
    print(header)
    print("-" * len(header))
    any_bound = False
    for result in results:
        if result.skipped and not result.loads:
            print(f"{result.name:<{width}} skipped: {result.skipped.splitlines()[0]} "
                  f"(details above)")
            continue
        for load in result.loads:
            mark = " *" if load.generator_bound else ""
            any_bound |= load.generator_bound
            print(f"{result.name:<{width}} {_fmt(_effective_workers(result), 'd'):>7} "
                  f"{load.rows:>5} {_fmt(load.rps):>9} {_fmt(load.p50_ms, '.2f'):>8} "
                  f"{_fmt(load.p99_ms, '.2f'):>8} {_fmt(load.rows_per_s):>10} "
                  f"{_fmt(100 * load.spread, '.0f') + '%':>7} {load.errors:>6}{mark}")
    if any_bound:
        print(f"* at least {GENERATOR_BOUND_SHARE:.0%} of the generator ceiling: the generator, "
              f"not the server, may be the limit")
    print("spread: (max - min) / median of req/s over the rounds")

    ours_all = [r for r in results if r.kind == "ours" and r.loads]
    if ours_all:
        print()
        print("ours against the bare ceiling (same workers) and the best MLServer configuration:")
        for ours in ours_all:
            w = _effective_workers(ours)
            ceiling_r = next((r for r in results if r.kind == "ceiling"
                              and _effective_workers(r) == w), None)
            for rows in PAYLOAD_ROWS:
                mine = ours.load(rows)
                if mine is None:
                    continue
                share = _ratio(mine, ceiling_r.load(rows) if ceiling_r else None)
                best = best_mlserver(results, rows)
                versus = _ratio(mine, best[1] if best else None)
                best_text = (f"{versus:.2f}x {best[0].name} ({best[1].rows_per_s:,.0f} rows/s)"
                             if best and versus is not None else "-")
                print(f"  {ours.name:<{width}} {rows:>3} row{'s' * (rows > 1):<1}  "
                      f"{mine.rows_per_s:>10,.0f} rows/s  ceiling share "
                      f"{_fmt(share, '.2f'):>5}  vs best MLServer {best_text}")
    print()
    for result in results:
        print(f"cold start {result.name:<{width}} {_fmt(result.cold_start_s, '.2f')} s")
    reference = next((r for r in results if r.kind == "ours" and r.predictions), None)
    if reference:
        for result in results:
            if result is reference or not result.predictions:
                continue
            same = all(reference.predictions.get(rows) == answer
                       for rows, answer in result.predictions.items())
            print(f"predictions of {result.name} identical to {reference.name}: "
                  f"{'yes' if same else 'NO'}")
    table = ratios(results)
    print()
    gwidth = max(len(row["goal"]) for row in table)
    print(f"{'goal':<{gwidth}} {'value':>8} {'target':>18}  met")
    for row in table:
        met = {None: "-", True: "yes", False: "NO"}[row["met"]]
        value = "-" if row["value"] is None else f"{row['value']:.2f}x"
        print(f"{row['goal']:<{gwidth}} {value:>8} {row['target']:>18}  {met}")
    return table


# --------------------------------------------------------------------------------------------------
# Main


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare `mlops serve` with the bare ceiling, MLServer and `mlflow models "
        "serve` on the same model: cold start, throughput and latency for 1-row and 100-row "
        "payloads.")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per load run (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="warm-up seconds before each measured run (default: 2)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds; each starts and loads every server once, figures are "
                        "medians over the rounds (default: 2)")
    parser.add_argument("--connections", type=int, default=16,
                        help="concurrent keep-alive connections (default: 16)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator; auto uses wrk when on PATH (default: auto)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads; one leaves the other core to the server (default: 1)")
    parser.add_argument("--workers", default=None,
                        help="worker counts for ours, the ceiling and mlflow, comma-separated "
                        "(e.g. 1,2: each server runs once per count); default: each server's "
                        "own default (1)")
    parser.add_argument("--servers", nargs="+", default=["mlflow,ours,ceiling"],
                        help=f"servers to run, comma-separated, from {','.join(SERVER_KINDS)} "
                        "(default: mlflow,ours,ceiling)")
    parser.add_argument("--mlserver-configs", default="default,0,1,2",
                        help="MLServer configurations: `default` (its defaults) and "
                        "parallel_workers counts run with debug off (default: default,0,1,2)")
    parser.add_argument("--venv-dir", type=Path, default=HERE / ".bench-venvs",
                        help="where MLServer's virtual environments are created on first use "
                        "(default: benchmarks/.bench-venvs)")
    parser.add_argument("--mlflow-cmd", default=str(VENV_BIN / "mlflow"),
                        help="MLflow CLI (default: the mlflow beside this Python)")
    parser.add_argument("--ours-cmd", default=f"{VENV_BIN / 'mlops'} serve",
                        help="our serve command, before its options (default: "
                        "'<venv bin>/mlops serve')")
    parser.add_argument("--cold-starts", type=int, default=3,
                        help="cold starts timed for ours and mlflow in the first round; the "
                        "median over all starts is reported (default: 3)")
    parser.add_argument("--store", choices=("server", "sqlite"), default="server",
                        help="where the model is registered: a local `mlflow server` with "
                        "proxied artifacts, as deployed servers fetch models (default), or a "
                        "SQLite store the servers open directly")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for a 200 from the health route (default: 180)")
    parser.add_argument("--skip-ceiling", action="store_true",
                        help="do not measure the generator's ceiling")
    parser.add_argument("--json", metavar="OUT", type=Path,
                        help="also write all figures as JSON to OUT")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temp directory (store, logs) and print its path")
    parser.add_argument("--trivial-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the same cleanup runs for both."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _with_port(command: Callable[[Any, int, int | None], list[str]], first: Any, port: int,
               *, workers: int | None) -> list[str]:
    return command(first, port, workers)


def build_specs(ns: argparse.Namespace, kinds: list[str], workers: list[int | None],
                rows: list[list[float]], tmp: Path, env: dict[str, str]) -> list[ServerSpec]:
    """One spec per server configuration, in the order they run in a round; servers that
    cannot run here become skipped results via the BenchmarkError they raise."""
    bodies = {n: payload(rows, n) for n in PAYLOAD_ROWS}
    specs: list[ServerSpec] = []

    def suffix(w: int | None) -> str:
        return f"[w={w}]" if len(workers) > 1 else ""

    for kind in kinds:
        if kind == "ceiling":
            for w in workers:
                specs.append(ServerSpec(
                    f"ceiling{suffix(w)}", kind,
                    functools.partial(_with_port, ceiling_command, tmp / ESTIMATOR_FILE,
                                      workers=w), bodies, workers=w))
        elif kind == "ours":
            for w in workers:
                specs.append(ServerSpec(
                    f"ours{suffix(w)}", kind,
                    functools.partial(_with_port, ours_command, ns.ours_cmd, workers=w),
                    bodies, workers=w, cold_starts=ns.cold_starts))
        elif kind == "mlflow":
            for w in workers:
                specs.append(ServerSpec(
                    f"mlflow{suffix(w)}", kind,
                    functools.partial(_with_port, mlflow_command, ns.mlflow_cmd, workers=w),
                    bodies, workers=w, cold_starts=ns.cold_starts))
        else:
            venv = ensure_mlserver_venv(kind, ns.venv_dir)
            sklearn = kind == "mlserver-sklearn"
            for config in _csv(ns.mlserver_configs):
                name = kind if config == "default" else f"{kind}[pw={config}]"
                specs.append(ServerSpec(
                    name, kind,
                    # No glob characters in the repository path: MLServer globs under it.
                    mlserver_command(venv, kind, config, tmp / f"repo-{kind}-{config}",
                                     str(tmp / ESTIMATOR_FILE) if sklearn else MODEL_URI),
                    {n: v2_payload(rows, n) for n in PAYLOAD_ROWS} if sklearn else bodies,
                    path=V2_PATH if sklearn else "/invocations",
                    ready_path=f"/v2/models/{MODEL_NAME}/ready",
                    answer=(lambda doc: doc["outputs"][0]["data"]) if sklearn
                    else (lambda doc: doc["predictions"])))
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    ns = _parser().parse_args(argv)
    if ns.trivial_server:
        trivial_server(ns.trivial_server)
        return 0
    kinds = list(dict.fromkeys(k for arg in ns.servers for k in _csv(arg)))
    unknown = sorted(set(kinds) - set(SERVER_KINDS))
    try:
        workers: list[int | None] = ([int(w) for w in _csv(ns.workers)] if ns.workers
                                     else [None])
        configs = _csv(ns.mlserver_configs)
        bad_config = [c for c in configs if c != "default" and not c.isdigit()]
    except ValueError:
        workers, bad_config = [], []
    if (ns.duration <= 0 or ns.warmup < 0 or ns.connections < 1 or ns.cold_starts < 1
            or ns.rounds < 1 or unknown or not workers or bad_config
            or any(w is not None and w < 1 for w in workers)):
        print(f"error: `--duration` must be > 0, `--warmup` >= 0, `--connections`, "
              f"`--cold-starts`, `--rounds` and `--workers` >= 1, `--mlserver-configs` "
              f"`default` or counts, and `--servers` from {','.join(SERVER_KINDS)}",
              file=sys.stderr)
        return 2

    generator = ns.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
        if generator == "python":
            print("wrk is not on PATH (apt-get install wrk): using the Python generator",
                  file=sys.stderr, flush=True)
    elif generator == "wrk" and not shutil.which("wrk"):
        print("error: `--generator wrk` but wrk is not on PATH; install it "
              "(apt-get install wrk) or use `--generator python`", file=sys.stderr)
        return 2
    runner: LoadRunner = run_wrk if generator == "wrk" else run_python
    cfg = LoadConfig(connections=ns.connections, duration_s=ns.duration, warmup_s=ns.warmup,
                     wrk_threads=ns.wrk_threads)

    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    tmp = Path(tempfile.mkdtemp(prefix="serve-benchmark-"))
    procs = Processes()
    results: list[ServerResult] = []
    ceiling: LoadResult | None = None
    try:
        with _terminate_as_interrupt():
            # The venvs first: an install failure should not cost a training run.
            for kind in MLSERVER_KINDS:
                if kind in kinds:
                    try:
                        ensure_mlserver_venv(kind, ns.venv_dir)
                    except BenchmarkError as err:
                        print(f"[{kind}] skipped: {err}", file=sys.stderr, flush=True)
                        results.append(ServerResult(name=kind, kind=kind, skipped=str(err)))
                        kinds.remove(kind)
            if "ours" in kinds:
                missing = ours_missing(ns.ours_cmd, env)
                if missing:
                    print(f"[ours] skipped: our server is not available yet ({missing}); "
                          f"set `--ours-cmd` if it lives elsewhere", file=sys.stderr, flush=True)
                    results.append(ServerResult(name="ours", kind="ours", skipped=missing))
                    kinds.remove("ours")
            if ns.store == "server":
                tracking_uri = start_tracking_server(procs, tmp, env, ns.mlflow_cmd,
                                                     ns.ready_timeout)
            else:
                tracking_uri = f"sqlite:///{tmp}/mlflow.db"
            print(f"training and registering {MODEL_URI} at {tracking_uri}", flush=True)
            rows = train_reference_model(tmp, tracking_uri)
            env["MLFLOW_TRACKING_URI"] = tracking_uri
            # `mlflow models serve` execs `uvicorn` from PATH: put the venv's bin first, as an
            # activated venv would.
            mlflow_bin = shutil.which(shlex.split(ns.mlflow_cmd)[0])
            if mlflow_bin:
                env["PATH"] = os.pathsep.join([str(Path(mlflow_bin).parent), env.get("PATH", "")])

            if not ns.skip_ceiling:
                print(f"measuring the {generator} generator's ceiling", flush=True)
                ceiling = measure_ceiling(procs, runner, payload(rows, 1), cfg, tmp, env)

            specs = build_specs(ns, kinds, workers, rows, tmp, env)
            by_spec = {spec.name: ServerResult(name=spec.name, kind=spec.kind,
                                               workers=spec.workers) for spec in specs}
            for round_no in range(ns.rounds):
                print(f"round {round_no + 1} of {ns.rounds}", flush=True)
                # Alternate the order, so that no server always runs right after the same one.
                order = specs if round_no % 2 == 0 else list(reversed(specs))
                for spec in order:
                    result = by_spec[spec.name]
                    if result.skipped and not result.runs and round_no > 0:
                        continue
                    run_round(spec, result, round_no == 0, procs, runner, cfg, tmp, env,
                              ns.ready_timeout)
            for result in by_spec.values():
                finish(result)
            results = list(by_spec.values()) + results

            if ceiling:
                for result in results:
                    for load in result.loads:
                        load.generator_bound = load.rps >= GENERATOR_BOUND_SHARE * ceiling.rps
            table = print_report(results, ceiling, generator, cfg, ns.rounds)
            if ns.json:
                ns.json.parent.mkdir(parents=True, exist_ok=True)
                ns.json.write_text(json.dumps({
                    "model_uri": MODEL_URI,
                    "store": ns.store,
                    "generator": generator,
                    "config": asdict(cfg) | {"workers": workers, "rounds": ns.rounds,
                                             "cpus": os.cpu_count(),
                                             "mlserver_configs": configs},
                    "ceiling": asdict(ceiling) if ceiling else None,
                    "servers": {r.name: {k: v for k, v in asdict(r).items()
                                         if k != "predictions"} for r in results},
                    "ratios": table,
                }, indent=2) + "\n")
                print(f"\nwrote {ns.json}")
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not leave servers running behind us.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            procs.stop_all()
            if ns.keep_tmp:
                print(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    failed = [r for r in results if r.skipped and r.kind in ("mlflow", "ours") and not r.loads]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
