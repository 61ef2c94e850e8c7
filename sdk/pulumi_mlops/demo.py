"""`mlops demo`: run a stack's workloads as local processes, from the commands they render.

The registries start first. Each retrain schedule's rendered job (``mlops retrain --config
...``) is then run once against its running registry, as one slot of its CronJob or scheduler
container would run it: it trains, evaluates, registers a version and moves the promote alias
when every gate passes. For a model no schedule produces, the demo trains a small scikit-learn
model itself, logs it with its input example and drift profile and registers it under every
alias the services name. The program is then rendered again with ``MLFLOW_TRACKING_URI``
pointing at the running registry, as `pulumi preview` would be run, so each alias is pinned to
the version it names. Each service's rendered ``mlops serve`` command is started and sent
predictions, whose true labels are posted to ``/feedback``. A MonitoringStack's standalone
Prometheus is then started from its rendered
workload, scraping the registry and the services (a retrain scheduler does not run here: the
demo runs the job once), and the demo prints its URL with queries showing drift and live
quality.

Each step prints a line when it starts, and the retrain job's stages as they finish. Whatever
cannot run here (a registry whose database runs in the target, a service of a registry the
demo does not run) is skipped with the reason; when nothing could run, the demo fails. Its data
and logs go to a temporary folder removed on exit (also on error or Ctrl-C), or to
``workdir``, which is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pulumi_mlops.components.monitoring import MonitoringStack
from pulumi_mlops.components.registry import ModelRegistry, RegistryGrant
from pulumi_mlops.components.retrain import RetrainSchedule
from pulumi_mlops.components.service import ModelService
from pulumi_mlops.errors import ValidationError
from pulumi_mlops.local import run_job, run_workload
from pulumi_mlops.plans.registry import RegistryPlan, RegistrySecrets, registry_secret_data
from pulumi_mlops.plans.registry_access import grant_secret_data
from pulumi_mlops.plans.retrain import RetrainPlan
from pulumi_mlops.plans.service import TrackPlan
from pulumi_mlops.plans.workload import Workload
from pulumi_mlops.render import Recording, record_program
from pulumi_mlops.runtime.environ import environment

__all__ = ["run_demo"]

_SAMPLE_ROWS = 5
_EXPERIMENT = "mlops-demo"


@dataclass(frozen=True)
class _Registry:
    """A registry the demo started: its plan, local URL, admin credentials and the passwords
    of the clients' own users (their grants, reconciled as rendered)."""

    plan: RegistryPlan
    url: str
    username: str
    password: str
    users: dict[str, str] = field(default_factory=dict)

    def secrets_for(self, workload: Workload) -> dict[str, str]:
        """A client workload's secret data: the password of the user it authenticates as."""
        return {"tracking-password": self.users[str(workload.env["MLFLOW_TRACKING_USERNAME"])]}

    def env(self) -> dict[str, str]:
        """The MLflow client variables for this registry, as seen from this machine."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": self.username,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def hosts(self) -> dict[str, str]:
        """The registry's and its metrics exporter's in-network ``host:port`` → their local
        addresses (the target's DNS)."""
        exporter = f"{self.plan.scrape_host}:{self.plan.scrape.port}"
        return {urlsplit(self.plan.tracking_uri).netloc: urlsplit(self.url).netloc,
                exporter: f"127.0.0.1:{self.plan.scrape.port}"}


@dataclass(frozen=True)
class _Provided:
    """A model version the demo made available: by its own training or a retrain run."""

    version: str
    aliases: frozenset[str]
    source: str


# (registry tracking URI, model name): what the demo registered of that model, None when a
# retrain schedule produces the model but its run registered nothing.
_Models = dict[tuple[str, str], _Provided | None]


@dataclass
class _Progress:
    """What the demo said it starts, what ran and what it skipped (and why)."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def step(self, text: str) -> None:
        """Say that a step starts (some take a minute: the terminal should not go quiet)."""
        print(f"==> {text} ...", flush=True)

    def skip(self, label: str, reason: str) -> None:
        """Say that ``label`` does not run here, and why."""
        print(f"{label}: skipped, {reason}", flush=True)
        self.skipped.append(f"{label}: {reason}")


def _authenticated_status(url: str, user: str, password: str) -> int:
    token = b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        url + "/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence logged warnings (Pulumi's, under the mock runtime) for the block."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


_NO_REGISTRY = {"MLFLOW_TRACKING_URI": None, "MLFLOW_TRACKING_USERNAME": None,
                "MLFLOW_TRACKING_PASSWORD": None}


def _services(recording: Recording) -> list[ModelService]:
    return [c for c in recording.components if isinstance(c, ModelService)]


def _schedules(recording: Recording) -> list[RetrainPlan]:
    return [c.plan for c in recording.components if isinstance(c, RetrainSchedule)]


def _registry_of(track: TrackPlan, registries: Mapping[str, _Registry]) -> _Registry | None:
    """The running registry a track's server reads models from, if the demo runs it."""
    return registries.get(str(track.workload.env.get("MLFLOW_TRACKING_URI")))


# What the retrain job's exit code says (see `pulumi_mlops.runtime.retrain.job`).
_RETRAIN_OUTCOMES = {0: "promoted", 10: "registered, not promoted: a gate failed",
                     1: "failed, no alias moved", 2: "bad config",
                     3: "the config changed since this run's key ran"}


def _alias_version(registry: _Registry, name: str, alias: str) -> str | None:
    """The version ``alias`` of model ``name`` points at in the running registry, if any."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with environment(registry.env()):
        try:
            return str(MlflowClient(registry.url).get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None


_STAGE = re.compile(r"\bstage=(?P<stage>\S+) status=(?P<status>\S+) duration=(?P<took>\S+)"
                    r"(?P<rest>.*)")


def _echo_stage(line: str) -> None:
    """Show one stage line of the retrain job's log (the rest of its output stays in the log):
    ``stage=train status=ok duration=1.20s`` becomes ``  train: ok (1.20s)``."""
    match = _STAGE.search(line)
    if match:
        rest = match["rest"].strip()
        if len(rest) > 60:
            rest = rest[:57] + "..."
        print(f"  {match['stage']}: {match['status']} ({match['took']})"
              + (f" {rest}" if rest else ""), flush=True)


def _run_retrains(schedules: list[RetrainPlan], registries: Mapping[str, _Registry],
                  root: Path, progress: _Progress, *,
                  check: bool) -> tuple[_Models, list[str]]:
    """Run each schedule's rendered job once against its running registry; what the runs
    registered, and the problems found."""
    models: _Models = {}
    problems: list[str] = []
    for plan in schedules:
        job = plan.job
        registry = registries.get(str(job.env.get("MLFLOW_TRACKING_URI")))
        if registry is None:
            progress.skip(plan.name, f"its registry ({job.env.get('MLFLOW_TRACKING_URI')}) "
                          "is not one the demo runs")
            continue
        config = plan.config
        work = root / plan.object_name
        progress.step(f"running the retrain job of `{plan.name}` once: train {config.model_name}, "
                      "evaluate, register, promote if the gates pass")
        result = run_job(job, registry.secrets_for(job), work,
                         hosts=registry.hosts(), on_line=_echo_stage)
        progress.ran.append(plan.name)
        outcome = _RETRAIN_OUTCOMES.get(result.returncode, "unexpected exit code")
        # The job's summary (MLflow's own progress lines before it stay in the log).
        lines = result.stdout.strip().splitlines()
        start = next((i for i, line in enumerate(lines)
                      if line.startswith(f"retrain {config.model_name}:")), 0)
        output = "".join(f"  {line}\n" for line in lines[start:])
        print(f"{plan.name}: ran the retrain job once, as its schedule ({config.schedule}, UTC) "
              f"would\n  command, as rendered: {' '.join(job.command)}\n{output}"
              f"  exit code {result.returncode} ({outcome})\n"
              f"  log: {work / f'{job.name}.log'}", flush=True)
        key = (registry.plan.tracking_uri, config.model_name)
        challenger = _alias_version(registry, config.model_name, config.challenger_alias)
        champion = _alias_version(registry, config.model_name, config.promote_alias)
        aliases = {a for a, v in ((config.challenger_alias, challenger),
                                  (config.promote_alias, champion)) if v == challenger}
        models[key] = (None if challenger is None else
                       _Provided(challenger, frozenset(aliases), f"retrain {plan.name}"))
        if result.returncode != 0 and (check or result.returncode != 10):
            problems.append(f"{plan.name}: the retrain job exited with {result.returncode} "
                            f"({outcome})" + ("; 0 (promoted) is required" if check else ""))
    return models, problems


def _train_and_register(registry: _Registry, name: str, aliases: set[str], log: Path) -> str:
    """Train a classifier on scikit-learn's breast cancer data, log it with an input example
    and the training-data drift profile on the same run, register it as a new version of
    ``name`` and point ``aliases`` at it. Returns the version; MLflow's output goes to
    ``log``."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pulumi_mlops.runtime.drift.profile import build_profile
    from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    previous = mlflow.get_tracking_uri()
    # MLflow prints progress and hints; they go to the log, the demo prints its own summary.
    with environment(registry.env()), log.open("a") as out, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):
        try:
            mlflow.set_tracking_uri(registry.url)
            mlflow.set_experiment(_EXPERIMENT)
            with mlflow.start_run(run_name=f"{name}-demo"):
                info = mlflow.sklearn.log_model(
                    model, name="model", input_example=x.head(3), registered_model_name=name,
                    # Stated rather than inferred: inference loads the model in a subprocess
                    # (seconds), and these are the flavor's own requirements for its default
                    # (skops) format.
                    pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                        include_skops=True))
                # The reference profile the server scores drift against (as retraining logs
                # it).
                mlflow.log_dict(build_profile(x), PROFILE_ARTIFACT_PATH)
            version = str(info.registered_model_version)
            client = MlflowClient(registry.url)
            for alias in sorted(aliases):
                client.set_registered_model_alias(name, alias, version)
        finally:
            mlflow.set_tracking_uri(previous)
    return version


