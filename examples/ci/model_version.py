"""Print the model version a ModelService's stable track deploys in an `mlops plan` file.

    python model_version.py PLAN SERVICE

Prints nothing when the plan has no such service or the version is not pinned (an alias the
registry could not resolve): the callers treat that as "no version to compare".
"""

from __future__ import annotations

import json
import sys


def stable_version(plan: dict[str, object], service: str) -> str:
    """The version the stable track of ``service`` deploys in ``plan``, or ``""``."""
    models = plan.get("models")
    if not isinstance(models, dict):
        return ""
    tracks = models.get(f"mlops:index:ModelService::{service}")
    if not isinstance(tracks, dict) or not isinstance(tracks.get("stable"), dict):
        return ""
    return str(tracks["stable"].get("version") or "")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: model_version.py PLAN SERVICE")
    try:
        with open(sys.argv[1], encoding="utf-8") as file:
            document = json.load(file)
    except FileNotFoundError:
        document = {}
    print(stable_version(document, sys.argv[2]))
