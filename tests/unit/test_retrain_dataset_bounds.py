"""URL datasets of the retrain job against hostile servers on 127.0.0.1: an endless body, a gzip
bomb, a slow drip, and credentials that come as headers from a secret variable, never from the
URL (and are not sent where the URL redirects)."""

from __future__ import annotations

import contextlib
import gzip
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from pulumi_mlops.runtime.retrain.config import RetrainConfig
from pulumi_mlops.runtime.retrain.config_file import ConfigFileError, load_job_config
from pulumi_mlops.runtime.retrain.data import DatasetError, DatasetLimits, load_dataset
from pulumi_mlops.runtime.retrain.job import EXIT_FAILED, run
from tests.loopback import http_server

pytestmark = pytest.mark.timeout(60)

CSV = b"a,b,y\n" + b"".join(b"%d,%d,%d\n" % (i, i % 7, i % 2) for i in range(40))
TOKEN = "Bearer s3cr3t-dataset-token-0123456789"
SERVER_CAP = 10.0  # seconds any response may last: a broken client cannot hang the test


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]]
    redirect_to: str = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        started = time.monotonic()
        try:
            if self.path == "/data.csv":
                self._send(CSV)
            elif self.path == "/redirect.csv":
                self.send_response(302)
                self.send_header("Location", f"{self.redirect_to}/data.csv")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/endless.csv":
                # No length: the body ends when the connection does, i.e. never.
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"a,b,y\n")
                line = b"1,2,0\n" * 10_000
                while time.monotonic() - started < SERVER_CAP:
                    self.wfile.write(line)
                self.seen[-1]["ended"] = "server cap"
            elif self.path == "/bomb.csv.gz":
                self._send(BOMB)
            elif self.path == "/drip.csv":
                self.send_response(200)
                self.send_header("Content-Length", str(len(CSV) * 1000))
                self.end_headers()
                while time.monotonic() - started < SERVER_CAP:
                    self.wfile.write(b"1")
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            self.seen[-1]["ended"] = "client hung up"

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# 8 MiB of CSV rows in about 12 KB: a bomb made small, the same shape as a large one.
BOMB = gzip.compress(b"a,b,y\n" + b"0,0,0\n" * (8 * 1024 * 1024 // 6), compresslevel=9)


@contextlib.contextmanager
def _server(redirect_to: str = "") -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Handler,), {"seen": seen, "redirect_to": redirect_to})
    with http_server(handler) as url:
        yield url, seen


@pytest.fixture
def origin() -> Iterator[tuple[str, list[dict[str, str]]]]:
    with _server() as running:
        yield running


def _config(url: str, **bounds: Any) -> RetrainConfig:
    return RetrainConfig(model_name="m", dataset=url, target_column="y",
                         estimator="sklearn.linear_model.LogisticRegression", **bounds)


def _failure(url: str, capsys: pytest.CaptureFixture[str], **bounds: Any) -> tuple[float, str]:
    """Seconds the run took and its FAILED line."""
    started = time.monotonic()
    # No registry is configured: the run must fail before it would need one.
    assert run(_config(url, **bounds), environ={}) == EXIT_FAILED
    took = time.monotonic() - started
    [line] = [x for x in capsys.readouterr().out.splitlines() if "FAILED" in x]
    assert "FAILED at stage `load_dataset`" in line
    assert "no alias was moved" in line
    return took, line


