"""`mlops demo`: run a stack's workloads as local processes, from the commands they render."""

from __future__ import annotations

import secrets
import signal
import tempfile
import time
import urllib.request
from base64 import b64encode
from contextlib import ExitStack
from pathlib import Path

from pulumi_mlops.components.registry import ModelRegistry, RegistrySecrets, registry_secret_data
from pulumi_mlops.local import run_workload
from pulumi_mlops.render import record_program

__all__ = ["run_demo"]


def _authenticated_status(url: str, user: str, password: str) -> int:
    token = b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        url + "/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def run_demo(cwd: Path, stack: str, *, workdir: Path | None = None, check: bool = False) -> int:
    """Start every registry of the stack locally; with ``check``, smoke-test and stop.

    Secrets are generated afresh for the demo (the stack's real ones live in its Pulumi state).
    """
    recording = record_program(cwd, stack, preview=True)
    registries = [c for c in recording.components if isinstance(c, ModelRegistry)]
    if not registries:
        print(f"stack {stack!r} declares no ModelRegistry: nothing to run")
        return 1
    root = workdir or Path(tempfile.mkdtemp(prefix=f"mlops-demo-{stack}-"))
    with ExitStack() as stack_:
        for registry in registries:
            plan = registry.plan
            if plan.database is not None:
                print(f"{plan.name}: skipped, its database runs in the target; the demo runs "
                      "SQLite registries (use the dev stack)")
                continue
            password = secrets.token_urlsafe(24)
            data = registry_secret_data(
                plan, RegistrySecrets(password, secrets.token_hex(32)))
            running = stack_.enter_context(
                run_workload(plan.server, data, root / plan.name))
            user = str(plan.server.env["MLFLOW_AUTH_ADMIN_USERNAME"])
            status = _authenticated_status(running.url, user, password)
            print(f"{plan.name}: MLflow registry up at {running.url} (healthy, API {status})\n"
                  f"  command: {' '.join(plan.server.command[:4])} ...\n"
                  f"  export MLFLOW_TRACKING_URI={running.url}\n"
                  f"  export MLFLOW_TRACKING_USERNAME={user}\n"
                  f"  export MLFLOW_TRACKING_PASSWORD={password}\n"
                  f"  data and logs: {root / plan.name}")
        if check:
            return 0
        print("running; Ctrl-C stops everything")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")
    return 0
