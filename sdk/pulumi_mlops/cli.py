"""The ``mlops`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pulumi_mlops.errors import PlanFormatError, ProgramConfigError, ValidationError

__all__ = ["main"]


def _stack_outputs(ns: argparse.Namespace) -> dict[str, dict[str, object]] | None:
    from pulumi_mlops.render.harness import load_stack_outputs

    return load_stack_outputs(Path(ns.stack_outputs)) if ns.stack_outputs else None


def _render(ns: argparse.Namespace) -> int:
    from pulumi_mlops.render import record_program, write_render

    recording = record_program(Path(ns.cwd), ns.stack, stack_outputs=_stack_outputs(ns))
    written = write_render(recording, Path(ns.out_dir))
    print(f"rendered stack {ns.stack!r}: {len(recording.resources)} resources, "
          f"{len(written)} Kubernetes manifests -> {ns.out_dir}")
    return 0


def _policy_config(ns: argparse.Namespace) -> dict[str, dict[str, object]] | None:
    """``--policy-config FILE`` (YAML or JSON, CrossGuard's format: policy name → its config);
    ``{}`` for ``--policy`` alone; None without ``--policy``."""
    if not ns.policy:
        if ns.policy_config:
            raise ProgramConfigError("--policy-config needs --policy")
        return None
    if not ns.policy_config:
        return {}
    import yaml

    try:
        doc = yaml.safe_load(Path(ns.policy_config).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ProgramConfigError(f"--policy-config {ns.policy_config}: cannot read it: {err}"
                                 ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in doc.items()):
        raise ProgramConfigError(
            f"--policy-config {ns.policy_config}: must map policy names to their config, "
            "e.g. {\"canary-weight-cap\": {\"maxWeight\": 10}}")
    return doc


def _plan(ns: argparse.Namespace) -> int:
    from pulumi_mlops.policy import PolicyConfigError
    from pulumi_mlops.render import dump_stack_plan, plan_stack

    policy_config = _policy_config(ns)
    # Whatever the program prints must not end up inside a plan written to stdout.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            plan = plan_stack(Path(ns.cwd), ns.stack, _stack_outputs(ns),
                              policy_config=policy_config)
        except PolicyConfigError as err:
            where = f"--policy-config {ns.policy_config}: " if ns.policy_config else ""
            raise ProgramConfigError(f"{where}{err}") from None
    text = dump_stack_plan(plan)
    if ns.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(ns.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"planned stack {ns.stack!r}: {len(plan['resources'])} resources -> {out}")
    if policy_config is None:
        return 0
    violations = plan["policy"]["violations"]
    for v in violations:
        print(f"policy: [{v['level']}] {v['policy']}: {v['message']}", file=sys.stderr)
    mandatory = sum(v["level"] == "mandatory" for v in violations)
    print(f"policy: stack {ns.stack!r}: {len(violations)} violations ({mandatory} mandatory"
          f"{', blocking' if mandatory else ''})", file=sys.stderr)
    return 1 if mandatory else 0


def _diff(ns: argparse.Namespace) -> int:
    from pulumi_mlops.render import diff_stack_plans, format_markdown, format_text, load_stack_plan
    from pulumi_mlops.render.diff_format import diff_json

    diff = diff_stack_plans(load_stack_plan(Path(ns.old)), load_stack_plan(Path(ns.new)))
    if ns.format == "json":
        sys.stdout.write(json.dumps(diff_json(diff), indent=2, sort_keys=True) + "\n")
    elif ns.format == "markdown":
        sys.stdout.write(format_markdown(diff, width=ns.width))
    else:
        sys.stdout.write(format_text(diff, width=ns.width))
    return 1 if ns.exit_code and diff.has_changes else 0


def _width(text: str) -> int:
    value = int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(f"must be at least 10 characters, got {value}")
    return value


def _demo(ns: argparse.Namespace) -> int:
    from pulumi_mlops.demo import run_demo

    return run_demo(Path(ns.cwd), ns.stack, check=ns.check,
                    workdir=Path(ns.workdir) if ns.workdir else None)


def _serve(ns: argparse.Namespace) -> int:
    from pulumi_mlops.runtime.serve.limits import Limits
    from pulumi_mlops.runtime.serve.server import ServeOptions, serve

    try:
        limits = Limits(
            max_body_bytes=ns.max_body_bytes, max_concurrency=ns.max_concurrency,
            max_rows=ns.max_rows, max_header_bytes=ns.max_header_bytes,
            header_timeout=ns.header_timeout, body_timeout=ns.body_timeout,
            keep_alive_timeout=ns.keep_alive_timeout,
            prediction_timeout=ns.prediction_timeout or None,
            max_class_labels=ns.max_class_labels,
            feedback_window_ids=ns.feedback_window_ids,
            feedback_window_rows=ns.feedback_window_rows)
    except ValueError as err:
        print(f"mlops serve: {str(err).replace('_', '-')}", file=sys.stderr)
        return 2
    if ns.metrics_port is not None and ns.metrics_port == ns.port:
        print("mlops serve: --metrics-port must differ from --port", file=sys.stderr)
        return 2
    if not ns.alias_poll_seconds > 0:
        print(f"mlops serve: --alias-poll-seconds must be > 0 (got {ns.alias_poll_seconds})",
              file=sys.stderr)
        return 2
    return serve(ServeOptions(
        model_uri=ns.model_uri, host=ns.host, port=ns.port, workers=ns.workers,
        limits=limits, drain_seconds=ns.drain_seconds,
        load_attempts=ns.load_attempts, max_model_bytes=ns.max_model_bytes,
        fetch_deadline_seconds=ns.fetch_deadline_seconds, drift_window=ns.drift_window,
        prediction_log_rate=ns.prediction_log_rate, model_alias=ns.model_alias,
        coerce=ns.coerce, exit_when_unhealthy_seconds=ns.exit_when_unhealthy_seconds,
        alias_poll_seconds=ns.alias_poll_seconds, metrics_port=ns.metrics_port,
    ))


def _schedule(ns: argparse.Namespace) -> int:
    from pulumi_mlops.runtime.scheduler import (
        ScheduleOptions,
        Scheduler,
        check_heartbeat,
        parse_cron,
    )

    heartbeat = Path(ns.heartbeat)
    if ns.check:
        if check_heartbeat(heartbeat, ns.max_age):
            return 0
        print(f"unhealthy: no heartbeat in {heartbeat} within {ns.max_age:g}s", file=sys.stderr)
        return 1
    command = list(ns.run)
    if command[:1] == ["--"]:
        command = command[1:]
    if ns.cron is None or not command:
        print("error: --cron and a command after `--` are required (or --check)",
              file=sys.stderr)
        return 2
    try:
        cron = parse_cron(ns.cron)
    except ValueError as err:
        print(f"error: --cron: {err}", file=sys.stderr)
        return 2
    if not 0 <= ns.metrics_port < 65536:
        print(f"error: --metrics-port must be a TCP port, or 0 for none (got {ns.metrics_port})",
              file=sys.stderr)
        return 2
    return Scheduler(ScheduleOptions(
        cron=cron, command=tuple(command), timeout=ns.timeout, retries=ns.retries,
        starting_deadline=ns.starting_deadline, suspend=ns.suspend,
        run_at_start=ns.run_at_start, heartbeat=heartbeat,
        heartbeat_interval=ns.heartbeat_interval, kill_grace=ns.kill_grace,
        metrics_port=ns.metrics_port or None, metrics_host=ns.host,
    )).run()


def _retrain(ns: argparse.Namespace) -> int:
    import logging

    from pulumi_mlops.runtime.retrain.config_file import ConfigFileError, load_job_config
    from pulumi_mlops.runtime.retrain.job import EXIT_BAD_CONFIG

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_job_config(ns.config)
    except ConfigFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    from pulumi_mlops.runtime.retrain.job import run

    return run(config, slot=ns.slot)


def _parser() -> argparse.ArgumentParser:
    from pulumi_mlops.contracts.version import __version__

    parser = argparse.ArgumentParser(prog="mlops", description="pulumi-mlops command line")
    parser.add_argument("--version", action="version", version=f"mlops {__version__}",
                        help="print the version of pulumi-mlops and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser(
        "render",
        help="render a stack under Pulumi's mock runtime (no engine, no cluster)",
        description="Run the Pulumi program under mocks with the stack's config and write "
        "every Kubernetes object as YAML plus resources.json (all resources, secrets redacted).",
    )
    render.add_argument("--cwd", default=".", help="project directory with Pulumi.yaml "
                        "(default: .)")
    render.add_argument("--stack", default="dev", help="stack whose Pulumi.<stack>.yaml config "
                        "is used (default: dev)")
    render.add_argument("--out-dir", required=True, help="directory to write manifests into")
    render.add_argument("--stack-outputs", metavar="FILE",
                        help="YAML/JSON: outputs of the stacks the program references, by stack "
                        "name ({secret: value} for a secret); without it they are unknown")
    render.set_defaults(func=_render)
    plan = sub.add_parser(
        "plan",
        help="write what a stack declares as a plan (JSON) for `mlops diff`",
        description="Run the Pulumi program under mocks with the stack's config (no engine, no "
        "cluster, no registry, no state) and write a plan: every resource keyed by "
        "type::name, with its parent and its inputs, secrets shown as [secret]. Two plans of "
        "the same program and config are byte-identical. With --policy the ML policy rules "
        "run on it too; exit status 1 when a mandatory one is violated.",
    )
    plan.add_argument("--cwd", default=".", help="project directory with Pulumi.yaml "
                      "(default: .)")
    plan.add_argument("--stack", default="dev", help="stack whose Pulumi.<stack>.yaml config "
                      "is used (default: dev)")
    plan.add_argument("--out", default="-", help="file to write the plan to (default: stdout)")
    plan.add_argument("--stack-outputs", metavar="FILE",
                        help="YAML/JSON: outputs of the stacks the program references, by stack "
                        "name ({secret: value} for a secret); without it they are unknown")
    plan.add_argument("--policy", action="store_true",
                      help="also run the ML policy rules (docs/policy.md): violations are "
                      "printed to stderr and recorded in the plan; exit 1 when one is mandatory")
    plan.add_argument("--policy-config", metavar="FILE",
                      help="YAML/JSON: policy name -> its config (enforcementLevel and "
                      "properties), as `pulumi preview --policy-pack-config` takes it")
    plan.set_defaults(func=_plan)
    diff = sub.add_parser(
        "diff",
        help="compare two plans: resources added, removed, changed; model versions first",
        description="Compare two plans written by `mlops plan` (say, of the base and the head "
        "of a pull request): resources added, removed and changed, each changed field with its "
        "old and new value, and a summary of the model versions that move. Exit status: 0, or "
        "with --exit-code 1 when anything changed; 2 when a plan cannot be read.",
    )
    diff.add_argument("old", help="plan before (e.g. of the base branch)")
    diff.add_argument("new", help="plan after (e.g. of the pull request's head)")
    diff.add_argument("--format", choices=["text", "markdown", "json"], default="text",
                      help="text for a terminal, markdown for a pull-request comment (one "
                      "collapsed section per resource), json for tools (default: text)")
    diff.add_argument("--exit-code", action="store_true",
                      help="exit 1 when the plans differ, like `git diff --exit-code`")
    diff.add_argument("--width", type=_width, default=80,
                      help="cut values longer than this many characters in text and markdown "
                      "(default: %(default)s)")
    diff.set_defaults(func=_diff)
    demo = sub.add_parser(
        "demo",
        help="run the stack's workloads as local processes (nothing but Python)",
        description="Run the workloads a stack declares as local processes on 127.0.0.1, from "
        "the very commands the components render (paths remapped to a temporary folder, "
        "removed on exit unless --workdir is given). What cannot run here is skipped with "
        "the reason; when nothing can, the demo exits 1.",
    )
    demo.add_argument("--cwd", default=".", help="project directory with Pulumi.yaml")
    demo.add_argument("--stack", default="dev", help="stack to run (default: dev)")
    demo.add_argument("--check", action="store_true",
                      help="start, smoke-test, stop and exit 0 when everything answered; "
                      "exits 1 when a check failed or nothing could run here")
    demo.add_argument("--workdir", metavar="DIR",
                      help="keep the workloads' data and logs in DIR (default: a temporary "
                      "folder, removed on exit)")
    demo.set_defaults(func=_demo)
    serve = sub.add_parser(
        "serve",
        help="serve a registered MLflow model (MLflow scoring protocol, Prometheus metrics)",
        description="Serve an MLflow pyfunc model: MLflow's scoring protocol (/invocations, "
        "/ping, /health, /version), the Open Inference Protocol (/v2/...), /metrics and "
        "/feedback (delayed labels). "
        "Tracking server and credentials come from MLFLOW_TRACKING_URI, "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.",
    )
    serve.add_argument("--model-uri", required=True,
                       help="models:/name/version, models:/name@alias, runs:/... or a path")
    # One source for the defaults: ServeOptions (the runtime's own, importing nothing heavy).
    from pulumi_mlops.runtime.serve.server import ServeOptions

    d = ServeOptions(model_uri="")
    serve.add_argument("--host", default=d.host, help="bind address (default: %(default)s)")
    serve.add_argument("--port", type=int, default=d.port, help="port (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=d.workers,
                       help="worker processes (default: %(default)s)")
    limits = d.limits
    serve.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes,
                       help="larger request bodies get 413 (default: %(default)s bytes)")
    serve.add_argument("--max-concurrency", type=int, default=limits.max_concurrency,
                       help="scoring requests a worker holds at once; one more gets 503 with "
                       "Retry-After (default: %(default)s). Memory for request bodies is up to "
                       "workers x this x --max-body-bytes")
    serve.add_argument("--max-rows", type=int, default=limits.max_rows,
                       help="input rows per request; more get 413 (default: %(default)s)")
    serve.add_argument("--max-header-bytes", type=int, default=limits.max_header_bytes,
                       help="larger request heads get 431 (default: %(default)s bytes)")
    serve.add_argument("--header-timeout", type=float, default=limits.header_timeout,
                       help="seconds from a connection's opening or a request's first byte to "
                       "the end of its headers; slower gets 408 (default: %(default)s)")
    serve.add_argument("--body-timeout", type=float, default=limits.body_timeout,
                       help="seconds to receive a request's body; slower gets 408 "
                       "(default: %(default)s)")
    serve.add_argument("--keep-alive-timeout", type=int, default=limits.keep_alive_timeout,
                       help="seconds an idle keep-alive connection stays open "
                       "(default: %(default)s)")
    serve.add_argument("--prediction-timeout", type=float, default=0,
                       help="seconds a prediction may take before the client gets 504; 0 for "
                       "no bound (default: no bound)")
    serve.add_argument("--max-class-labels", type=int, default=limits.max_class_labels,
                       help="distinct predicted classes labelled in mlops_predictions_total; "
                       "further ones count as __other__ (default: %(default)s)")
    serve.add_argument("--feedback-window-ids", type=int, default=limits.feedback_window_ids,
                       help="recent answers (request ids) whose predictions a worker keeps for "
                       "POST /feedback, oldest dropped first; 0 keeps none "
                       "(default: %(default)s)")
    serve.add_argument("--feedback-window-rows", type=int, default=limits.feedback_window_rows,
                       help="predicted rows those answers may hold together, oldest dropped "
                       "first; 0 keeps none (default: %(default)s)")
    serve.add_argument("--drain-seconds", type=float, default=d.drain_seconds,
                       help="after SIGTERM keep serving this long with health 503 "
                       "(default: %(default)s)")
    serve.add_argument("--load-attempts", type=int, default=d.load_attempts,
                       help="model load attempts while the registry is unreachable "
                       "(default: %(default)s)")
    serve.add_argument("--max-model-bytes", type=int, default=d.max_model_bytes,
                       help="largest model download; over it the server exits 3 "
                       "(default: %(default)s bytes)")
    serve.add_argument("--fetch-deadline-seconds", type=float, default=d.fetch_deadline_seconds,
                       help="time the whole model fetch may take, retries included; past it "
                       "the server exits 3 (default: %(default)s)")
    serve.add_argument("--drift-window", type=int, default=d.drift_window,
                       help="recent input rows the drift gauges cover (default: %(default)s)")
    serve.add_argument("--model-alias", default=d.model_alias,
                       help="for a pinned models:/name/version, the alias it was resolved from "
                       "(reported by the model metadata and mlops_model_info)")
    serve.add_argument("--coerce", choices=("strict", "lossy"), default=d.coerce,
                       help="strict: a value MLflow would change in converting it to its "
                       "column's type (2.9 into an integer, \"7\" into a number, true into a "
                       "double, +-Inf into an integer) gets 400 naming the column; lossy: "
                       "convert it as MLflow does (default: %(default)s)")
    serve.add_argument("--prediction-log-rate", type=float, default=d.prediction_log_rate,
                       help="share of requests logged as JSON lines on stdout: request id, "
                       "model version, inputs, outputs, latency (default: %(default)s, off)")
    serve.add_argument("--exit-when-unhealthy-seconds", type=float,
                       default=d.exit_when_unhealthy_seconds,
                       help="once /health has passed, exit 4 when it has failed this long in a "
                       "row, for a restart policy that acts on exits only, such as Docker's "
                       "(default: %(default)s, never)")
    serve.add_argument("--alias-poll-seconds", type=float, default=d.alias_poll_seconds,
                       help="while the model or alias a models:/name@alias URI names does not "
                       "exist yet, stay up unready (/ping 200, /health and scoring 503) and "
                       "poll the registry this often (default: %(default)s)")
    serve.add_argument("--metrics-port", type=int, default=d.metrics_port,
                       help="serve GET /metrics on this port only (and not on --port), so a "
                       "scraper admitted to it cannot reach scoring (default: /metrics on "
                       "--port)")
    serve.set_defaults(func=_serve)
    schedule = sub.add_parser(
        "schedule",
        help="run a command on a cron schedule (the Docker target's CronJob)",
        description="Run COMMAND at every slot of a five-field cron expression (UTC), one run "
        "at a time: slots that pass during a run are skipped. Each run gets "
        "MLOPS_SCHEDULE_SLOT (the slot, ISO 8601). A heartbeat file is kept fresh; "
        "`mlops schedule --check` exits 1 when it is stale (a container healthcheck). "
        "GET /metrics on --host:--metrics-port serves the runs' outcomes for Prometheus "
        "(a run started by hand, e.g. with `docker exec`, is not the scheduler's and is not "
        "counted).",
        usage="mlops schedule --cron EXPR [options] -- COMMAND...  |  mlops schedule --check",
    )
    schedule.add_argument("--cron", help="five-field cron expression, e.g. '0 3 * * *'")
    schedule.add_argument("--timeout", type=float, default=None,
                          help="seconds a run may take before it is killed (default: none)")
    schedule.add_argument("--kill-grace", type=float, default=5.0,
                          help="seconds a run has to exit after SIGTERM (timeout or stop) "
                          "before its whole process group gets SIGKILL (default: %(default)s)")
    schedule.add_argument("--retries", type=int, default=0,
                          help="further attempts after a failed run (default: %(default)s)")
    schedule.add_argument("--starting-deadline", type=float, default=600.0,
                          help="skip a slot noticed more than this many seconds late "
                          "(default: %(default)s)")
    schedule.add_argument("--suspend", action="store_true",
                          help="run nothing; keep the schedule and the heartbeat")
    schedule.add_argument("--run-at-start", action="store_true",
                          help="also run the command once at start, keyed 'initial' (a restart "
                               "repeats that run, which registers nothing new)")
    schedule.add_argument("--heartbeat", default="/tmp/mlops-scheduler.heartbeat",
                          help="heartbeat file (default: %(default)s)")
    schedule.add_argument("--heartbeat-interval", type=float, default=30.0,
                          help="seconds between heartbeats (default: %(default)s)")
    from pulumi_mlops.runtime.scheduler import ScheduleOptions as _ScheduleOptions

    sd = _ScheduleOptions(cron="* * * * *", command=("true",))
    schedule.add_argument("--host", default=sd.metrics_host,
                          help="bind address of GET /metrics (default: %(default)s)")
    schedule.add_argument("--metrics-port", type=int, default=sd.metrics_port,
                          help="port of GET /metrics, the runs' Prometheus counters and "
                          "timestamps; 0 for none (default: %(default)s)")
    schedule.add_argument("--check", action="store_true",
                          help="exit 0 when the heartbeat is fresh, 1 when not; run nothing")
    schedule.add_argument("--max-age", type=float, default=120.0,
                          help="with --check: the oldest heartbeat that counts as fresh, in "
                          "seconds (default: %(default)s)")
    schedule.add_argument("run", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                          help="the command to run at every slot")
    schedule.set_defaults(func=_schedule)
    retrain = sub.add_parser(
        "retrain",
        help="train, evaluate, compare with the champion, register, promote if every gate passes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one retrain job from a mlops-retrain/v1 config file (the file "
        "RetrainSchedule renders): load and split the data, train, evaluate on the holdout, "
        "evaluate the current champion on the same holdout, apply the gates, register a new "
        "version with lineage tags and the drift profile, set the challenger alias on it and "
        "move the promote alias only when every gate passed. A run whose idempotency key "
        "(--slot, else MLOPS_SCHEDULE_SLOT: the Job's name on Kubernetes, the slot on Docker) "
        "already registered a version registers nothing; without a key it always runs. "
        "Registry from MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD; lineage from MLOPS_CODE_VERSION (or GIT_SHA) and "
        "MLOPS_IMAGE_DIGEST.",
        epilog="exit status:\n"
        "  0   promoted\n"
        "  10  registered as challenger, not promoted: a gate failed, or the champion moved\n"
        "      while this run ran (another run promoted first)\n"
        "  1   failed: a stage raised (data, training, evaluation, registry); no alias moved\n"
        "  2   bad config file (the message names the field), or a bad --slot\n"
        "  3   the config changed since this run's key ran; nothing registered",
    )
    retrain.add_argument("--config", required=True,
                         help="the job's config file (JSON or YAML)")
    retrain.add_argument("--slot", default=None,
                         help="the run's idempotency key (default: MLOPS_SCHEDULE_SLOT; none: "
                         "the run always runs)")
    retrain.set_defaults(func=_retrain)
    # Runtime commands that own their arguments (each module's `add_parser` sets its `run`).
    from pulumi_mlops.runtime import canary_check, promote

    promote.add_parser(sub)
    canary_check.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlops`` console script."""
    ns = _parser().parse_args(argv)
    try:
        code = int(ns.func(ns))
        sys.stdout.flush()
        return code
    except (ValidationError, ProgramConfigError, PlanFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`mlops diff a b | head`): no traceback, and none at exit when
        # Python flushes stdout again. 141 is what a shell reports for a process ended by
        # SIGPIPE; 1 would read as "plans differ" for `mlops diff --exit-code`.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
