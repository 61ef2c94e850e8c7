"""Prometheus' HTTP API as the end-to-end tests read it: an instant query, and a bounded wait
for a condition on what it answers."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any


def query(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """The result vector of ``promql`` at ``at`` (default: now) on the Prometheus at ``url``."""
    params = urllib.parse.urlencode({"query": promql} | ({} if at is None else {"time": at}))
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait(what: str, check: Any, timeout: float = 60, interval: float = 0.5) -> Any:
    """What ``check()`` returns once it is truthy, polling within ``timeout`` seconds; fails
    naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(what)
