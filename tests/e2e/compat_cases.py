"""The request cases of the MLflow-compatibility suite, how a case is sent to both servers, and
how the two answers are judged.

Every case is sent unchanged to `mlflow models serve` and to `mlops serve` serving the same
saved model (tests/e2e/compat_models.py). Outcomes:

- ``identical``: same status; for 200 the same JSON (floats exactly, NaN equal to NaN, int and
  float told apart); for errors the same JSON body.
- ``deliberate-a`` (lossy coercion): MLflow answers 200 after silently converting a value
  (2.9 into an integer column, "7" into a number, true into a double, ±Inf into an integer),
  `mlops serve` answers 400 naming the column. Only for cases marked with `lossy_column`; the
  same cases against `mlops serve --coerce lossy` must be identical.
- ``deliberate-b`` (error detail): both answer the same error status and, where both bodies are
  JSON, the same `error_code`; message or stack trace differ.
- ``deliberate-c`` (HTTP strictness): `mlops serve` answers the case's `strict_status` (415
  missing Content-Type, 405 wrong method, 413 body too large) where MLflow does something else.
- ``different``: anything else; this is what the suite exists to find.

Used by tests/e2e/test_mlflow_compat.py and scripts/mlflow_compat_report.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from tests.e2e.compat_models import IRIS_COLUMNS, MODELS
from tests.e2e.ports import free_port

# ---------------------------------------------------------------------------------------------
# Servers

BIN = Path(sys.executable).parent
START_TIMEOUT = 150.0
REQUEST_TIMEOUT = 60.0

MLFLOW, MLOPS, MLOPS_LOSSY = "mlflow", "mlops", "mlops-lossy"


@dataclass
class Server:
    """One server process: `kind` is mlflow, mlops or mlops-lossy."""

    model: str
    kind: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    error: str | None = None  # why it is not serving, when it is not

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def _command(kind: str, model_path: Path, port: int) -> list[str]:
    if kind == MLFLOW:
        return [str(BIN / "mlflow"), "models", "serve", "-m", str(model_path),
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    extra = ["--coerce", "lossy"] if kind == MLOPS_LOSSY else []
    return [str(BIN / "mlops"), "serve", "--model-uri", str(model_path), "--host", "127.0.0.1",
            "--port", str(port), *extra]


def start_servers(model_paths: dict[str, Path], log_dir: Path,
                  servers: dict[tuple[str, str], Server]) -> None:
    """Into `servers`, start in parallel MLflow's server and `mlops serve` for every model (and
    `mlops serve --coerce lossy` where the model asks for it), then wait for every /ping. A
    server that exits or does not answer in time gets `error` set, so its cases fail and the
    others run. Every process is in `servers` as soon as it is started, for `stop_servers`."""
    # MLflow's CLI runs `uvicorn` from PATH; telemetry off; nothing reads the repository.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    wanted = [(spec.name, kind) for spec in MODELS
              for kind in [MLFLOW, MLOPS] + ([MLOPS_LOSSY] if spec.coerce_lossy else [])]
    # Distinct ports: free_port() may hand out a port again once its probe socket is closed,
    # and two servers on one port would answer each other's /ping and requests.
    ports: list[int] = []
    for _ in range(len(wanted) * 20):
        if len(ports) == len(wanted):
            break
        if (port := free_port()) not in ports:
            ports.append(port)
    for (name, kind), port in zip(wanted, ports, strict=True):
        log = log_dir / f"{name}.{kind}.log"
        server = Server(name, kind, port, log)
        with log.open("wb") as out:
            # Its own session, so stopping it stops the uvicorn MLflow's CLI starts too.
            server.process = subprocess.Popen(
                _command(kind, model_paths[name], port), env=env, cwd=log_dir,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        servers[(name, kind)] = server
    deadline = time.monotonic() + START_TIMEOUT
    waiting = dict(servers)
    while waiting and time.monotonic() < deadline:
        for key, server in list(waiting.items()):
            assert server.process is not None
            if server.process.poll() is not None:
                server.error = f"exited with {server.process.returncode} before answering /ping"
                del waiting[key]
                continue
            with contextlib.suppress(requests.RequestException):
                if requests.get(server.url + "/ping", timeout=1).status_code == 200:
                    del waiting[key]
        time.sleep(0.2)
    for server in waiting.values():
        server.error = f"did not answer /ping within {START_TIMEOUT:.0f} s"
    time.sleep(0.5)  # one that lost its port to another process has exited by now
    for server in servers.values():
        assert server.process is not None
        if server.error is None and server.process.poll() is not None:
            server.error = f"exited with {server.process.returncode} after /ping was answered"


def stop_servers(servers: dict[tuple[str, str], Server]) -> None:
    """Stop every process `start_servers` started (its session, by the PID it was given)."""
    running = [s.process for s in servers.values()
               if s.process is not None and s.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Reply:
    """What a server answered (or, for client cases, what MLflow's client returned)."""

    status: int
    content_type: str
    body: bytes

    def excerpt(self, limit: int = 300) -> str:
        text = self.body.decode("utf-8", errors="replace").replace("\n", " ")
        return f"{self.status} {text[:limit]}{'...' if len(text) > limit else ''}"


@dataclass(frozen=True)
class Case:
    """One request, sent identically to both servers of `model`.

    `body` may be a callable (built when sent, for large bodies). `call`, when given, replaces
    the HTTP request (MLflow's client). `target` MLOPS_LOSSY sends it to `mlops serve --coerce
    lossy` instead. `lossy_column` marks a deliberate (a) difference, `strict_status` a
    deliberate (c) one; `compare_body` False compares statuses only.
    """

    model: str
    name: str
    body: bytes | Callable[[], bytes] | None = None
    content_type: str | None = "application/json"
    method: str = "POST"
    path: str = "/invocations"
    call: Callable[[str], Reply] | None = None
    target: str = MLOPS
    lossy_column: str | None = None
    strict_status: int | None = None
    compare_body: bool = True

    @property
    def id(self) -> str:
        suffix = "-lossy-mode" if self.target == MLOPS_LOSSY else ""
        return f"{self.model}-{self.name}{suffix}"

    def send(self, base_url: str) -> Reply:
        if self.call is not None:
            return self.call(base_url)
        body = self.body() if callable(self.body) else self.body
        headers = {} if self.content_type is None else {"Content-Type": self.content_type}
        r = requests.request(self.method, base_url + self.path, data=body, headers=headers,
                             timeout=REQUEST_TIMEOUT)
        return Reply(r.status_code, r.headers.get("content-type", ""), r.content)


def js(obj: Any) -> bytes:
    """JSON as Python writes it (NaN and Infinity as bare tokens)."""
    return json.dumps(obj).encode()


def split_of(frame: pd.DataFrame, index: bool = False) -> dict[str, Any]:
    doc = frame.to_dict(orient="split")
    if not index:
        doc.pop("index", None)
    return doc


def parquet_of(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def _client_invoke(data: Any, params: dict[str, Any] | None = None) -> Callable[[str], Reply]:
    def call(base_url: str) -> Reply:
        from mlflow.pyfunc.scoring_server.client import ScoringServerClient

        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLflow's own, while it builds the request
                response = ScoringServerClient(host, int(port)).invoke(data, params=params)
        except Exception as err:  # the client raises Exception for any non-200
            text = str(err).split("(error code ", 1)[-1]
            status = int(text.split(",", 1)[0]) if text[:3].isdigit() else 599
            return Reply(status, "client-error", str(err).encode())
        return Reply(200, "application/json", json.dumps(dict(response)).encode())
    return call


def _client_version(base_url: str) -> Reply:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    return Reply(200, "text", ScoringServerClient(host, int(port)).get_version().encode())


IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
CSV, PARQUET = "text/csv", "application/vnd.apache.parquet"


def _iris_frame() -> pd.DataFrame:
    return pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS)


def _protocol_cases(model: str) -> list[Case]:
    """Transport-level cases every model gets."""
    ok = js({"dataframe_split": split_of(_iris_frame())})
    return [
        Case(model, "ping", method="GET", path="/ping", content_type=None, compare_body=False),
        Case(model, "health", method="GET", path="/health", content_type=None,
             compare_body=False),
        Case(model, "version", method="GET", path="/version", content_type=None),
        Case(model, "client-get-version", call=_client_version),
        Case(model, "malformed-json", b"this is,,,, not valid json"),
        Case(model, "json-list", b"[1, 2]"),
        Case(model, "json-scalar", b'"1"'),
        Case(model, "no-format-key", js({"not": "a dataframe"})),
        Case(model, "two-format-keys", js({"dataframe_records": [], "dataframe_split": {}})),
        Case(model, "not-utf8", b'{"inputs": "\xff\xfe"}'),
        Case(model, "content-type-text-plain", ok, content_type="text/plain"),
        Case(model, "content-type-unknown-param", ok,
             content_type="application/json; something=x"),
        Case(model, "content-type-latin1", ok, content_type="application/json; charset=latin-1"),
        Case(model, "content-type-missing", ok, content_type=None, strict_status=415),
        Case(model, "get-invocations", method="GET", content_type=None, strict_status=405),
    ]


def _iris_cases(model: str) -> list[Case]:
    frame = _iris_frame()
    records = frame.to_dict(orient="records")
    columns = {c: frame[c].tolist() for c in frame.columns}
    nan_rows = [[float("nan"), 3.5, 1.4, 0.2], *IRIS_ROWS[1:]]
    inf_rows = [[float("inf"), 3.5, 1.4, 0.2], *IRIS_ROWS[1:]]
    extra = frame.assign(extra=["x", "y", "z"])
    int_valued = [{**r, "sepal_length": 5} for r in records]
    big_rows = 400_000

    def big() -> bytes:  # > 16 MiB, the default --max-body-bytes
        doc = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": IRIS_ROWS * big_rows}}
        return js(doc)

    return [
        Case(model, "split", js({"dataframe_split": split_of(frame)})),
        Case(model, "split-with-index", js({"dataframe_split": split_of(frame, index=True)})),
        Case(model, "split-charset-utf8", js({"dataframe_split": split_of(frame)}),
             content_type="application/json; charset=UTF-8"),
        Case(model, "split-index-length-mismatch", js(
            {"dataframe_split": {"columns": IRIS_COLUMNS, "index": [0, 1],
                                 "data": IRIS_ROWS}})),
        Case(model, "split-as-records-list", js({"dataframe_split": records})),
        Case(model, "records-as-split-dict", js({"dataframe_records": split_of(frame)})),
        Case(model, "split-integer-column-names", js(
            {"dataframe_split": pd.DataFrame(np.array(IRIS_ROWS)).to_dict(orient="split")})),
        Case(model, "records", js({"dataframe_records": records})),
        Case(model, "records-empty", js({"dataframe_records": []})),
        Case(model, "records-integer-values", js({"dataframe_records": int_valued})),
        Case(model, "instances-records", js({"instances": records})),
        Case(model, "instances-columns", js({"instances": columns})),
        Case(model, "inputs-columns", js({"inputs": columns})),
        Case(model, "inputs-records", js({"inputs": records})),
        Case(model, "inputs-list-of-lists", js({"inputs": IRIS_ROWS})),
        Case(model, "extra-top-level-key", js({"dataframe_split": split_of(frame),
                                                "model_version": "7"})),
        Case(model, "split-extra-column", js({"dataframe_split": split_of(extra)})),
        Case(model, "split-missing-column", js(
            {"dataframe_split": split_of(frame.drop(columns="petal_width"))})),
        Case(model, "split-nan-token", js(
            {"dataframe_split": {"columns": IRIS_COLUMNS, "data": nan_rows}})),
        Case(model, "split-infinity-token", js(
            {"dataframe_split": {"columns": IRIS_COLUMNS, "data": inf_rows}})),
        Case(model, "records-null-in-double", js(
            {"dataframe_records": [{**records[0], "sepal_width": None}, *records[1:]]})),
        Case(model, "records-word-in-double", js(
            {"dataframe_records": [{**records[0], "sepal_width": "wide"}, *records[1:]]})),
        Case(model, "records-numeric-string-in-double", js(
            {"dataframe_records": [{**records[0], "sepal_width": "3.5"}, *records[1:]]}),
            lossy_column="sepal_width"),
        Case(model, "records-bool-in-double", js(
            {"dataframe_records": [{**records[0], "sepal_width": True}, *records[1:]]}),
            lossy_column="sepal_width"),
        Case(model, "csv-with-index", frame.to_csv().encode(), content_type=CSV),
        Case(model, "csv-without-index", frame.to_csv(index=False).encode(), content_type=CSV),
        Case(model, "csv-empty", b"", content_type=CSV),
        Case(model, "parquet", parquet_of(frame), content_type=PARQUET),
        Case(model, "parquet-as-application-parquet", parquet_of(frame),
             content_type="application/parquet"),
        Case(model, "parquet-garbage", b"PAR1 not really", content_type=PARQUET),
        Case(model, "client-invoke-dataframe", call=_client_invoke(frame)),
        Case(model, "over-body-limit", big, strict_status=413),
    ]


def _sk_ridge_cols_cases(model: str) -> list[Case]:
    frame = _iris_frame().drop(columns="petal_width")
    rows = [[round(0.37 * i + 4.1, 3), round(3.3 - 0.11 * i, 3), round(1.1 + 0.9 * i, 3)]
            for i in range(25)]
    many = pd.DataFrame(rows, columns=frame.columns)
    return [
        Case(model, "split-25-rows", js({"dataframe_split": split_of(many)})),
        Case(model, "records", js({"dataframe_records": frame.to_dict(orient="records")})),
        Case(model, "inputs-columns", js({"inputs": {c: frame[c].tolist() for c in frame}})),
        Case(model, "csv-without-index", many.to_csv(index=False).encode(), content_type=CSV),
        Case(model, "csv-with-index", many.to_csv().encode(), content_type=CSV),
        Case(model, "parquet", parquet_of(many), content_type=PARQUET),
        Case(model, "split-nan-token", js({"dataframe_split": {
            "columns": list(frame.columns), "data": [[float("nan"), 3.0, 1.0]]}})),
        Case(model, "client-invoke-dataframe", call=_client_invoke(many)),
    ]


def _sk_ridge_tensor_cases(model: str) -> list[Case]:
    rows_int = [[5, 3, 1, 0], [6, 3, 4, 1]]
    return [
        Case(model, "inputs-list-of-lists", js({"inputs": IRIS_ROWS})),
        Case(model, "instances-list-of-lists", js({"instances": IRIS_ROWS})),
        Case(model, "inputs-integers", js({"inputs": rows_int})),
        Case(model, "inputs-wrong-width", js({"inputs": [r[:3] for r in IRIS_ROWS]})),
        Case(model, "inputs-flat", js({"inputs": IRIS_ROWS[0]})),
        Case(model, "inputs-nan-token", js({"inputs": [[float("nan"), 1.0, 1.0, 1.0]]})),
        Case(model, "inputs-null", js({"inputs": [[None, 1.0, 1.0, 1.0]]})),
        Case(model, "inputs-string-number", js({"inputs": [["5.1", 1.0, 1.0, 1.0]]}),
             lossy_column=""),
        Case(model, "inputs-string-number", js({"inputs": [["5.1", 1.0, 1.0, 1.0]]}),
             target=MLOPS_LOSSY),
        Case(model, "inputs-bool", js({"inputs": [[True, 1.0, 1.0, 1.0]]}), lossy_column=""),
        Case(model, "inputs-bool", js({"inputs": [[True, 1.0, 1.0, 1.0]]}),
             target=MLOPS_LOSSY),
        Case(model, "split-integer-column-names", js(
            {"dataframe_split": pd.DataFrame(np.array(IRIS_ROWS)).to_dict(orient="split")})),
        Case(model, "records-named-columns", js(
            {"dataframe_records": _iris_frame().to_dict(orient="records")})),
        Case(model, "csv-without-index", _iris_frame().to_csv(index=False).encode(),
             content_type=CSV),
        Case(model, "parquet", parquet_of(_iris_frame()), content_type=PARQUET),
        Case(model, "client-invoke-ndarray", call=_client_invoke(np.array(IRIS_ROWS))),
    ]


def _pipeline_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "count": np.array([51, 62, 77], dtype="int32"),
        "width": np.array([3.5, 2.9, 3.0], dtype="float32"),
        "petal": np.array([1.4, 4.3, 6.1], dtype="float32"),
    })


