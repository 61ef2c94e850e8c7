"""The retrain job: ``mlops retrain --config FILE``.

``FILE`` is a ``mlops-retrain/v1`` config (`RetrainConfig`), JSON or YAML. Stages, each logged as
one line with its duration (logger ``mlops.retrain``):

0. ``idempotency``: when the run has a key (see below), look for the version that key
   registered.
1. ``load_dataset``: read the data (``sklearn:<name>``, a CSV or Parquet path or URL), record
   its URI, content sha256 and row count. Bounded (`DatasetLimits`): at most
   ``dataset_max_bytes`` read or downloaded and again decompressed, a ``.gz`` growing at most
   ``dataset_max_ratio`` times, a download taking at most ``dataset_timeout`` seconds; a URL's
   credentials come as headers from the variable ``dataset_headers_env`` names.
2. ``split``: deterministic train/holdout split (seeded; stratified for classification).
3. ``train``: fit the configured estimator (optionally with a randomized search) or call the
   configured trainer. An estimator given data with non-numeric feature columns is fitted
   behind a preprocessing step (`feature_pipeline`: numeric columns scaled, the others one-hot
   encoded), so that the logged model takes the raw columns.
4. ``evaluate``: score the holdout with the task's metrics (classification: accuracy, f1,
   roc_auc, log_loss; regression: rmse, mae, r2).
5. ``log_run``: one MLflow run with params, metrics, the model (with a signature) and the
   training-data drift profile at `~pulumi_mlops.runtime.drift.spec.PROFILE_ARTIFACT_PATH`. The
   model is saved with skops and records, as ``skops_trusted_types`` in its MLmodel file,
   exactly the types skops does not trust by default that this model is made of
   (`trusted_types`: e.g. ``sklearn.tree._tree.Tree`` for tree ensembles), so that
   ``mlflow.sklearn.load_model``, pyfunc and ``mlops serve`` load it, and nothing else.
6. ``champion``: load the holder of ``promote_alias`` (`load_model`: skops, trusting only
   scikit-learn's own types; a pickle only with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``)
   and score it on the same holdout.
7. ``gates``: `apply_gates` (absolute minimums/maximums, least improvement over the champion,
   largest regression).
8. ``register``: a new model version with lineage tags (see `LINEAGE_TAGS`).
9. ``promote``: set ``challenger_alias`` on the new version, and move ``promote_alias`` to it
   only if every gate passed and ``promote_alias`` still points at the champion compared with
   (`promote`: a concurrent run that promoted first wins; this one is not promoted).

No alias is touched before stage 9, so a failure anywhere (data missing or malformed, training
or evaluation raising, the registry unreachable) leaves every alias where it was.

This module runs the stages and decides the exit code; the stages' work is in the package's
other modules: `~pulumi_mlops.runtime.retrain.config_file` (the config file and its digest),
`~pulumi_mlops.runtime.retrain.data` (stages 1 and 2: the only reads outside the registry),
`~pulumi_mlops.runtime.retrain.train` (3 and 4) and `~pulumi_mlops.runtime.retrain.gates` (7),
both pure, and `~pulumi_mlops.runtime.retrain.registry` (0, 5, 6, 8 and 9: every MLflow call).

Exit codes
----------
- `EXIT_PROMOTED` (0): registered and promoted (or a retry of a slot that was).
- `EXIT_FAILED` (1): a stage failed; no alias was moved.
- `EXIT_BAD_CONFIG` (2): the config file is missing, not JSON or YAML, or invalid; or the run
  key is not a valid key.
- `EXIT_CONFIG_CHANGED` (3): the run's key already registered a version, from another config.
- `EXIT_NOT_PROMOTED` (10): registered as challenger, but a gate failed, or ``promote_alias``
  moved while the run ran (a concurrent run promoted first); or a retry of a slot that was not
  promoted.

Idempotency
-----------
The idempotency key is the identity of the run, given by whoever started it, never the clock:
``MLOPS_SCHEDULE_SLOT`` (`run_key`). On Kubernetes it is the Job's name (the CronJob names each
Job after its scheduled time; a retried pod of the same Job has the same name; a Job created by
hand with ``kubectl create job --from=cronjob/...`` has a new name, so it runs); on Docker it is
the scheduler's slot (``mlops schedule`` sets it for every attempt). Without a key (a run by
hand) the job always runs.

A version registered under a key carries it as ``mlops.schedule_slot``, and the sha256 of the
config it was trained from as ``mlops.config_sha256`` (`config_digest`). A run whose key already
registered a version registers nothing: with the same config it exits with the recorded
outcome; with another config it exits `EXIT_CONFIG_CHANGED`, saying that the config changed
since that key ran. If the earlier attempt died after registering but before moving the
aliases, the retry finishes the alias moves as long as the champion it was compared with still
holds ``promote_alias``; otherwise it fails without moving anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from pulumi_mlops.contracts.lineage import GATES_PASSED_TAG
from pulumi_mlops.runtime.retrain.config import RetrainConfig
from pulumi_mlops.runtime.retrain.config_file import config_digest
from pulumi_mlops.runtime.retrain.data import DatasetLimits, Task, infer_task, load_dataset, split
from pulumi_mlops.runtime.retrain.gates import GateResult, apply_gates
from pulumi_mlops.runtime.retrain.registry import (
    COMPARED_TAG,
    CONFIG_TAG,
    NO_CHAMPION,
    OUTCOME_TAG,
    SLOT_TAG,
    Champion,
    Promotion,
    alias_version,
    evaluate_champion,
    find_slot_version,
    log_run,
    promote,
    register,
)
from pulumi_mlops.runtime.retrain.train import evaluate, train
from pulumi_mlops.runtime.scheduler import SLOT_ENV

__all__ = [
    "EXIT_BAD_CONFIG",
    "EXIT_CONFIG_CHANGED",
    "EXIT_FAILED",
    "EXIT_NOT_PROMOTED",
    "EXIT_PROMOTED",
    "StageError",
    "run",
    "run_key",
]

log = logging.getLogger("mlops.retrain")

EXIT_PROMOTED: Final = 0
"""Registered and promoted."""
EXIT_FAILED: Final = 1
"""A stage failed; no alias moved."""
EXIT_BAD_CONFIG: Final = 2
"""The config file is missing, unreadable or invalid (or the run key is not a valid key)."""
EXIT_CONFIG_CHANGED: Final = 3
"""The run's key already registered a version, trained from another config: nothing done."""
EXIT_NOT_PROMOTED: Final = 10
"""Registered as challenger; a gate failed, or ``promote_alias`` moved while the run ran (a
concurrent run promoted first), so ``promote_alias`` did not move to it."""

