"""Start `mlops serve` as a real process on loopback for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.e2e.ports import free_port

MLOPS = str(Path(sys.executable).parent / "mlops")


@dataclass
class Server:
    """A running `mlops serve`: its process, base URL, port and log file."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path


def start_serve(model_uri: str, tmp: Path, *extra: str, env: dict[str, str] | None = None,
                ready_path: str = "/ping", timeout: float = 120) -> Server:
    """Start ``mlops serve --model-uri MODEL_URI`` on a free port and wait until
    ``ready_path`` answers 200; the server's output goes to a log file in ``tmp``."""
    port = free_port()
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [MLOPS, "serve", "--model-uri", model_uri, "--port", str(port), *extra],
            env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            if requests.get(url + ready_path, timeout=1).status_code == 200:
                return Server(process, url, port, log)
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become ready:\n" + log.read_text())