def _sk_pipeline_cases(model: str) -> list[Case]:
    frame = _pipeline_frame()
    records = [{"count": 51, "width": 3.5, "petal": 1.4}, {"count": 62, "width": 2.9,
                                                             "petal": 4.3}]
    lossy = [
        ("records-fraction-into-int32", [{**records[0], "count": 51.9}, records[1]], "count"),
        ("records-numeric-string-into-int32", [{**records[0], "count": "7"}, records[1]],
         "count"),
        ("records-bool-into-float32", [{**records[0], "width": True}, records[1]], "width"),
        ("records-infinity-into-int32", [{**records[0], "count": float("inf")}, records[1]],
         "count"),
        # MLflow wraps it around to another number.
        ("records-int64-range-into-int32", [{**records[0], "count": 2**40}, records[1]],
         "count"),
    ]
    cases = [
        Case(model, "records", js({"dataframe_records": records})),
        Case(model, "records-whole-float-into-int32", js(
            {"dataframe_records": [{**records[0], "count": 51.0}, records[1]]})),
        Case(model, "split", js({"dataframe_split": split_of(frame)})),
        Case(model, "inputs-columns", js({"inputs": {c: frame[c].tolist() for c in frame}})),
        Case(model, "instances-records", js({"instances": records})),
        Case(model, "csv-without-index", frame.to_csv(index=False).encode(), content_type=CSV),
        Case(model, "csv-with-index", frame.to_csv().encode(), content_type=CSV),
        Case(model, "parquet-int32-float32", parquet_of(frame), content_type=PARQUET),
        Case(model, "parquet-int64-float64", parquet_of(frame.astype("float64").astype(
            {"count": "int64"})), content_type=PARQUET),
        Case(model, "client-invoke-dataframe", call=_client_invoke(frame)),
    ]
    for name, rows, column in lossy:
        body = js({"dataframe_records": rows})
        cases.append(Case(model, name, body, lossy_column=column))
        cases.append(Case(model, name, body, target=MLOPS_LOSSY))
    return cases