def _sample_payload() -> tuple[bytes, list[int]]:
    """A few rows of breast_cancer as an MLflow payload, and their true labels."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    rows = x.sample(_SAMPLE_ROWS, random_state=0)
    split = json.loads(rows.to_json(orient="split", index=False))
    return (json.dumps({"dataframe_split": split}).encode(),
            [int(v) for v in y.loc[rows.index]])


def _request(url: str, data: bytes | None = None) -> tuple[int, bytes, str | None]:
    """Status, body and request id (``X-Request-Id``) of a GET, or of a POST of ``data``."""
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return (int(response.status), bytes(response.read()),
                    response.headers.get("X-Request-Id"))
    except urllib.error.HTTPError as err:
        return err.code, err.read(), None


def _smoke_test(url: str, metrics_url: str, model_name: str
                ) -> tuple[list[str], dict[str, Any], list[Any]]:
    """Problems found, what the server says it serves (its Open Inference Protocol model
    metadata's ``parameters``: model name, version, alias, URI, run id) and the predictions
    for a few rows; ``metrics_url`` is where its ``/metrics`` answers."""
    problems: list[str] = []
    payload, labels = _sample_payload()
    status, body, request_id = _request(url + "/invocations", payload)
    predictions: list[Any] = []
    if status != 200:
        problems.append(f"/invocations answered {status}: {body[:300]!r}")
    else:
        predictions = list(json.loads(body)["predictions"])
        if len(predictions) != len(labels):
            problems.append(f"/invocations gave {len(predictions)} predictions for "
                            f"{len(labels)} rows")
        # Their true labels, as a client would send them later: live accuracy.
        feedback = json.dumps({"request_id": request_id, "labels": labels}).encode()
        status, body, _ = _request(url + "/feedback", feedback)
        if status != 200 or json.loads(body).get("matched") != len(labels):
            problems.append(f"/feedback answered {status}: {body[:300]!r}")
    path = f"/v2/models/{quote(model_name, safe='')}"
    status, body, _ = _request(url + path)
    served: dict[str, Any] = dict(json.loads(body).get("parameters") or {}) if (
        status == 200) else {}
    if status != 200:
        problems.append(f"{path} answered {status}")
    status, body, _ = _request(metrics_url + "/metrics")
    if status != 200 or b"mlops_model_info{" not in body:
        problems.append(f"/metrics answered {status} without mlops_model_info")
    return problems, served, predictions


def _start_registries(recording: Recording, stack: ExitStack, root: Path,
                      progress: _Progress) -> dict[str, _Registry]:
    """Start every SQLite registry of the recording; by in-network tracking URI."""
    running_registries: dict[str, _Registry] = {}
    for registry in (c for c in recording.components if isinstance(c, ModelRegistry)):
        plan = registry.plan
        if plan.database is not None:
            progress.skip(plan.name, "its database runs in the target; the demo runs SQLite "
                          "registries (use the dev stack)")
            continue
        password = secrets.token_urlsafe(24)
        data = registry_secret_data(plan, RegistrySecrets(password, secrets.token_hex(32)))
        progress.step(f"starting the MLflow registry `{plan.name}` (SQLite)")
        running = stack.enter_context(run_workload(plan.server, data, root / plan.name))
        progress.ran.append(plan.name)
        user = str(plan.server.env["MLFLOW_AUTH_ADMIN_USERNAME"])
        status = _authenticated_status(running.url, user, password)
        print(f"{plan.name}: MLflow registry up at {running.url} (healthy, API {status})\n"
              f"  command: {' '.join(plan.server.command[:4])} ...\n"
              f"  export MLFLOW_TRACKING_URI={running.url}\n"
              f"  export MLFLOW_TRACKING_USERNAME={user}\n"
              f"  export MLFLOW_TRACKING_PASSWORD={password}\n"
              f"  data and logs: {root / plan.name}", flush=True)
        started = _Registry(plan, running.url, user, password)
        for grant in registry.grants.values():
            started.users[grant.client.user] = _reconcile(grant, started, root / plan.name)
        running_registries[plan.tracking_uri] = started
    return running_registries


def _reconcile(grant: RegistryGrant, registry: _Registry, root: Path) -> str:
    """Run a grant's rendered reconcile against the running registry; the user's password."""
    password = secrets.token_urlsafe(24)
    result = run_job(grant.plan.workload, grant_secret_data(registry.password, password),
                     root / grant.plan.object_name, hosts=registry.hosts(), timeout=300)
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    if result.returncode != 0:
        raise RuntimeError(f"the registry access reconcile of {grant.client.user} failed:\n"
                           + (result.stdout + result.stderr)[-3000:])
    print(f"{registry.plan.name}: user {grant.client.user} reconciled as rendered ({summary})",
          flush=True)
    return password


def _register_models(services: list[ModelService], registries: Mapping[str, _Registry],
                     root: Path, retrained: _Models, progress: _Progress) -> _Models:
    """Train and register one version of every model the services serve that no retrain
    schedule produces (those in ``retrained``)."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for service in services:
        for track in service.plan.tracks:
            registry = _registry_of(track, registries)
            if registry is not None and (registry.plan.tracking_uri,
                                         track.model.name) not in retrained:
                aliases = wanted.setdefault((registry.plan.tracking_uri, track.model.name), set())
                if track.model.alias:
                    aliases.add(track.model.alias)
    registered: _Models = {}
    for (uri, name), aliases in sorted(wanted.items()):
        registry = registries[uri]
        log = root / f"train-{name}.log"
        progress.step(f"training {name} (no retrain schedule registers it)")
        version = _train_and_register(registry, name, aliases, log)
        registered[(uri, name)] = _Provided(version, frozenset(aliases), "the demo")
        named = "".join(f", alias {a}" for a in sorted(aliases))
        print(f"{registry.plan.name}: registered {name} version {version}{named}\n"
              "  trained: scaled LogisticRegression on scikit-learn's breast_cancer data, "
              "logged with an input example and its drift profile\n"
              f"  log: {log}", flush=True)
    return registered


def _serve(service: ModelService, registries: Mapping[str, _Registry],
           registered: _Models, stack: ExitStack, root: Path,
           ports: set[int], progress: _Progress, hosts: dict[str, str]) -> list[str]:
    """Start each track of the service from its rendered command and send it predictions;
    the problems found. Adds each started track's in-network address to ``hosts``."""
    problems: list[str] = []
    for track in service.plan.tracks:
        label = f"{service.plan.name}/{track.track}" if len(service.plan.tracks) > 1 else (
            service.plan.name)
        registry = _registry_of(track, registries)
        workload = track.workload
        if registry is None:
            progress.skip(label, f"its registry ({workload.env.get('MLFLOW_TRACKING_URI')}) "
                          "is not one the demo runs")
            continue
        known = registered.get((registry.plan.tracking_uri, track.model.name))
        if known is None:
            progress.skip(label, f"no version of {track.model.name} was registered "
                          "(see the retrain job above)")
            continue
        if track.model.alias is None and track.model.version != known.version:
            progress.skip(label, f"it pins {track.model.uri} and the demo registered "
                          f"version {known.version} only")
            continue
        if track.model.alias is not None and track.model.alias not in known.aliases and (
                track.model.version != known.version):
            progress.skip(label, f"{known.source} did not point `{track.model.alias}` at "
                          f"version {known.version}")
            continue
        assert workload.port is not None  # a serving workload listens
        taken = {p for p in (workload.port, workload.metrics_port) if p is not None} & ports
        if taken:
            progress.skip(label, f"port {min(taken)} is taken by another demo workload "
                          "(tracks share the port; locally only one can listen)")
            continue
        progress.step(f"starting the model server `{label}` ({track.model.uri})")
        running = stack.enter_context(run_workload(
            workload, registry.secrets_for(workload), root / track.object_name,
            hosts=registry.hosts()))
        progress.ran.append(label)
        ports.add(workload.port)
        hosts[f"{track.object_name}:{workload.port}"] = urlsplit(running.url).netloc
        if workload.metrics_port is not None:
            ports.add(workload.metrics_port)
            hosts[f"{track.object_name}:{workload.metrics_port}"] = urlsplit(
                running.metrics_url).netloc
        found, served, predictions = _smoke_test(running.url, running.metrics_url,
                                                 track.model.name)
        pinned = ("pinned at render" if track.model.version
                  else "alias resolved at start-up")
        command = " ".join(workload.command)
        print(f"{label}: model server up at {running.url} (healthy)\n"
              f"  command, as rendered (bound to 127.0.0.1 here): {command}\n"
              f"  model: {served.get('model_name')} version {served.get('model_version')} "
              f"({track.model.uri}, {pinned})\n"
              f"  endpoint: POST {running.url}/invocations "
              f"(MLflow payloads; Open Inference Protocol under /v2/models/{track.model.name})"
              f"\n  metrics: GET {running.metrics_url}/metrics\n"
              f"  predictions for {_SAMPLE_ROWS} rows of breast_cancer: {predictions}; "
              "their true labels posted to /feedback\n"
              f"  logs: {running.log_path}", flush=True)
        problems += [f"{label}: {p}" for p in found]
    return problems


def _monitor(recording: Recording, registries: Mapping[str, _Registry],
             hosts: Mapping[str, str], stack: ExitStack, root: Path,
             progress: _Progress) -> list[str]:
    """Start each standalone Prometheus of the recording from its rendered workload, scraping
    what runs here (``hosts``: in-network address to local one; the registry at its metrics
    exporter); the problems found."""
    problems: list[str] = []
    for monitoring in (c for c in recording.components if isinstance(c, MonitoringStack)):
        workload = monitoring.plan.prometheus
        if workload is None:
            progress.skip(monitoring.plan.name, "it declares no Prometheus of its own "
                          "(operator mode: the cluster's Prometheus evaluates its rules)")
            continue
        if shutil.which(workload.command[0]) is None:
            progress.skip(workload.name, "Prometheus is not installed here "
                          "(scripts/system-deps.sh installs Debian's package)")
            continue
        assert workload.port is not None
        listen = {f"0.0.0.0:{workload.port}": f"127.0.0.1:{workload.port}"}
        watched = monitoring.args.registry
        registry = (registries.get(watched.plan.tracking_uri) if watched is not None
                    else None)
        if watched is not None and registry is None:
            progress.skip(workload.name, "the registry it scrapes is not one the demo runs")
            continue
        progress.step(f"starting Prometheus `{workload.name}` with the generated rules")
        running = stack.enter_context(run_workload(workload, {}, root / workload.name,
                                                   hosts={**hosts, **listen}))
        progress.ran.append(workload.name)
        targets = [t.address for t in monitoring.plan.scraped]
        here = [t for t in targets if t in hosts]
        queries = {"drift of every feature, all replicas (PSI / Jensen-Shannon)":
                   "mlops:feature_drift:score",
                   "live accuracy from /feedback labels": "mlops:live_accuracy:ratio"}
        print(f"{workload.name}: up at {running.url}, scraping {', '.join(here) or 'nothing'}"
              + (f" (not running here: {', '.join(sorted(set(targets) - set(here)))})"
                 if set(targets) - set(here) else "")
              + "\n" + "".join(f"  {what}: {running.url}/graph?g0.expr={quote(expr)}\n"
                                for what, expr in queries.items())
              + f"  logs: {running.log_path}", flush=True)
        if not here:
            problems.append(f"{workload.name}: none of its targets runs here")
    return problems


def run_demo(cwd: Path, stack: str, *, workdir: Path | None = None, check: bool = False) -> int:
    """Start the stack's registries, run each retrain schedule's job once (training a model
    for services no schedule feeds), then serve from each model service's rendered command;
    with ``check``, require every retrain to promote, smoke-test and stop.

    Secrets are generated afresh for the demo (the stack's real ones live in its Pulumi state).

    Args:
        cwd: The project directory (with ``Pulumi.yaml``).
        stack: The stack whose config is used.
        workdir: Where the workloads' data and logs go; kept on exit. Default: a temporary
            folder, removed on exit (also on error or Ctrl-C).
        check: Stop after the smoke tests instead of running until Ctrl-C.

    Returns:
        0 when everything that ran answered (and, with ``check``, every retrain promoted); 1
        when something failed or nothing could run here; 130 on Ctrl-C (or SIGTERM) before
        the demo was up.
    """
    progress = _Progress()
    progress.step(f"rendering stack {stack!r} under Pulumi's mock runtime")
    # This first render only finds the registries: aliases cannot be resolved before one runs.
    with environment(_NO_REGISTRY), _quiet():
        recording = record_program(cwd, stack, preview=True)
    if not any(isinstance(c, ModelRegistry) for c in recording.components):
        print(f"stack {stack!r} declares no ModelRegistry: nothing to run")
        return 1
    if workdir is None:
        root = Path(tempfile.mkdtemp(prefix=f"mlops-demo-{stack}-"))
        print(f"data and logs: {root} (removed on exit; --workdir DIR keeps them)")
    else:
        root = workdir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        print(f"data and logs: {root} (kept)")
    restore = _stop_on_sigterm()
    try:
        return _run(cwd, stack, recording, root, progress, check=check)
    except KeyboardInterrupt:
        print("interrupted; stopped everything", flush=True)
        return 130
    finally:
        restore()
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"data and logs kept in {root}")