# What a key may hold: a Kubernetes Job name or a scheduler slot (``2026-11-24T03:00Z``) fits;
# a quote could not break the registry search the key is looked up with.
_KEY_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,252}$")


class StageError(RuntimeError):
    """A stage failed.

    Attributes:
        stage: The stage's name.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage `{stage}` failed: {type(cause).__name__}: {cause}")
        self.stage = stage


# --------------------------------------------------------------------------- orchestration


def run_key(slot: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The run's idempotency key: ``slot`` when given, else ``MLOPS_SCHEDULE_SLOT``, else None
    (a run by hand: it always runs). Never derived from the clock.

    On Kubernetes the variable holds the Job's name (from the pod's
    ``batch.kubernetes.io/job-name`` label), on Docker the scheduler's slot.

    Raises:
        ValueError: the key holds characters other than letters, digits and ``._:+-``, or is
            longer than 253 characters; the message names the variable and the fix.
    """
    env = os.environ if environ is None else environ
    key = slot if slot is not None else env.get(SLOT_ENV)
    if not key:
        return None
    if not _KEY_PATTERN.match(key):
        raise ValueError(f"`{SLOT_ENV}` must be letters, digits and `._:+-`, starting with a "
                         f"letter or digit, at most 253 characters (got {key!r}). Fix: use the "
                         "Job's name or the slot, e.g. 2026-11-24T03:00Z, or unset it to run "
                         "without a key.")
    return key