def _sk_nosig_cases(model: str) -> list[Case]:
    array = np.array(IRIS_ROWS)
    return [
        Case(model, "split-integer-column-names", js(
            {"dataframe_split": pd.DataFrame(array).to_dict(orient="split")})),
        Case(model, "split-named-columns", js({"dataframe_split": split_of(_iris_frame())})),
        Case(model, "records-named", js({"dataframe_records": _iris_frame().to_dict(
            orient="records")})),
        Case(model, "instances-list-of-lists", js({"instances": IRIS_ROWS})),
        Case(model, "inputs-list-of-lists", js({"inputs": IRIS_ROWS})),
        Case(model, "inputs-integers", js({"inputs": [[5, 3, 1, 0]]})),
        Case(model, "csv-with-index", _iris_frame().to_csv().encode(), content_type=CSV),
        Case(model, "csv-without-index", _iris_frame().to_csv(index=False).encode(),
             content_type=CSV),
        Case(model, "parquet", parquet_of(_iris_frame()), content_type=PARQUET),
        Case(model, "split-wrong-width", js(
            {"dataframe_split": pd.DataFrame(array[:, :3]).to_dict(orient="split")})),
        Case(model, "split-nan-token", js({"dataframe_split": {
            "columns": [0, 1, 2, 3], "data": [[float("nan"), 1.0, 1.0, 1.0]]}})),
        Case(model, "client-invoke-ndarray", call=_client_invoke(array)),
    ]