def _stop_on_sigterm() -> Callable[[], object]:
    """Make SIGTERM stop the demo as Ctrl-C does (its processes stopped, its folder removed);
    returns what puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers, and receives signals

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _run(cwd: Path, stack: str, recording: Recording, root: Path, progress: _Progress, *,
         check: bool) -> int:
    """Run what can run of the recording under ``root``; everything started is stopped on
    return."""
    problems: list[str] = []
    with ExitStack() as stack_:
        registries = _start_registries(recording, stack_, root, progress)
        services = _services(recording)
        # Before serving: the schedule's job registers the version the services serve.
        retrained, retrain_problems = _run_retrains(_schedules(recording), registries, root,
                                                    progress, check=check)
        registered = {**retrained,
                      **_register_models(services, registries, root, retrained, progress)}
        rendered = recording
        if services and len(registries) == 1:
            # Rendered as `pulumi preview` would be with the registry reachable: every
            # alias is pinned to the version it names now.
            (registry,) = registries.values()
            progress.step(f"rendering stack {stack!r} again against {registry.url}, as "
                          "`pulumi preview` would (pins each alias to its version)")
            try:
                with environment(registry.env()):
                    rendered = record_program(cwd, stack, preview=True)
                services = _services(rendered)
            except ValidationError as err:
                # As `pulumi preview` would fail: an alias the registry does not have.
                print(f"rendered again against {registry.url}: {err}\n"
                      "  serving from the first render (aliases resolved at start-up)")
        ports = {urlsplit(r.url).port or 0 for r in registries.values()}
        hosts = {k: v for r in registries.values() for k, v in r.hosts().items()}
        for service in services:
            problems += _serve(service, registries, registered, stack_, root, ports, progress,
                               hosts)
        # Once there is traffic to scrape.
        problems += _monitor(rendered, registries, hosts, stack_, root, progress)
        for problem in retrain_problems:
            print(f"retrain check failed: {problem}")
        for problem in problems:
            print(f"smoke test failed: {problem}")
        problems += retrain_problems
        if not progress.ran:
            print(f"nothing ran{', so nothing was checked' if check else ''}: all "
                  f"{len(progress.skipped)} workloads of stack {stack!r} were skipped (reasons "
                  "above). The demo runs SQLite registries, and the retrain jobs and model "
                  "services that use them, as local processes. Try `mlops demo --stack dev`; "
                  f"`mlops render --stack {stack} --out-dir out/{stack}` shows what this stack "
                  "declares.", flush=True)
            return 1
        if progress.skipped:
            print(f"ran {len(progress.ran)}, skipped {len(progress.skipped)} (reasons above): "
                  + ", ".join(item.split(":", 1)[0] for item in progress.skipped))
        if check:
            return 1 if problems else 0
        print("running; Ctrl-C stops everything", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")
    return 1 if problems else 0
