"""Compare MLflow's model server (`mlflow models serve`) with ours (`mlops serve`).

Both serve the same registered model version, ``models:/bench/1``: a scikit-learn
LogisticRegression on 20 numeric features, logged with an input example (so it has a signature) into
a throwaway MLflow store in a temp directory, behind a local ``mlflow server`` by default
(``--store sqlite`` opens the store directly). For each server the script measures cold start
(process start to the first 200 from ``GET /ping``), then drives ``POST /invocations`` with 1-row
and 100-row ``dataframe_split`` payloads from the same load generator: ``wrk`` when it is on PATH,
otherwise a small asyncio generator over raw keep-alive HTTP/1.1 connections. Before any server it
measures the generator's own ceiling against a trivial server, so results near that ceiling can be
read as generator-bound.

Everything listens on 127.0.0.1. Every process it starts is stopped (SIGTERM to its process group,
then SIGKILL) and the temp directory removed, also on Ctrl-C, SIGTERM and errors.

Usage::

    .venv/bin/python benchmarks/serve_benchmark.py --duration 10 --json out/serve.json

See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
PING_INTERVAL_S = 0.02
STOP_GRACE_S = 10.0

# The goals ours is held to, as ours/mlflow ratios.
GOAL_RPS_1_ROW = 10.0
GOAL_ROWS_PER_S_100_ROWS = 5.0
GOAL_COLD_START = 1 / 3

# A result above this share of the generator's ceiling says more about the generator than the
# server.
GENERATOR_BOUND_SHARE = 0.5

VENV_BIN = Path(sys.executable).parent


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


@dataclass
class ServerResult:
    """Cold start and load runs of one server; ``skipped`` says why when it did not run."""

    name: str
    command: list[str] = field(default_factory=list)
    cold_start_s: float | None = None
    loads: list[LoadResult] = field(default_factory=list)
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
               log: Path) -> float:
    """Poll ``GET /ping`` every 20 ms; return seconds from ``started`` to the first 200.

    Raises:
        BenchmarkError: the process exited, or no 200 came within ``timeout_s``.
    """
    url = f"http://{HOST}:{port}/ping"
    max_polls = int(timeout_s / PING_INTERVAL_S) + 1
    for _ in range(max_polls):
        if proc.poll() is not None:
            raise BenchmarkError(f"exited with code {proc.returncode} before answering /ping; "
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
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

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
    version = MlflowClient(tracking_uri).get_model_version(MODEL_NAME, "1")
    if version.status != "READY":
        raise BenchmarkError(f"registered {MODEL_URI} is {version.status}, not READY")
    return frame.head(max(PAYLOAD_ROWS)).to_numpy().tolist()


def payload(rows: list[list[float]], n: int) -> bytes:
    """The ``dataframe_split`` JSON body for the first ``n`` rows."""
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows[:n]}}).encode()


def post_once(port: int, body: bytes) -> tuple[int, bytes]:
    """One ``POST /invocations``; returns status and body (also for error statuses)."""
    req = urllib.request.Request(f"http://{HOST}:{port}/invocations", data=body, method="POST",
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


def run_wrk(server: str, port: int, body: bytes, rows: int, cfg: LoadConfig,
            workdir: Path) -> LoadResult:
    """Drive ``POST /invocations`` with wrk: a warm-up run, then the measured run.

    wrk counts responses with status >= 400 and socket errors (connect, read, write, timeout) as
    errors; both are reported together.
    """
    body_path = workdir / f"body-{rows}.json"
    body_path.write_bytes(body)
    script = workdir / f"post-{rows}.lua"
    script.write_text(_WRK_LUA.format(body_path=json.dumps(str(body_path))))
    url = f"http://{HOST}:{port}/invocations"
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
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def _percentile_ms(sorted_s: list[float], pct: float) -> float:
    if not sorted_s:
        return float("nan")
    index = min(len(sorted_s) - 1, max(0, round(pct / 100 * len(sorted_s) + 0.5) - 1))
    return sorted_s[index] * 1e3


def run_python(server: str, port: int, body: bytes, rows: int, cfg: LoadConfig,
               workdir: Path) -> LoadResult:
    """Drive ``POST /invocations`` with the asyncio generator (warm-up, then measured window).

    Only requests started after the warm-up and finished within the window count. Non-200
    responses and connection failures are errors.
    """
    del workdir
    request = (f"POST /invocations HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
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


LoadRunner = Callable[[str, int, bytes, int, LoadConfig, Path], LoadResult]


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
        return runner("trivial", port, body, 1, cfg, workdir)
    finally:
        procs.stop(proc)


# --------------------------------------------------------------------------------------------------
# Servers under test


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


def bench_server(name: str, command: Callable[[int], list[str]], procs: Processes,
                 runner: LoadRunner, bodies: dict[int, bytes], cfg: LoadConfig, workdir: Path,
                 env: dict[str, str], ready_timeout_s: float, cold_starts: int) -> ServerResult:
    """Time ``cold_starts`` cold starts (the median counts), check an answer per payload on the
    last server started, then load it."""
    result = ServerResult(name=name)
    log = workdir / f"{name}-server.log"
    samples: list[float] = []
    for attempt in range(1, cold_starts + 1):
        port = _free_port()
        argv = command(port)
        result.command = argv
        if attempt == 1:
            print(f"[{name}] starting: {shlex.join(argv)}", flush=True)
        started = time.perf_counter()
        try:
            proc = procs.start(argv, env=env, log=log, cwd=workdir)
        except FileNotFoundError as err:
            result.skipped = f"cannot start: {err}"
            return result
        try:
            samples.append(wait_ready(proc, port, started, ready_timeout_s, log))
        except BenchmarkError as err:
            result.skipped = str(err)
            print(f"[{name}] failed: {err}", file=sys.stderr, flush=True)
            procs.stop(proc)
            return result
        if attempt < cold_starts:
            procs.stop(proc)
    result.cold_start_s = statistics.median(samples)
    print(f"[{name}] ready after {result.cold_start_s:.2f} s (median of "
          f"{', '.join(f'{s:.2f}' for s in samples)})", flush=True)
    try:
        for rows, body in bodies.items():
            status, answer = post_once(port, body)
            if status != 200:
                print(f"[{name}] {rows}-row request answered {status}: {answer[:300]!r}; "
                      f"load run skipped", file=sys.stderr, flush=True)
                continue
            result.predictions[rows] = json.loads(answer)
            load = runner(name, port, body, rows, cfg, workdir)
            print(f"[{name}] {rows:>3} rows: {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, "
                  f"p99 {load.p99_ms:.2f} ms, {load.errors} errors", flush=True)
            result.loads.append(load)
    except BenchmarkError as err:
        result.skipped = str(err)
        print(f"[{name}] failed: {err}", file=sys.stderr, flush=True)
    finally:
        procs.stop(proc)
    return result


# --------------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return format(value, spec)


def ratios(mlflow: ServerResult | None, ours: ServerResult | None) -> list[dict[str, Any]]:
    """The ours/mlflow comparisons against the goals; ``met`` is None when a figure is missing."""
    def load(server: ServerResult | None, rows: int) -> LoadResult | None:
        return server.load(rows) if server else None

    out: list[dict[str, Any]] = []
    theirs, mine = load(mlflow, 1), load(ours, 1)
    value = mine.rps / theirs.rps if mine and theirs and theirs.rps else None
    out.append({"goal": "req/s at 1 row, ours/mlflow", "value": value,
                "target": f">= {GOAL_RPS_1_ROW:g}x",
                "met": None if value is None else value >= GOAL_RPS_1_ROW})
    theirs, mine = load(mlflow, 100), load(ours, 100)
    value = mine.rows_per_s / theirs.rows_per_s if mine and theirs and theirs.rows_per_s else None
    out.append({"goal": "rows/s at 100 rows, ours/mlflow", "value": value,
                "target": f">= {GOAL_ROWS_PER_S_100_ROWS:g}x",
                "met": None if value is None else value >= GOAL_ROWS_PER_S_100_ROWS})
    for rows in PAYLOAD_ROWS:
        theirs, mine = load(mlflow, rows), load(ours, rows)
        value = mine.p99_ms / theirs.p50_ms if mine and theirs and theirs.p50_ms else None
        out.append({"goal": f"our p99 / mlflow p50 at {rows} row{'s' * (rows > 1)}",
                    "value": value, "target": "< 1x",
                    "met": None if value is None else value < 1})
    theirs_s = mlflow.cold_start_s if mlflow else None
    mine_s = ours.cold_start_s if ours else None
    value = mine_s / theirs_s if mine_s is not None and theirs_s else None
    out.append({"goal": "cold start, ours/mlflow", "value": value,
                "target": f"<= {GOAL_COLD_START:.2f}x",
                "met": None if value is None else value <= GOAL_COLD_START})
    return out


def print_report(results: list[ServerResult], ceiling: LoadResult | None, generator: str,
                 cfg: LoadConfig) -> list[dict[str, Any]]:
    """Print the figures table, cold starts and goal ratios; returns the ratios."""
    print()
    print(f"generator: {generator}, {cfg.connections} connections, {cfg.duration_s:g} s "
          f"measured after {cfg.warmup_s:g} s warm-up, on {os.cpu_count()} cores shared with "
          f"the server")
    if ceiling:
        print(f"generator ceiling (1-row POST against a trivial asyncio server): "
              f"{ceiling.rps:,.0f} req/s, p50 {ceiling.p50_ms:.2f} ms, "
              f"p99 {ceiling.p99_ms:.2f} ms")
    print()
    header = f"{'server':<8} {'rows':>5} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} " \
             f"{'rows/s':>11} {'errors':>7}"
    print(header)
    print("-" * len(header))
    any_bound = False
    for result in results:
        if result.skipped and not result.loads:
            print(f"{result.name:<8} skipped: {result.skipped.splitlines()[0]} (details above)")
            continue
        for load in result.loads:
            mark = " *" if load.generator_bound else ""
            any_bound |= load.generator_bound
            print(f"{load.server:<8} {load.rows:>5} {_fmt(load.rps):>10} "
                  f"{_fmt(load.p50_ms, '.2f'):>9} {_fmt(load.p99_ms, '.2f'):>9} "
                  f"{_fmt(load.rows_per_s):>11} {load.errors:>7}{mark}")
    if any_bound:
        print(f"* at least {GENERATOR_BOUND_SHARE:.0%} of the generator ceiling: the generator, "
              f"not the server, may be the limit")
    print()
    for result in results:
        print(f"cold start {result.name:<7} {_fmt(result.cold_start_s, '.2f')} s")
    by_name = {r.name: r for r in results}
    mlflow, ours = by_name.get("mlflow"), by_name.get("ours")
    if mlflow and ours and mlflow.predictions and ours.predictions:
        same = all(ours.predictions.get(rows) == answer
                   for rows, answer in mlflow.predictions.items())
        print(f"predictions identical to MLflow's: {'yes' if same else 'NO'}")
    table = ratios(mlflow, ours)
    print()
    print(f"{'goal':<36} {'value':>8} {'target':>9}  met")
    for row in table:
        met = {None: "-", True: "yes", False: "NO"}[row["met"]]
        value = "-" if row["value"] is None else f"{row['value']:.2f}x"
        print(f"{row['goal']:<36} {value:>8} {row['target']:>9}  {met}")
    return table


# --------------------------------------------------------------------------------------------------
# Main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare `mlflow models serve` with `mlops serve` on the same registered "
        "model: cold start, throughput and latency for 1-row and 100-row payloads.")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per load run (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="warm-up seconds before each measured run (default: 2)")
    parser.add_argument("--connections", type=int, default=16,
                        help="concurrent keep-alive connections (default: 16)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator; auto uses wrk when on PATH (default: auto)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads; one leaves the other core to the server (default: 1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="workers for both servers (mlflow -w, mlops --workers); default: "
                        "each server's own default")
    parser.add_argument("--servers", nargs="+", choices=("mlflow", "ours"),
                        default=["mlflow", "ours"], help="servers to run (default: both)")
    parser.add_argument("--mlflow-cmd", default=str(VENV_BIN / "mlflow"),
                        help="MLflow CLI (default: the mlflow beside this Python)")
    parser.add_argument("--ours-cmd", default=f"{VENV_BIN / 'mlops'} serve",
                        help="our serve command, before its options (default: "
                        "'<venv bin>/mlops serve')")
    parser.add_argument("--cold-starts", type=int, default=3,
                        help="cold starts timed per server; the median is reported (default: 3)")
    parser.add_argument("--store", choices=("server", "sqlite"), default="server",
                        help="where the model is registered: a local `mlflow server` with "
                        "proxied artifacts, as deployed servers fetch models (default), or a "
                        "SQLite store both servers open directly")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for a 200 from /ping (default: 180)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    ns = _parser().parse_args(argv)
    if ns.trivial_server:
        trivial_server(ns.trivial_server)
        return 0
    if ns.duration <= 0 or ns.warmup < 0 or ns.connections < 1 or ns.cold_starts < 1:
        print("error: `--duration` must be > 0, `--warmup` >= 0, and `--connections` and "
              "`--cold-starts` >= 1", file=sys.stderr)
        return 2

    generator = ns.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
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
            bodies = {n: payload(rows, n) for n in PAYLOAD_ROWS}

            if not ns.skip_ceiling:
                print(f"measuring the {generator} generator's ceiling", flush=True)
                ceiling = measure_ceiling(procs, runner, bodies[1], cfg, tmp, env)

            for name in ns.servers:
                if name == "mlflow":
                    results.append(bench_server(
                        "mlflow", lambda port: mlflow_command(ns.mlflow_cmd, port, ns.workers),
                        procs, runner, bodies, cfg, tmp, env, ns.ready_timeout,
                        ns.cold_starts))
                    continue
                missing = ours_missing(ns.ours_cmd, env)
                if missing:
                    print(f"[ours] skipped: our server is not available yet ({missing}); "
                          f"set `--ours-cmd` if it lives elsewhere", file=sys.stderr, flush=True)
                    results.append(ServerResult(name="ours", skipped=missing))
                    continue
                results.append(bench_server(
                    "ours", lambda port: ours_command(ns.ours_cmd, port, ns.workers),
                    procs, runner, bodies, cfg, tmp, env, ns.ready_timeout,
                        ns.cold_starts))

            if ceiling:
                for result in results:
                    for load in result.loads:
                        load.generator_bound = load.rps >= GENERATOR_BOUND_SHARE * ceiling.rps
            table = print_report(results, ceiling, generator, cfg)
            if ns.json:
                ns.json.parent.mkdir(parents=True, exist_ok=True)
                ns.json.write_text(json.dumps({
                    "model_uri": MODEL_URI,
                    "store": ns.store,
                    "generator": generator,
                    "config": asdict(cfg) | {"workers": ns.workers, "cpus": os.cpu_count()},
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
    failed = [r for r in results if r.skipped and r.name == "mlflow"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