SCALAR_RECORD = {"boolean": True, "integer": 3, "long": 2**40, "float": 1.5,
                 "double": 0.1, "string": "héllo", "binary": "AQID",
                 "datetime": "2021-01-01T00:00:00"}


def _echo_scalars_cases(model: str) -> list[Case]:
    r2 = {"boolean": False, "integer": -7, "long": 5, "float": 0.25, "double": 1e300,
          "string": "", "binary": "", "datetime": "2021-03-03 12:00:00"}
    frame = pd.DataFrame([SCALAR_RECORD, r2])
    csv_frame = frame.drop(columns=["binary"])
    typed = pd.DataFrame({
        "boolean": [True, False], "integer": np.array([1, 2], "int32"),
        "long": np.array([1, 2], "int64"), "float": np.array([0.5, 1.5], "float32"),
        "double": [0.1, 0.2], "string": ["a", "b"], "binary": [b"\x01\x02", b"\x03"],
        "datetime": pd.to_datetime(["2021-01-01 00:00:00", "2021-02-02 10:00:00"])})

    def rec(**changes: Any) -> bytes:
        return js({"dataframe_records": [{**SCALAR_RECORD, **changes}]})

    lossy = [
        ("fraction-into-integer", {"integer": 2.9}, "integer"),
        ("fraction-into-long", {"long": 2.9}, "long"),
        ("numeric-string-into-long", {"long": "7"}, "long"),
        ("numeric-string-into-double", {"double": "7.5"}, "double"),
        ("bool-into-double", {"double": True}, "double"),
        ("bool-into-long", {"long": False}, "long"),
        ("infinity-into-integer", {"integer": float("inf")}, "integer"),
        ("minus-infinity-into-long", {"long": float("-inf")}, "long"),
        # MLflow makes every one of them True ("false" included).
        ("int-into-boolean", {"boolean": 1}, "boolean"),
        ("string-into-boolean", {"boolean": "true"}, "boolean"),
        ("string-false-into-boolean", {"boolean": "false"}, "boolean"),
        ("fraction-into-boolean", {"boolean": 0.5}, "boolean"),
    ]
    cases = [
        Case(model, "records", js({"dataframe_records": frame.to_dict(orient="records")})),
        Case(model, "split", js({"dataframe_split": split_of(frame)})),
        Case(model, "split-with-index", js({"dataframe_split": split_of(frame, index=True)})),
        Case(model, "instances-records", js({"instances": [SCALAR_RECORD, r2]})),
        Case(model, "inputs-columns", js({"inputs": {c: frame[c].tolist() for c in frame}})),
        Case(model, "inputs-single-record-scalars", js({"inputs": SCALAR_RECORD})),
        Case(model, "csv-without-binary", csv_frame.to_csv(index=False).encode(),
             content_type=CSV),
        Case(model, "csv-all-columns-with-index", frame.to_csv().encode(), content_type=CSV),
        Case(model, "parquet-typed", parquet_of(typed), content_type=PARQUET),
        Case(model, "whole-float-into-integer", rec(integer=3.0)),
        Case(model, "int-into-double", rec(double=3)),
        Case(model, "fraction-into-float32", rec(float=0.1)),
        Case(model, "huge-double-into-float32", rec(float=1e300)),
        Case(model, "nan-into-double", rec(double=float("nan"))),
        Case(model, "nan-into-integer", rec(integer=float("nan"))),
        Case(model, "infinity-into-double", rec(double=float("inf"))),
        Case(model, "null-into-double", rec(double=None)),
        Case(model, "null-into-string", rec(string=None)),
        Case(model, "null-into-long", rec(long=None)),
        Case(model, "null-into-boolean", rec(boolean=None)),
        Case(model, "number-into-string", rec(string=12)),
        Case(model, "word-into-long", rec(long="seven")),
        Case(model, "bad-base64-binary", rec(binary="not base64!")),
        Case(model, "date-only-datetime", rec(datetime="2021-01-01")),
        Case(model, "zulu-datetime", rec(datetime="2021-01-01T00:00:00Z")),
        Case(model, "epoch-number-datetime", rec(datetime=1609459200)),
        Case(model, "garbage-datetime", rec(datetime="yesterday-ish")),
        Case(model, "missing-column", js({"dataframe_records": [
            {k: v for k, v in SCALAR_RECORD.items() if k != "string"}]})),
        Case(model, "extra-column", rec(surplus=1)),
    ]
    for name, change, column in lossy:
        cases.append(Case(model, name, rec(**change), lossy_column=column))
        cases.append(Case(model, name, rec(**change), target=MLOPS_LOSSY))
    return cases


