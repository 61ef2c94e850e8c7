"""Alert routing for real: the Alertmanager (Debian's ``prometheus-alertmanager``) started from
the workload the plan renders with the configuration it renders, fed by a real Prometheus
started from its rendered workload, delivering to webhook receivers served by this test.

Checked: Prometheus finds the Alertmanager; a ``page`` alert reaches the page receiver, a
``ticket`` alert the ticket receiver; a page silences the tickets of the same service.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pulumi_mlops.local import run_workload
from pulumi_mlops.plans.alerting import (
    ALERTMANAGER_CONFIG_KEY,
    Alertmanager,
    Receiver,
    alertmanager_config,
    alertmanager_workload,
    secret_fields,
)
from pulumi_mlops.plans.monitoring import Prometheus, prometheus_workload
from tests.e2e.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

# Alerts that fire at once, with the labels the generated ones carry.
GROUP = {"name": "e2e", "rules": [
    {"alert": "E2EServiceDown", "expr": "vector(1)",
     "labels": {"severity": "page", "service": "cancer"}},
    {"alert": "E2EFeatureDrift", "expr": "vector(1)",
     "labels": {"severity": "ticket", "service": "cancer"}},
    {"alert": "E2ERetrainFailed", "expr": "vector(1)",
     "labels": {"severity": "ticket", "service": "churn"}},
]}


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def alertmanager_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian names the binary ``prometheus-alertmanager``; the image, ``alertmanager``."""
    found = shutil.which("prometheus-alertmanager")
    if found is None:
        pytest.fail("Alertmanager is not installed: run scripts/system-deps.sh (apt-get "
                    "install prometheus-alertmanager)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "alertmanager").symlink_to(found)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_prometheus_alerts_reach_the_receiver_of_their_severity(
        receiver: tuple[str, list[tuple[str, dict[str, Any]]]], alertmanager_on_path: None,
        tmp_path: Path) -> None:
    hook, received = receiver
    alerting = Alertmanager(page=Receiver.webhook(f"{hook}/page"),
                            ticket=Receiver.webhook(f"{hook}/ticket"),
                            # Long enough for the page, which inhibits the paged service's
                            # ticket, to arrive even when Prometheus sends the two rules'
                            # alerts apart (it sends them rule by rule; a loaded machine
                            # once took over a second between them).
                            port=free_port(), group_wait="5s", group_interval="1s")
    manager = alertmanager_workload("mon", alerting)
    config = alertmanager_config(alerting, {k: str(v) for k, v in
                                            secret_fields(alerting).items()})
    prometheus = Prometheus.standalone(port=free_port(), scrape_interval="1s")
    server = prometheus_workload("mon", prometheus, [], [GROUP],
                                 alertmanagers=[f"{manager.name}:{alerting.port}"])
    hosts = {f"0.0.0.0:{alerting.port}": f"127.0.0.1:{alerting.port}",
             f"{manager.name}:{alerting.port}": f"127.0.0.1:{alerting.port}",
             f"0.0.0.0:{prometheus.port}": f"127.0.0.1:{prometheus.port}"}
    with run_workload(manager, {ALERTMANAGER_CONFIG_KEY: config}, tmp_path / "am",
                      hosts=hosts, timeout=60), \
            run_workload(server, {}, tmp_path / "prometheus", hosts=hosts,
                         timeout=60) as running:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                {p for p, _ in received} >= {"/page", "/ticket"}):
            time.sleep(0.5)
        active = _get(f"{running.url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        assert [a["url"] for a in active] == [
            f"http://127.0.0.1:{alerting.port}/api/v2/alerts"]
        time.sleep(3)  # any further notification (an inhibited one would come now)
    sent = {(path, a["labels"]["alertname"]) for path, body in received
            for a in body["alerts"] if body["status"] == "firing"}
    # The page reaches the page receiver; the ticket of another service the ticket receiver;
    # the ticket of the paged service is silenced by the page.
    assert sent == {("/page", "E2EServiceDown"), ("/ticket", "E2ERetrainFailed")}, received