@contextlib.contextmanager
def _stage(name: str, details: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    info: dict[str, Any] = {} if details is None else details
    started = time.perf_counter()
    try:
        yield info
    except Exception as err:
        took = time.perf_counter() - started
        log.error("stage=%s status=failed duration=%.2fs error=%s: %s", name, took,
                  type(err).__name__, err)
        raise StageError(name, err) from err
    took = time.perf_counter() - started
    extra = "".join(f" {k}={v}" for k, v in info.items())
    log.info("stage=%s status=ok duration=%.2fs%s", name, took, extra)


def _summary(config: RetrainConfig, version: str, champion: Champion | None,
             results: Sequence[GateResult], promotion: Promotion,
             metrics: Mapping[str, float]) -> str:
    head = (f"retrain {config.model_name}: version {version} registered as "
            f"`{config.challenger_alias}`; ")
    was = f"version {champion.version}" if champion else "none"
    if promotion.promoted:
        head += f"PROMOTED to `{config.promote_alias}` (previous: {was})"
    elif promotion.lost_to is not None:
        head += (f"NOT promoted: every gate passed, but `{config.promote_alias}` moved from "
                 f"{was} to {promotion.lost_to} while this run ran (a concurrent run promoted "
                 f"first); it stays {promotion.lost_to}. Run again to compare with it")
    else:
        failed = [f"{r.gate}:{r.metric}" for r in results if not r.passed]
        head += (f"NOT promoted: gate(s) failed: {', '.join(failed)}; "
                 f"`{config.promote_alias}` stays {was}")
    lines = [head, f"  {'metric':<10} {'new':>9} {'champion':>9}"]
    for metric, value in sorted(metrics.items()):
        c = champion.metrics.get(metric) if champion else None
        lines.append(f"  {metric:<10} {value:>9.4f} {'-' if c is None else f'{c:.4f}':>9}")
    if results:
        lines.append(f"  {'gate':<16} {'metric':<10} {'result':<6} why")
        for r in results:
            lines.append(f"  {r.gate:<16} {r.metric:<10} {'pass' if r.passed else 'FAIL':<6} "
                         f"{r.reason}")
    else:
        lines.append("  no gates configured")
    return "\n".join(lines)


def _resume(config: RetrainConfig, existing: Any, slot: str, digest: str) -> int:
    """A retry of a slot that already registered ``existing``: register nothing."""
    tags = dict(existing.tags or {})
    version = str(existing.version)
    recorded = tags.get(CONFIG_TAG)
    # A version from before the config digest was recorded cannot be compared: treated as the
    # same config, as it was then.
    if recorded is not None and recorded != digest:
        print(f"retrain {config.model_name}: the config changed since slot {slot} ran: version "
              f"{version} was trained from config sha256 {recorded[:12]}, this run's config is "
              f"{digest[:12]}; nothing registered, no alias moved. To train with this config, "
              f"run it under a new key (a new Job, e.g. `kubectl create job --from=cronjob/...`"
              f" with a new name; or another or no {SLOT_ENV})", flush=True)
        return EXIT_CONFIG_CHANGED
    outcome = tags.get(OUTCOME_TAG)
    if outcome is not None:
        promoted = outcome == "promoted"
        print(f"retrain {config.model_name}: slot {slot} already ran: version {version} "
              f"was {'promoted' if promoted else 'not promoted'}; nothing registered")
        return EXIT_PROMOTED if promoted else EXIT_NOT_PROMOTED
    # The earlier attempt registered but died before the aliases moved. Finish only when the
    # comparison it made still holds (the same champion).
    compared = tags.get(COMPARED_TAG, NO_CHAMPION)
    with _stage("resume", {"version": version}):
        current = alias_version(config.model_name, config.promote_alias) or NO_CHAMPION
    # The alias on this very version: the earlier attempt moved it, then died before the tag.
    if current == version:
        compared = version
    if compared != current:
        log.error("slot %s registered version %s but did not finish, and `%s` moved since "
                  "(compared with %r, now %r); not moving any alias", slot, version,
                  config.promote_alias, compared, current)
        return EXIT_FAILED
    passed = tags.get(GATES_PASSED_TAG) == "true"
    with _stage("promote", {"version": version, "promoted": passed}):
        promoted = promote(config, version, passed, compared).promoted
    print(f"retrain {config.model_name}: slot {slot}: finished the alias moves for version "
          f"{version} ({'promoted' if promoted else 'not promoted'}); nothing registered")
    return EXIT_PROMOTED if promoted else EXIT_NOT_PROMOTED


def run(config: RetrainConfig, *, slot: str | None = None,
        environ: Mapping[str, str] | None = None) -> int:
    """Run the job end to end; returns the exit code (see the module docstring).

    The registry comes from ``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``; lineage from ``MLOPS_CODE_VERSION`` (or ``GIT_SHA``) and
    ``MLOPS_IMAGE_DIGEST``.

    Args:
        config: The job's config.
        slot: The run's idempotency key. Default: ``MLOPS_SCHEDULE_SLOT`` (see `run_key`).
        environ: Where the key and the lineage variables are read. Default: ``os.environ``.
    """
    env = os.environ if environ is None else environ
    try:
        key = run_key(slot, env)
    except ValueError as err:
        print(f"retrain {config.model_name}: error: {err}", flush=True)
        return EXIT_BAD_CONFIG
    digest = config_digest(config)
    try:
        with _stage("idempotency", {"key": key, "config_sha256": digest[:12]}) as info:
            existing = None if key is None else find_slot_version(config.model_name, key)
            info["existing_version"] = None if existing is None else existing.version
        if existing is not None:
            assert key is not None
            return _resume(config, existing, key, digest)
        with _stage("load_dataset") as info:
            dataset = load_dataset(config.dataset, config.target_column,
                                   DatasetLimits.from_config(config, env))
            info.update(uri=dataset.uri, rows=dataset.rows, sha256=dataset.sha256[:12])
        with _stage("split") as info:
            task: Task = infer_task(dataset.y) if config.task == "auto" else config.task
            data = split(dataset, config.holdout_fraction, config.seed, task)
            info.update(task=task, train=len(data.x_train), holdout=len(data.x_holdout))
        with _stage("train"):
            model, params = train(config, data.x_train, data.y_train)
        with _stage("evaluate") as info:
            metrics = evaluate(model, data.x_holdout, data.y_holdout, task)
            info.update({k: f"{v:.4f}" for k, v in metrics.items()})
        with _stage("log_run") as info:
            run_id, model_uri = log_run(config, dataset, data, model, params, metrics, key,
                                        task, digest)
            info["run_id"] = run_id
        with _stage("champion") as info:
            champion = evaluate_champion(config, data, task)
            info["version"] = champion.version if champion else None
        with _stage("gates") as info:
            results = apply_gates(metrics, champion.metrics if champion else None, config.gates)
            passed = all(r.passed for r in results)
            info.update(passed=passed, failed=sum(not r.passed for r in results))
        tags = {
            "mlops.dataset.uri": dataset.uri, "mlops.dataset.sha256": dataset.sha256,
            "mlops.dataset.rows": str(dataset.rows),
            "mlops.params": json.dumps(params, default=str, sort_keys=True),
            "mlops.metrics": json.dumps(metrics, sort_keys=True),
            "mlops.code_version": env.get("MLOPS_CODE_VERSION") or env.get("GIT_SHA")
            or "unknown",
            "mlops.image_digest": env.get("MLOPS_IMAGE_DIGEST") or "unknown",
            CONFIG_TAG: digest, GATES_PASSED_TAG: str(passed).lower(),
            COMPARED_TAG: champion.version if champion else NO_CHAMPION, "mlops.run_id": run_id,
            **{f"mlops.metric.{k}": repr(v) for k, v in metrics.items()},
            **({} if key is None else {SLOT_TAG: key}),
        }
        with _stage("register") as info:
            version = register(config, model_uri, tags)
            info["version"] = version
        compared = champion.version if champion else NO_CHAMPION
        with _stage("promote", {"version": version, "gates_passed": passed}) as info:
            promotion = promote(config, version, passed, compared)
            info["promoted"] = promotion.promoted
    except Exception as err:
        if isinstance(err, StageError):
            stage, cause = err.stage, err.__cause__ or err
        else:
            log.exception("unexpected error")
            stage, cause = "(outside a stage)", err
        moved = "some aliases may have moved" if stage == "promote" else "no alias was moved"
        print(f"retrain {config.model_name}: FAILED at stage `{stage}` "
              f"({type(cause).__name__}: {cause}); {moved}", flush=True)
        return EXIT_FAILED
    print(_summary(config, version, champion, results, promotion, metrics), flush=True)
    return EXIT_PROMOTED if promotion.promoted else EXIT_NOT_PROMOTED