def _echo_optional_params_cases(model: str) -> list[Case]:
    rows = [{"a": 1, "b": "x", "c": 0.5}, {"a": 2, "b": "y", "c": 1.5}]
    return [
        Case(model, "records-all-fields", js({"dataframe_records": rows})),
        Case(model, "records-omit-optional", js({"dataframe_records": [{"a": 1}, {"a": 2}]})),
        Case(model, "records-omit-optional-in-one-row", js(
            {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "c": 2.5}]})),
        Case(model, "records-null-optional", js(
            {"dataframe_records": [{"a": 1, "b": None, "c": None}]})),
        Case(model, "records-missing-required", js({"dataframe_records": [{"b": "x"}]})),
        Case(model, "split-required-only", js({"dataframe_split": {"columns": ["a"],
                                                                   "data": [[1], [2]]}})),
        Case(model, "inputs-mixing-scalars-and-lists", js({"inputs": {"a": [1, 2], "b": "x"}})),
        Case(model, "inputs-scalars", js({"inputs": {"a": 1, "b": "x"}})),
        Case(model, "inputs-records", js({"inputs": rows})),
        Case(model, "instances-records", js({"instances": rows})),
        Case(model, "params-all", js({"dataframe_records": rows, "params": {
            "temperature": 0.9, "max_tokens": 99, "stop": ["a", "b"], "verbose": True,
            "when": "2024-05-06T07:08:09"}})),
        Case(model, "params-some", js({"dataframe_records": rows,
                                       "params": {"max_tokens": 5}})),
        Case(model, "params-int-for-double", js({"dataframe_records": rows,
                                                 "params": {"temperature": 1}})),
        Case(model, "params-wrong-type", js({"dataframe_records": rows,
                                             "params": {"temperature": "hot"}})),
        Case(model, "params-fraction-for-long", js({"dataframe_records": rows,
                                                    "params": {"max_tokens": 2.5}})),
        Case(model, "params-scalar-for-list", js({"dataframe_records": rows,
                                                  "params": {"stop": "x"}})),
        Case(model, "params-unknown", js({"dataframe_records": rows,
                                          "params": {"nonsense": 1}})),
        Case(model, "params-not-a-dict", js({"dataframe_records": rows, "params": [1, 2]})),
        Case(model, "params-with-inputs", js({"inputs": {"a": [1]},
                                              "params": {"verbose": True}})),
        Case(model, "params-with-csv-ignored", b"a,b\n1,x\n", content_type=CSV),
        Case(model, "model-raises", js({"dataframe_records": [{"a": -1}]})),
        Case(model, "client-invoke-with-params", call=_client_invoke(
            pd.DataFrame(rows), params={"temperature": 0.1, "stop": ["z"]})),
    ]


def _echo_complex_cases(model: str) -> list[Case]:
    row = {"tags": [1, 2, 3], "point": {"x": 1.5, "label": "p"}, "counts": {"a": 1, "b": 2},
           "anything": {"nested": [1, "two", None]}}
    row2 = {"tags": [], "point": {"x": 0.0}, "counts": {}, "anything": 7}
    return [
        Case(model, "records", js({"dataframe_records": [row, row2]})),
        Case(model, "records-omit-any", js({"dataframe_records": [
            {k: v for k, v in row.items() if k != "anything"}]})),
        Case(model, "split", js({"dataframe_split": {"columns": list(row),
                                                     "data": [list(row.values())]}})),
        Case(model, "inputs-records", js({"inputs": [row, row2]})),
        Case(model, "inputs-columns", js({"inputs": {k: [row[k], row2[k]] for k in row}})),
        Case(model, "instances-records", js({"instances": [row, row2]})),
        Case(model, "array-with-string-element", js({"dataframe_records": [
            {**row, "tags": [1, "two"]}]})),
        Case(model, "array-with-fraction-element", js({"dataframe_records": [
            {**row, "tags": [1, 2.5]}]})),
        Case(model, "object-missing-required-property", js({"dataframe_records": [
            {**row, "point": {"label": "p"}}]})),
        Case(model, "object-extra-property", js({"dataframe_records": [
            {**row, "point": {"x": 1.0, "z": 2}}]})),
        Case(model, "map-with-string-value", js({"dataframe_records": [
            {**row, "counts": {"a": "one"}}]})),
        Case(model, "array-as-scalar", js({"dataframe_records": [{**row, "tags": 5}]})),
    ]


