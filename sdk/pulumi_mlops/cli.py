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