def test_an_endless_body_stops_at_the_size_cap(
        origin: tuple[str, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = origin
    took, line = _failure(f"{url}/endless.csv", capsys, dataset_max_bytes=1_000_000)
    assert "more than dataset_max_bytes (1000000 bytes)" in line
    assert "raise `dataset_max_bytes`" in line
    assert took < SERVER_CAP
    for _ in range(100):  # the server's thread notices the hang-up on its next write
        if "ended" in seen[-1]:
            break
        time.sleep(0.05)
    assert seen[-1]["ended"] == "client hung up"


def test_a_gzip_bomb_stops_at_the_ratio_cap(
        origin: tuple[str, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = origin
    assert len(BOMB) < 64_000
    _, line = _failure(f"{url}/bomb.csv.gz", capsys)

    assert f"decompresses to more than dataset_max_ratio (100) times its {len(BOMB)} bytes" in (
        line)
    assert "raise `dataset_max_ratio`" in line


def test_a_gzip_bomb_under_the_ratio_stops_at_the_decompressed_size_cap(
        origin: tuple[str, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = origin
    _, line = _failure(f"{url}/bomb.csv.gz", capsys, dataset_max_ratio=1e6,
                    dataset_max_bytes=1_000_000)

    assert "decompresses to more than dataset_max_bytes (1000000 bytes)" in line


def test_a_slow_drip_fails_at_the_deadline(
        origin: tuple[str, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = origin
    took, line = _failure(f"{url}/drip.csv", capsys, dataset_timeout=1)
    assert "took more than dataset_timeout (1 s;" in line
    assert "raise `dataset_timeout`" in line
    # Without the deadline the drip would last until the server stops (SERVER_CAP).
    assert 1 <= took < SERVER_CAP - 2


def test_a_server_that_never_answers_fails_at_the_deadline(
        capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (the kernel does) and never says a word
        took, line = _failure(f"http://127.0.0.1:{silent.getsockname()[1]}/data.csv", capsys,
                              dataset_timeout=1)

    assert "took more than dataset_timeout" in line
    assert took < SERVER_CAP - 2


def test_a_local_file_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(CSV)
    with pytest.raises(DatasetError, match="more than dataset_max_bytes"):
        load_dataset(str(path), "y", DatasetLimits(max_bytes=len(CSV) - 1))
    assert load_dataset(str(path), "y", DatasetLimits(max_bytes=len(CSV))).rows == 40


def test_the_defaults_are_documented_bounds() -> None:
    config = _config("https://data.example.com/x.csv")
    limits = DatasetLimits.from_config(config, {})
    assert (limits.max_bytes, limits.max_ratio, limits.timeout) == (512 * 1024 * 1024, 100, 600)
    assert limits == DatasetLimits()


# --------------------------------------------------------------------------- credentials


def test_the_headers_come_from_the_named_variable_and_are_sent(
        origin: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = origin
    config = _config(f"{url}/data.csv", dataset_headers_env="MLOPS_DATASET_HEADERS")
    env = {"MLOPS_DATASET_HEADERS": f'{{"Authorization": "{TOKEN}"}}'}

    dataset = load_dataset(config.dataset, "y", DatasetLimits.from_config(config, env))

    assert dataset.rows == 40
    assert seen[-1]["authorization"] == TOKEN
    assert TOKEN not in config.model_dump_json()


def test_the_headers_are_not_sent_where_the_url_redirects() -> None:
    with _server() as (other, other_seen), _server(redirect_to=other) as (url, seen):
        limits = DatasetLimits(headers={"Authorization": TOKEN})
        dataset = load_dataset(f"{url}/redirect.csv", "y", limits)

    assert dataset.rows == 40
    assert seen[-1]["authorization"] == TOKEN
    assert [s["path"] for s in other_seen] == ["/data.csv"]
    assert "authorization" not in other_seen[-1]


@pytest.mark.parametrize("value", [None, "not json", '["a"]', '{"Authorization": 1}'])
def test_a_missing_or_bad_headers_variable_fails_without_showing_it(value: str | None) -> None:
    config = _config("https://data.example.com/x.csv", dataset_headers_env="DATA_HEADERS")
    env = {} if value is None else {"DATA_HEADERS": value}
    with pytest.raises(DatasetError, match="DATA_HEADERS") as info:
        DatasetLimits.from_config(config, env)
    assert value is None or value not in str(info.value)


@pytest.mark.parametrize(("url", "named"), [
    ("https://alice:hunter2@data.example.com/x.csv", "user:password@"),
    ("https://data.example.com/x.csv?token=hunter2", "token"),
    ("https://data.example.com/x.csv?access_token=hunter2", "access_token"),
    ("https://data.example.com/x.csv?X-Amz-Signature=hunter2&X-Amz-Credential=a",
     "X-Amz-Signature"),
    ("https://data.example.com/x.csv?api_key=hunter2", "api_key"),
    ("https://data.example.com/x.csv?sig=hunter2", "sig"),
])
def test_a_url_holding_credentials_is_refused_without_showing_them(
        url: str, named: str, tmp_path: Path) -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError) as info:
        _config(url)
    [error] = info.value.errors()
    assert "must not hold credentials" in error["msg"]
    assert named in error["msg"]
    assert "dataset_headers" in error["msg"]
    assert "hunter2" not in error["msg"]
    # The job reports the refused file naming the field, without the credential.
    path = tmp_path / "retrain.json"
    path.write_text(json.dumps({"model_name": "m", "dataset": url, "target_column": "y",
                                "estimator": "sklearn.linear_model.LogisticRegression"}))
    with pytest.raises(ConfigFileError, match="`dataset`") as refused:
        load_job_config(path)
    assert "hunter2" not in str(refused.value)


def test_a_url_with_ordinary_query_parameters_is_accepted() -> None:
    assert _config("https://data.example.com/x.csv?version=3&sort_key=a").dataset.endswith(
        "sort_key=a")