def _echo_tensor_cases() -> list[Case]:
    one, three, multi = "echo_tensor_1d", "echo_tensor_3d", "echo_tensor_multi"
    cube = [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[0.5, 0.25, 0.125], [7.0, 8.0, 9.0]]]
    a, b = [[1.0, 2.0], [3.0, 4.0]], [[1, 2, 3], [4, 5, 6]]
    return [
        Case(one, "inputs-list", js({"inputs": [1.0, 2.5, -3.0]})),
        Case(one, "inputs-integers", js({"inputs": [1, 2, 3]})),
        Case(one, "instances-list", js({"instances": [1.0, 2.5]})),
        Case(one, "inputs-scalar", js({"inputs": 4.0})),
        Case(one, "inputs-2d", js({"inputs": [[1.0], [2.0]]})),
        Case(one, "inputs-nan-infinity", js({"inputs": [float("nan"), float("inf")]})),
        Case(one, "inputs-null", js({"inputs": [1.0, None]})),
        Case(one, "split-one-column", js({"dataframe_split": {"columns": ["x"],
                                                              "data": [[1.0], [2.0]]}})),
        Case(one, "csv", b"x\n1.0\n2.0\n", content_type=CSV),
        Case(three, "inputs", js({"inputs": cube})),
        Case(three, "instances", js({"instances": cube})),
        Case(three, "inputs-float64-precision", js({"inputs": [[[0.1, 0.2, 0.3],
                                                                [1e-50, 1e50, 3.0]]]})),
        Case(three, "inputs-wrong-shape", js({"inputs": [[1.0, 2.0, 3.0]]})),
        Case(three, "inputs-ragged", js({"inputs": [[[1.0, 2.0], [3.0]]]})),
        Case(three, "split-flat", js({"dataframe_split": {"columns": ["a", "b"],
                                                          "data": [[1.0, 2.0]]}})),
        Case(multi, "inputs-named", js({"inputs": {"a": a, "b": b}})),
        Case(multi, "instances-named", js({"instances": [{"a": a[0], "b": b[0]},
                                                         {"a": a[1], "b": b[1]}]})),
        Case(multi, "inputs-missing-b", js({"inputs": {"a": a}})),
        Case(multi, "inputs-extra-c", js({"inputs": {"a": a, "b": b, "c": [[1]]}})),
        Case(multi, "inputs-fraction-into-int64", js(
            {"inputs": {"a": a, "b": [[1.5, 2, 3], [4, 5, 6]]}}), lossy_column="b"),
        Case(multi, "inputs-fraction-into-int64", js(
            {"inputs": {"a": a, "b": [[1.5, 2, 3], [4, 5, 6]]}}), target=MLOPS_LOSSY),
        Case(multi, "inputs-infinity-into-int64", js(
            {"inputs": {"a": a, "b": [[float("inf"), 2, 3], [4, 5, 6]]}}), lossy_column="b"),
        Case(multi, "inputs-infinity-into-int64", js(
            {"inputs": {"a": a, "b": [[float("inf"), 2, 3], [4, 5, 6]]}}), target=MLOPS_LOSSY),
        Case(multi, "inputs-floats-into-int64-whole", js({"inputs": {"a": a,
                                                                     "b": [[1.0, 2.0, 3.0],
                                                                           [4, 5, 6]]}})),
        Case(multi, "inputs-wrong-width", js({"inputs": {"a": [[1.0]], "b": [[1, 2, 3]]}})),
        Case(multi, "split", js({"dataframe_split": {"columns": ["a", "b"],
                                                     "data": [[a[0], b[0]]]}})),
    ]


