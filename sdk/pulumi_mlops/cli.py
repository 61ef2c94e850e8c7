"""The ``mlops`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pulumi_mlops.errors import ValidationError

__all__ = ["main"]


def _render(ns: argparse.Namespace) -> int:
    from pulumi_mlops.render import record_program, write_render

    recording = record_program(Path(ns.cwd), ns.stack)
    written = write_render(recording, Path(ns.out_dir))
    print(f"rendered stack {ns.stack!r}: {len(recording.resources)} resources, "
          f"{len(written)} Kubernetes manifests -> {ns.out_dir}")
    return 0


def _demo(ns: argparse.Namespace) -> int:
    from pulumi_mlops.demo import run_demo

    return run_demo(Path(ns.cwd), ns.stack, check=ns.check)


def _serve(ns: argparse.Namespace) -> int:
    from pulumi_mlops.runtime.serve.server import ServeOptions, serve

    return serve(ServeOptions(
        model_uri=ns.model_uri, host=ns.host, port=ns.port, workers=ns.workers,
        max_body_bytes=ns.max_body_bytes, drain_seconds=ns.drain_seconds,
        load_attempts=ns.load_attempts, drift_window=ns.drift_window,
        prediction_log_rate=ns.prediction_log_rate,
    ))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description="pulumi-mlops command line")
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
    render.set_defaults(func=_render)
    demo = sub.add_parser(
        "demo",
        help="run the stack's workloads as local processes (nothing but Python)",
        description="Run the workloads a stack declares as local processes on 127.0.0.1, from "
        "the very commands the components render (paths remapped to a temp directory).",
    )
    demo.add_argument("--cwd", default=".", help="project directory with Pulumi.yaml")
    demo.add_argument("--stack", default="dev", help="stack to run (default: dev)")
    demo.add_argument("--check", action="store_true",
                      help="start, smoke-test, stop and exit 0 when everything answered")
    demo.set_defaults(func=_demo)
    serve = sub.add_parser(
        "serve",
        help="serve a registered MLflow model (MLflow scoring protocol, Prometheus metrics)",
        description="Serve an MLflow pyfunc model on /invocations with /ping, /health, "
        "/version and /metrics. Tracking server and credentials come from MLFLOW_TRACKING_URI, "
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
    serve.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                       help="larger request bodies get 413 (default: %(default)s bytes)")
    serve.add_argument("--drain-seconds", type=float, default=d.drain_seconds,
                       help="after SIGTERM keep serving this long with health 503 "
                       "(default: %(default)s)")
    serve.add_argument("--load-attempts", type=int, default=d.load_attempts,
                       help="model load attempts while the registry is unreachable "
                       "(default: %(default)s)")
    serve.add_argument("--drift-window", type=int, default=d.drift_window,
                       help="recent input rows the drift gauges cover (default: %(default)s)")
    serve.add_argument("--prediction-log-rate", type=float, default=d.prediction_log_rate,
                       help="share of requests logged as JSON lines on stdout: request id, "
                       "model version, inputs, outputs, latency (default: %(default)s, off)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlops`` console script."""
    from pulumi_mlops.render import ProgramConfigError

    ns = _parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except (ValidationError, ProgramConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
