"""RetrainSchedule: train, evaluate, compare, register and promote a model on a cron schedule.

Args are validated on construction, the job's config file (`RetrainConfig`) included, so a bad
estimator, dataset or gate fails the preview rather than the 3 a.m. run. `plan_retrain` is the
pure function that decides the config file, the job's command line and environment; on
Kubernetes it becomes a CronJob, on Docker a scheduler container (``mlops schedule``) running the
very same command on the same schedule.

What the platform adds to one run is its idempotency key, ``MLOPS_SCHEDULE_SLOT`` (`SLOT_ENV`):
on Kubernetes the Job's name, read from the pod's `JOB_NAME_LABEL` label through the downward
API; on Docker the scheduler's slot.

How runs ended is observed where the runs are kept: on Docker the scheduler serves its own
Prometheus series (``mlops_retrain_runs_total`` … on `RetrainPlan.scrape`); on Kubernetes no
process outlives a run, and the outcome comes from kube-state-metrics' CronJob and Job series
(``kube_cronjob_status_last_successful_time``, ``kube_job_failed`` …).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Annotated, Any

import pulumi
import pydantic
from pydantic import Field, field_validator, model_validator

from pulumi_mlops._validation import QUANTITY, ArgsModel, Cidr, Secret
from pulumi_mlops.contracts.retrain import SLOT_ENV
from pulumi_mlops.contracts.scrape import ScrapeTarget
from pulumi_mlops.errors import InputError, Problem, ValidationError
from pulumi_mlops.plans.image import check_runtime_image, require_runtime_image
from pulumi_mlops.plans.registry_ref import (
    RegistryPeer,
    RegistryReference,
    check_registry,
    credentials_env,
    same_target_problem,
)
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget
from pulumi_mlops.plans.workload import (
    ConfigFile,
    EnvValue,
    ExecCheck,
    Mount,
    Resources,
    SecretRef,
    Workload,
    url_port,
)
from pulumi_mlops.runtime.retrain.config import (
    DEFAULT_DATASET_MAX_BYTES,
    DEFAULT_DATASET_MAX_RATIO,
    DEFAULT_DATASET_TIMEOUT,
    Gates,
    RetrainConfig,
    redact_url,
)
from pulumi_mlops.runtime.scheduler import DEFAULT_METRICS_PORT, parse_cron

__all__ = [
    "CONFIG_PATH",
    "DATASET_HEADERS_ENV",
    "SCHEDULER_METRICS_PORT",
    "SLOT_ENV",
    "CronSettings",
    "Gates",
    "RetrainPlan",
    "RetrainScheduleArgs",
    "plan_retrain",
]

CONFIG_PATH = "/etc/mlops/retrain.json"
"""Where the job's config file is mounted."""
DATASET_HEADERS_ENV = "MLOPS_DATASET_HEADERS"
"""The job's variable holding ``dataset_headers`` (JSON), from the component's secret data;
the config names it (``dataset_headers_env``)."""
SCHEDULER_METRICS_PORT = DEFAULT_METRICS_PORT
"""The port of the Docker scheduler's ``/metrics`` (`RetrainPlan.scrape`): reached on the
container's network only, never published on the host, like the registry's PostgreSQL."""
TTL_AFTER_FINISHED = 7 * 24 * 3600
"""Seconds a finished run's record (a Kubernetes Job) is kept, beside the history limits."""
_HEARTBEAT_INTERVAL = 30
_HEARTBEAT_MAX_AGE = 120
# The config fields that are inputs of the component under the same name.
_CONFIG_INPUTS = ("model_name", "dataset", "target_column", "estimator", "params", "trainer",
                  "search", "search_iterations", "task", "gates", "promote_alias",
                  "dataset_max_bytes", "dataset_max_ratio", "dataset_timeout")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _default_resources() -> Resources:
    return Resources(cpu_request="500m", memory_request="1Gi", cpu_limit="2",
                     memory_limit="2Gi")