def _echo_nosig_cases(model: str) -> list[Case]:
    frame = pd.DataFrame({"x": [1, 2], "y": [0.5, float("nan")], "z": ["p", None]})
    return [
        Case(model, "split", js({"dataframe_split": split_of(frame)})),
        Case(model, "split-with-index", js({"dataframe_split": split_of(frame, index=True)})),
        Case(model, "split-integer-column-names", js(
            {"dataframe_split": pd.DataFrame(np.array(IRIS_ROWS)).to_dict(orient="split")})),
        Case(model, "split-string-index", js({"dataframe_split": {
            "columns": ["x"], "index": ["r1", "r2"], "data": [[1], [2]]}})),
        Case(model, "split-index-length-mismatch", js({"dataframe_split": {
            "columns": ["x"], "index": [0], "data": [[1], [2]]}})),
        Case(model, "split-data-only", js({"dataframe_split": {"data": [[1, "a"], [2, "b"]]}})),
        Case(model, "records", js({"dataframe_records": [{"x": 1, "y": 2.5},
                                                         {"x": 3, "t": True}]})),
        Case(model, "records-mixed-types-in-column", js({"dataframe_records": [
            {"x": 1}, {"x": "one"}, {"x": 1.5}, {"x": None}]})),
        Case(model, "records-big-int", js({"dataframe_records": [{"x": 2**63 + 1}]})),
        Case(model, "instances-list-of-lists", js({"instances": [[1, 2], [3, 4]]})),
        Case(model, "instances-records", js({"instances": [{"x": 1, "s": "a"},
                                                           {"x": 2, "s": "b"}]})),
        Case(model, "instances-records-uneven-keys", js({"instances": [{"x": 1},
                                                                       {"y": 2}]})),
        Case(model, "instances-dict-of-columns", js({"instances": {"x": [1, 2],
                                                                   "y": [3, 4]}})),
        Case(model, "instances-strings", js({"instances": ["a", "b"]})),
        Case(model, "inputs-scalar", js({"inputs": 3})),
        Case(model, "inputs-string", js({"inputs": "hello"})),
        Case(model, "inputs-list", js({"inputs": [1, 2, 3]})),
        Case(model, "inputs-mixed-list", js({"inputs": [1, "a", None, 2.5]})),
        Case(model, "inputs-nested-lists", js({"inputs": [[1, 2], [3, 4]]})),
        Case(model, "inputs-ragged-lists", js({"inputs": [[1, 2], [3]]})),
        Case(model, "inputs-dict-mixing-scalars-and-lists", js(
            {"inputs": {"x": [1, 2], "s": "hi", "n": 7, "f": [0.5]}})),
        Case(model, "inputs-dict-of-scalars", js({"inputs": {"x": 1, "s": "hi"}})),
        Case(model, "inputs-records", js({"inputs": [{"x": 1}, {"x": 2}]})),
        Case(model, "inputs-null", js({"inputs": None})),
        Case(model, "inputs-nan-infinity", js({"inputs": [float("nan"), float("-inf")]})),
        Case(model, "inputs-with-params", js({"inputs": [1], "params": {"k": "v", "n": 2}})),
        Case(model, "inputs-with-extra-key", js({"inputs": [1], "signature_name": "x"})),
        Case(model, "csv-with-index", frame.to_csv().encode(), content_type=CSV),
        Case(model, "csv-without-index", frame.to_csv(index=False).encode(), content_type=CSV),
        Case(model, "csv-header-only", b"x,y\n", content_type=CSV),
        Case(model, "parquet", parquet_of(frame), content_type=PARQUET),
        Case(model, "llm-messages", js({"messages": [{"role": "user", "content": "hi"}],
                                        "temperature": 0.2})),
        Case(model, "llm-prompt", js({"prompt": "Once upon", "max_tokens": 3})),
        Case(model, "llm-input", js({"input": ["embed me", "and me"]})),
        Case(model, "llm-messages-and-inputs", js({"messages": [], "inputs": [1]})),
        Case(model, "client-invoke-dataframe", call=_client_invoke(
            pd.DataFrame({"x": [1, 2], "s": ["a", "b"]}))),
        Case(model, "client-invoke-list", call=_client_invoke([1, 2, 3])),
    ]


def _typehint_cases(model: str) -> list[Case]:
    return [
        Case(model, "inputs-strings", js({"inputs": ["a", "b"]})),
        Case(model, "inputs-empty", js({"inputs": []})),
        Case(model, "inputs-integers", js({"inputs": [1, 2]})),
        Case(model, "inputs-string-not-list", js({"inputs": "a"})),
        Case(model, "inputs-with-params", js({"inputs": ["a"], "params": {"x": 1}})),
        Case(model, "split", js({"dataframe_split": {"columns": ["s"], "data": [["a"]]}})),
        Case(model, "instances", js({"instances": ["a", "b"]})),
        Case(model, "csv", b"s\na\nb\n", content_type=CSV),
        Case(model, "llm-prompt", js({"prompt": "hi"})),
        Case(model, "client-invoke-list", call=_client_invoke(["a", "b"])),
    ]


def _chat_cases() -> list[Case]:
    chat, agent, resp = "chat_model", "chat_agent", "responses_agent"
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    return [
        Case(chat, "messages", js({"messages": msgs})),
        Case(chat, "messages-and-params", js({"messages": msgs, "temperature": 0.3,
                                              "max_tokens": 12, "stop": ["x"]})),
        Case(chat, "messages-custom-inputs", js({"messages": msgs,
                                                 "custom_inputs": {"k": "v"}})),
        Case(chat, "messages-bad-role-type", js({"messages": [{"role": 5, "content": "x"}]})),
        Case(chat, "messages-missing-role", js({"messages": [{"content": "x"}]})),
        Case(chat, "messages-wrong-param-type", js({"messages": msgs,
                                                    "temperature": "warm"})),
        Case(chat, "prompt-to-chat", js({"prompt": "hi"})),
        Case(chat, "inputs-wrapped", js({"inputs": {"messages": [msgs]}})),
        Case(chat, "dataframe-records-wrapped", js({"dataframe_records": [{"messages": msgs}]})),
        Case(agent, "messages", js({"messages": msgs})),
        Case(agent, "messages-context-custom", js({
            "messages": msgs, "context": {"conversation_id": "c1", "user_id": "u1"},
            "custom_inputs": {"k": [1, 2]}})),
        Case(agent, "messages-with-ids", js({"messages": [{**m, "id": f"m{i}"}
                                                          for i, m in enumerate(msgs)]})),
        Case(agent, "messages-bad", js({"messages": [{"content": "no role"}]})),
        Case(agent, "inputs-wrapped", js({"inputs": {"messages": [msgs]}})),
        Case(resp, "input-messages", js({"input": [{"role": "user", "content": "hi"}]})),
        Case(resp, "input-custom-inputs-context", js({
            "input": [{"role": "user", "content": "hi"}], "custom_inputs": {"k": "v"},
            "context": {"conversation_id": "c"}, "temperature": 0.5})),
        Case(resp, "input-string", js({"input": "hi"})),
        Case(resp, "input-bad-item", js({"input": [{"nonsense": 1}]})),
        Case(resp, "messages-to-responses", js({"messages": msgs})),
    ]


def build_cases() -> list[Case]:
    """Every case, in a stable order; ids are unique."""
    cases: list[Case] = []
    for spec in MODELS:
        cases += _protocol_cases(spec.name)
    cases += _iris_cases("sk_logreg_cols")
    cases += _sk_ridge_cols_cases("sk_ridge_cols")
    cases += _sk_ridge_tensor_cases("sk_ridge_tensor")
    cases += _sk_pipeline_cases("sk_pipeline_i32_f32")
    cases += _sk_nosig_cases("sk_nosig")
    cases += _echo_scalars_cases("echo_scalars")
    cases += _echo_optional_params_cases("echo_optional_params")
    cases += _echo_complex_cases("echo_complex")
    cases += _echo_tensor_cases()
    cases += _echo_nosig_cases("echo_nosig")
    cases += _typehint_cases("typehint")
    cases += _chat_cases()
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"duplicate case ids: {sorted(duplicates)}"
    return cases


# ---------------------------------------------------------------------------------------------
# Judging

IDENTICAL, LOSSY, DETAIL, HTTP, DIFFERENT = (
    "identical", "deliberate-a", "deliberate-b", "deliberate-c", "different")
DELIBERATE_CLASSES = {
    LOSSY: "(a) lossy coercion refused with 400 naming the column",
    DETAIL: "(b) same error status and error_code, message/stack trace differ",
    HTTP: "(c) stricter HTTP status (415 no Content-Type, 405 method, 413 body size)",
}


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


_NOT_JSON = object()


def same(a: Any, b: Any) -> bool:
    """Deep equality of parsed JSON: exact floats, NaN equal to NaN, int/float/bool distinct."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _json_or_marker(reply: Reply) -> Any:
    if not reply.body:
        return _NOT_JSON
    try:
        return json.loads(reply.body)
    except ValueError:
        return _NOT_JSON


def _bodies_equal(a: Reply, b: Reply) -> bool:
    pa, pb = _json_or_marker(a), _json_or_marker(b)
    if pa is _NOT_JSON or pb is _NOT_JSON:
        return a.body == b.body
    return same(pa, pb)


@dataclass
class Outcome:
    """How a case came out."""

    case: Case
    kind: str
    mlflow: Reply | None
    mlops: Reply | None
    why: str = ""
    logs: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        ml = self.mlflow.excerpt(160) if self.mlflow else "-"
        mo = self.mlops.excerpt(160) if self.mlops else "-"
        return f"{self.case.id}: {self.why}\n    mlflow: {ml}\n    mlops:  {mo}"


def judge(case: Case, mlflow: Reply, mlops: Reply) -> tuple[str, str]:
    """(outcome kind, why) for the two replies to `case`."""
    if mlflow.status == mlops.status:
        if mlflow.status == 200:
            mime = [r.content_type.split(";")[0].strip().lower() for r in (mlflow, mlops)]
            if case.compare_body and mime[0] != mime[1]:
                return DIFFERENT, f"both 200, Content-Type {mime[0]!r} vs {mime[1]!r}"
            if not case.compare_body or _bodies_equal(mlflow, mlops):
                return IDENTICAL, "same status and body"
            return DIFFERENT, "both 200, bodies differ"
        if _bodies_equal(mlflow, mlops) or not case.compare_body:
            return IDENTICAL, "same error"
        ja, jb = _parse(mlflow.body), _parse(mlops.body)
        # Only an MlflowException carries error_code; FastAPI's own errors ({"detail": ...})
        # leave just the status to compare.
        if isinstance(ja, dict) and "error_code" in ja and isinstance(jb, dict) and ja.get(
                "error_code") != jb.get("error_code"):
            return DIFFERENT, (f"same status, error_code {ja.get('error_code')} vs "
                               f"{jb.get('error_code')}")
        if case.strict_status == mlops.status:
            return HTTP, f"same status {mlops.status}, mlops answers its own error body"
        if mlflow.status >= 400:
            return DETAIL, "same status and error_code, different message"
        return DIFFERENT, "same non-200 status, bodies differ"
    if case.strict_status is not None and mlops.status == case.strict_status:
        return HTTP, f"mlops {mlops.status} by design, mlflow {mlflow.status}"
    if case.lossy_column is not None and mlflow.status == 200 and mlops.status == 400:
        message = str((_parse(mlops.body) or {}).get("message", ""))
        column = case.lossy_column
        # A named column or tensor is quoted in the message; an unnamed tensor is "tensor".
        names = [f"'{column}'", f'"{column}"', f"`{column}`"] if column else ["tensor"]
        if any(name in message for name in names):
            return LOSSY, f"refused lossy value in column {case.lossy_column!r}"
        return DIFFERENT, f"400 does not name column {case.lossy_column!r}"
    return DIFFERENT, f"status {mlflow.status} vs {mlops.status}"


def run_case(case: Case, servers: dict[tuple[str, str], Server]) -> Outcome:
    """Send `case` to both servers and judge the replies."""
    reference = servers[(case.model, MLFLOW)]
    candidate = servers[(case.model, case.target)]
    logs = {s.kind: s.log_tail() for s in (reference, candidate)}
    for server in (reference, candidate):
        if server.error:
            return Outcome(case, DIFFERENT, None, None, f"{server.kind}: {server.error}", logs)
    replies = []
    for server in (reference, candidate):
        try:
            replies.append(case.send(server.url))
        except requests.RequestException as err:
            replies.append(Reply(0, "", f"request failed: {err!r}".encode()))
    kind, why = judge(case, replies[0], replies[1])
    return Outcome(case, kind, replies[0], replies[1], why, logs)


@contextlib.contextmanager
def running_servers(root: Path) -> Iterator[dict[tuple[str, str], Server]]:
    """Save every model under `root`, start all servers, yield them, stop them."""
    from tests.e2e.compat_models import save_models

    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice while saving (type hints, pickle)
        paths = save_models(root / "models")
    servers: dict[tuple[str, str], Server] = {}
    try:
        start_servers(paths, root / "logs", servers)
        yield servers
    finally:
        stop_servers(servers)