class RetrainScheduleArgs(ArgsModel):
    """Inputs of `RetrainSchedule`.

    Attributes:
        registry: The registry the job registers versions in and moves the alias of: a
            `ModelRegistry`, or a `RegistryEndpoint` (e.g. from a `StackReference`).
        target: Where it runs: a `KubernetesTarget` (a CronJob) or a `DockerTarget` (a
            scheduler container).
        schedule: Five-field cron expression, in UTC, e.g. ``"0 3 * * *"``.
        model_name: Registered model the job registers versions of.
        dataset: ``sklearn:<name>`` (breast_cancer, diabetes, wine, iris, digits, linnerud), or
            a CSV or Parquet path or http(s) URL. A URL holding credentials
            (``user:password@``, a ``token``, ``api_key``, ``sig`` … query parameter) is
            refused: it would be written into the ConfigMap, the plan, the job's logs and the
            lineage tags; use ``dataset_headers``.
        dataset_headers: HTTP headers sent with a URL dataset's download, header name →
            value (a string or a Pulumi secret output), e.g. ``{"Authorization":
            pulumi.Output.secret("Bearer ...")}``. The values travel as secret data (a
            Kubernetes Secret, a Pulumi secret) into the job's ``MLOPS_DATASET_HEADERS``
            variable, never into the config, the plan, logs or tags; they are not sent where
            the URL redirects. Default: none.
        dataset_cidrs: The networks a URL dataset's host lies in; the job's Kubernetes egress
            on the dataset's port is narrowed to them. Default: any address but link-local
            ones (cloud metadata).
        dataset_max_bytes: Most bytes the dataset may have, downloaded or read, and again once
            decompressed; over it the run fails, moving no alias. Default: 512 MiB.
        dataset_max_ratio: Most times a ``.gz`` dataset may grow when decompressed.
            Default: 100.
        dataset_timeout: Seconds a URL dataset's whole download may take. Default: 600.
        target_column: Label column of a CSV or Parquet dataset. Default: none (required for
            CSV and Parquet).
        estimator: Import path of a scikit-learn estimator class (a subclass of
            ``sklearn.base.BaseEstimator``, in a module that is not the standard library's and
            is installed where the preview runs), e.g.
            ``sklearn.ensemble.GradientBoostingClassifier``. Only one of ``estimator`` or
            ``trainer`` can be provided.
        params: Constructor parameters of ``estimator``. Default: ``{}`` (the estimator's own
            defaults).
        trainer: ``pkg.module:function`` returning a fitted estimator, instead of ``estimator``:
            a Python function of a module that is not the standard library's, installed where
            the preview runs as in the job's image.
        search: Parameter distributions (lists of values) for a randomized search on the
            training split. Default: none, no search.
        search_iterations: Candidates the search tries. Default: 10.
        task: ``classification``, ``regression``, or ``auto`` (inferred from the label).
            Default: ``auto``.
        gates: What a new version must pass before the alias moves to it. Default: no gate
            (every new version is promoted).
        promote_alias: Alias moved to a version that passes every gate. Default: ``champion``.
        allow_pickle: Let the job load a champion saved with pickle or cloudpickle
            (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``). Loading one runs code from the
            registry with the job's registry credentials, so anyone who can register a version
            of the model could act as the job. Versions this job registers are saved with
            skops and need no opt-in. Default: false (a pickled champion fails the run at the
            ``champion`` stage, moving no alias).
        image: The runtime image holding ``mlops retrain``: ``RuntimeImage(...).image_ref``, or
            a prebuilt image pinned by tag or digest. Required: the project publishes no image,
            so none is implied.
        resources: Requests and limits of the job. Default: 500m/1Gi requested, 2 CPU/2Gi
            limit.
        scratch_size: Size of the writable ``/tmp`` (dataset download, model files).
            Default: 2Gi.
        timeout: Seconds one run may take before it is killed (``activeDeadlineSeconds``).
            Default: 3600.
        retries: Further attempts after a failed run (``backoffLimit``). Default: 1.
        starting_deadline: Seconds after its slot within which a missed run may still start;
            later the slot is skipped (``startingDeadlineSeconds``). Default: 600.
        suspend: Keep the schedule but run nothing. Default: false.
        run_on_create: Also run the job once when the schedule is created, so that a new
            environment gets a trained, promoted model without waiting for the first slot:
            on Kubernetes a Job ``<name>-retrain-initial`` beside the CronJob, on Docker the
            scheduler runs it when it starts (keyed ``initial``, so a restarted scheduler
            repeats that run, which registers nothing new). Not while ``suspend``.
            Default: false.
        successful_jobs_history: Finished successful Jobs kept for inspection (Kubernetes).
            Default: 3.
        failed_jobs_history: Failed Jobs kept for inspection (Kubernetes). Default: 3.
    """

    registry: RegistryReference
    target: Annotated[KubernetesTarget | DockerTarget, Field(discriminator="kind")]
    schedule: str
    model_name: str
    dataset: str
    dataset_headers: Secret[dict[str, Any] | None] = None
    dataset_cidrs: list[Cidr] = Field(default_factory=list)
    dataset_max_bytes: Annotated[int, Field(ge=1)] = DEFAULT_DATASET_MAX_BYTES
    dataset_max_ratio: Annotated[float, Field(ge=1)] = DEFAULT_DATASET_MAX_RATIO
    dataset_timeout: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = DEFAULT_DATASET_TIMEOUT
    target_column: str | None = None
    estimator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: str | None = None
    search: dict[str, list[Any]] | None = None
    search_iterations: Annotated[int, Field(ge=1, le=1000)] = 10
    task: str = "auto"
    gates: Gates = Field(default_factory=Gates)
    promote_alias: str = "champion"
    allow_pickle: bool = False
    image: Any
    resources: Resources = Field(default_factory=_default_resources)
    scratch_size: Annotated[str, Field(pattern=QUANTITY)] = "2Gi"
    timeout: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    starting_deadline: Annotated[int, Field(ge=10, le=24 * 3600)] = 600
    suspend: bool = False
    run_on_create: bool = False
    successful_jobs_history: Annotated[int, Field(ge=0, le=100)] = 3
    failed_jobs_history: Annotated[int, Field(ge=0, le=100)] = 3

    _registry = field_validator("registry", mode="before")(check_registry)

    @field_validator("dataset_headers")
    @classmethod
    def _dataset_headers(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for header, secret in (value or {}).items():
            if not _HEADER_NAME.match(header):
                raise InputError(f"must map HTTP header names to values; {header!r} is not a "
                                 "header name", "use e.g. {'Authorization': secret}.")
            if not isinstance(secret, str | pulumi.Output):
                raise InputError(f"the value of {header!r} must be a string or a Pulumi output",
                                 "pass pulumi.Output.secret('...') or a config secret.")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        try:
            return parse_cron(value)
        except ValueError:
            raise InputError("must be a five-field cron expression (minute hour day-of-month "
                             "month day-of-week)",
                             "use e.g. '0 3 * * *' (03:00 UTC daily).") from None

    @field_validator("image")
    @classmethod
    def _image(cls, value: Any) -> Any:
        return check_runtime_image(value)

    _image_given = model_validator(mode="before")(require_runtime_image)

    def config(self) -> RetrainConfig:
        """The job's config file (raises pydantic's error; `problems` reports it readably)."""
        values = {k: getattr(self, k) for k in _CONFIG_INPUTS}
        if self.dataset_headers:
            values["dataset_headers_env"] = DATASET_HEADERS_ENV
        return RetrainConfig.model_validate({**values, "gates": self.gates.model_dump(),
                                             "schedule": self.schedule})

    def problems(self) -> list[Problem]:
        """Rules that span several inputs, the job's config file's included."""
        found: list[Problem] = []
        if self.estimator is not None and self.trainer is not None:
            found.append(Problem("estimator", "Only one of `estimator` or `trainer` can be "
                                 "provided", self.estimator, "drop `estimator` or `trainer`.",
                                 related=("trainer",)))
        elif self.estimator is None and self.trainer is None:
            found.append(Problem("estimator", "is required (or `trainer`)", None,
                                 "set `estimator` to a scikit-learn estimator's import path, "
                                 "e.g. 'sklearn.ensemble.RandomForestClassifier', or `trainer` "
                                 "to a function, 'pkg.module:function'.", related=("trainer",)))
        if not self.dataset.startswith("sklearn:") and not self.target_column:
            found.append(Problem("target_column", "is required for a CSV or Parquet dataset",
                                 None, "set `target_column` to the name of the label column, "
                                 "e.g. 'label'."))
        if self.dataset_headers and not self.dataset.startswith(("http://", "https://")):
            found.append(Problem("dataset_headers", "is only sent with an http(s) dataset",
                                 sorted(self.dataset_headers),
                                 "drop `dataset_headers`, or use a URL `dataset`.",
                                 related=("dataset",)))
        try:
            self.config()
        except pydantic.ValidationError as exc:
            # The cross-field rules above already said what the config's own would say.
            reported = {p.path for p in found}
            for err in exc.errors(include_url=False):
                problem = _config_problem(err)
                if problem.path not in reported and (err["loc"] or not reported):
                    found.append(problem)
        same_target = same_target_problem(self.registry, self.target)
        if same_target is not None:
            found.append(same_target)
        return found


def _config_problem(err: Any) -> Problem:
    """One error of the job's config, as a problem of the input it came from."""
    loc = [str(x) for x in err["loc"]]
    message = str(err["msg"]).removeprefix("Value error, ")
    if loc:
        path, value = ".".join(loc), err.get("input")
        if path == "dataset" and isinstance(value, str):
            value = redact_url(value)  # refused for the credentials it holds
    else:
        # A rule across fields: it names them in backticks; the first is the input to fix.
        named = [n for n in re.findall(r"`(\w+)`", message) if n in _CONFIG_INPUTS]
        path, value = (named[0] if named else "(config)"), None
    # The message may open with the input's name, which the problem names already.
    message = message.removeprefix(f"`{path}`: ").removeprefix(f"`{path}` ")
    rule = message[0].lower() + message[1:] if message else "is invalid"
    # The config's own messages name the other inputs they are about in backticks.
    related = tuple(n for n in dict.fromkeys(re.findall(r"`(\w+)`", message))
                    if n in _CONFIG_INPUTS and n != path)
    return Problem(path, rule.rstrip("."), value,
                   f"correct `{path}` (see docs/retrain-schedule.md).", related=related)



# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class CronSettings:
    """When and how the job runs, as a Kubernetes CronJob (and, for the schedule and
    deadlines, the Docker target's scheduler) runs it.

    Attributes:
        schedule: Five-field cron expression, in UTC.
        timeout_seconds: Seconds one run may take.
        retries: Further attempts after a failed run.
        starting_deadline_seconds: Seconds after its slot within which a missed run may start.
        suspend: Keep the schedule but run nothing.
        run_on_create: Run the job once when the schedule is created (not while suspended).
        successful_jobs_history: Finished successful Jobs kept.
        failed_jobs_history: Failed Jobs kept.
        ttl_seconds_after_finished: Seconds a finished run's record is kept, beside the
            history limits.
    """

    schedule: str
    timeout_seconds: int
    retries: int
    starting_deadline_seconds: int
    suspend: bool
    run_on_create: bool
    successful_jobs_history: int
    failed_jobs_history: int
    ttl_seconds_after_finished: int


@dataclass(frozen=True)
class RetrainPlan:
    """Everything the schedule declares, independent of the target.

    Attributes:
        name: Component name.
        object_name: Name of the CronJob (Kubernetes) or scheduler container (Docker).
        config: The job's validated config.
        job: The retrain job's container (what a CronJob runs at every slot).
        scheduler: The Docker target's long-lived container running ``job.command`` at
            every slot (``mlops schedule``); its ``port`` is that of its ``/metrics``.
        labels: Labels of every object.
        selector: Labels that select the job's pods.
        dataset_port: The TCP port a URL dataset is downloaded from (the job's egress); None
            for a bundled or local dataset.
        dataset_cidrs: Where a URL dataset's host is (empty: anywhere but link-local).
        cron: When and how the job runs.
        registry: Where the job reaches its registry (its egress).
        scrape: Where Prometheus scrapes the scheduler (Docker target only): its
            ``/metrics`` on `SCHEDULER_METRICS_PORT`, with `RETRAIN_RUNS`,
            `RETRAIN_LAST_SUCCESS` and `RETRAIN_STARTED` (`pulumi_mlops.contracts.metrics`).
            A Kubernetes CronJob has no long-lived process to scrape: there the outcome of
            the runs comes from kube-state-metrics, and nothing scrapes this.
    """

    name: str
    object_name: str
    config: RetrainConfig
    job: Workload
    scheduler: Workload
    labels: dict[str, str]
    selector: dict[str, str]
    dataset_port: int | None
    dataset_cidrs: tuple[str, ...]
    cron: CronSettings
    registry: RegistryPeer
    scrape: ScrapeTarget


def render_config(config: RetrainConfig) -> str:
    """The config file's content: stable JSON, so an unchanged config never shows as a diff."""
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def plan_retrain(
    name: str,
    args: RetrainScheduleArgs,
    *,
    tracking_uri: EnvValue,
    username: EnvValue | None = None,
    has_password: bool = False,
) -> RetrainPlan:
    """The job's config file, command line, environment and the scheduler around it.

    Args:
        name: Component name.
        args: Validated inputs.
        tracking_uri: The registry URI the job uses (a literal or a secret reference).
        username: The registry user, if any.
        has_password: Whether the job reads ``tracking-password`` from secret data.

    Raises:
        ValidationError: when the inputs do not make a valid job config.
    """
    problems = args.problems()
    if problems:
        raise ValidationError(f"RetrainSchedule {name!r}", problems)
    config = args.config()
    object_name = f"{name}-retrain"
    labels = {
        "app.kubernetes.io/name": "retrain",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "pulumi-mlops",
        "app.kubernetes.io/managed-by": "pulumi",
        "mlops.dev/model-name": config.model_name,
    }
    if isinstance(args.target, KubernetesTarget):
        labels.update(args.target.labels)
    selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    env: dict[str, EnvValue] = {
        "HOME": "/tmp",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.update(credentials_env(username, has_password))
    if isinstance(args.image, str):
        # Lineage: the job tags each version with the image that trained it.
        env["MLOPS_IMAGE_DIGEST"] = args.image
    # The job loads the champion to score it: no pickle from the registry unless opted in.
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true" if args.allow_pickle else "false"
    if args.dataset_headers:
        env[DATASET_HEADERS_ENV] = SecretRef("dataset-headers")
    job = Workload(
        name="retrain",
        image=args.image,
        command=("mlops", "retrain", "--config", CONFIG_PATH),
        env=env,
        port=None,
        health=None,
        files=(ConfigFile(CONFIG_PATH, render_config(config)),),
        mounts=(Mount("tmp", "/tmp", "scratch", args.scratch_size),),
        resources=args.resources,
        startup_seconds=args.timeout,
    )
    schedule_command: tuple[str, ...] = (
        "mlops", "schedule", "--cron", args.schedule,
        "--timeout", str(args.timeout),
        "--retries", str(args.retries),
        "--starting-deadline", str(args.starting_deadline),
        "--heartbeat-interval", str(_HEARTBEAT_INTERVAL),
        # Prometheus scrapes it over the container's network (the local runner and the tests
        # bind loopback instead, as for every server's --host).
        "--host", "0.0.0.0",
        "--metrics-port", str(SCHEDULER_METRICS_PORT),
    )
    if args.suspend:
        schedule_command += ("--suspend",)
    elif args.run_on_create:
        schedule_command += ("--run-at-start",)
    scheduler = replace(
        job, name="scheduler", command=(*schedule_command, "--", *job.command),
        port=SCHEDULER_METRICS_PORT,
        health=ExecCheck(("mlops", "schedule", "--check", "--max-age",
                          str(_HEARTBEAT_MAX_AGE))),
        startup_seconds=60,
    )
    return RetrainPlan(name=name, object_name=object_name, config=config, job=job,
                       scheduler=scheduler, labels=labels, selector=selector,
                       dataset_port=url_port(args.dataset),
                       dataset_cidrs=tuple(args.dataset_cidrs),
                       cron=CronSettings(
                           schedule=args.schedule, timeout_seconds=args.timeout,
                           retries=args.retries,
                           starting_deadline_seconds=args.starting_deadline,
                           suspend=args.suspend,
                           run_on_create=args.run_on_create and not args.suspend,
                           successful_jobs_history=args.successful_jobs_history,
                           failed_jobs_history=args.failed_jobs_history,
                           ttl_seconds_after_finished=TTL_AFTER_FINISHED),
                       registry=args.registry.peer(),
                       scrape=ScrapeTarget(port=SCHEDULER_METRICS_PORT))
