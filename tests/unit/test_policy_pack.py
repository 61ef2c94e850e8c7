"""The CrossGuard pack in ``policy-pack/``, in its own virtual environment (its
``requirements.txt``), as the Pulumi CLI runs it: it starts its analyzer, lists one policy per
rule, and reports over gRPC what the rules find, exactly as `mlops plan --policy` does.

The environment is created once per requirements file and kept under the user's cache
(``$XDG_CACHE_HOME/pulumi-mlops/``); creating it needs the package index (pip).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pulumi_mlops as mlops
from pulumi_mlops.policy import (
    RULES,
    PolicyResource,
    evaluate,
    resources_from_recording,
    rule_named,
)
from pulumi_mlops.render import record
from tests.recording import RUNTIME_IMAGE

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "policy-pack"

# Runs in the pack's environment: starts the pack as the CLI does, reads the port it prints,
# asks the analyzer for its policies and has it analyze the stack given as JSON.
CLIENT = '''\
import json, subprocess, sys
import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

pack, resources = sys.argv[1], json.load(open(sys.argv[2]))
proc = subprocess.Popen([sys.executable, "-u", pack + "/__main__.py"], cwd=pack,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    port = int(proc.stdout.readline())
    stub = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    request = analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(
            type=r["type"], name=r["name"], urn=r["urn"], parent=r["parent"],
            properties=json_format.ParseDict(r["inputs"], struct_pb2.Struct()))
        for r in resources])
    response = stub.AnalyzeStack(request, timeout=60)
    level = analyzer_pb2.EnforcementLevel.Name
    print(json.dumps({
        "name": info.name,
        "policies": {p.name: level(p.enforcementLevel).lower() for p in info.policies},
        "diagnostics": [[d.policyName, level(d.enforcementLevel).lower(), d.message, d.urn]
                        for d in response.diagnostics],
    }))
finally:
    proc.kill()
    proc.wait()
'''


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pulumi-mlops"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # pytest-xdist workers share the cache: one creates the environment, the others wait.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def pack_python() -> Path:
    """The Python of the pack's own environment, made from its requirements.txt if needed."""
    requirements = (PACK / "requirements.txt").read_bytes()
    key = hashlib.sha256(requirements + sys.version.encode()).hexdigest()[:12]
    venv = _cache_root() / f"policy-pack-venv-{key}"
    python = venv / "bin" / "python"
    with _locked(_cache_root() / f"policy-pack-venv-{key}.lock"):
        if not (venv / ".complete").is_file():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-"
                            "version-check", "-r", str(PACK / "requirements.txt")],
                           check=True, timeout=600)
            (venv / ".complete").write_text("")
    return python


@pytest.mark.slow
def test_the_pack_starts_its_analyzer_in_its_own_environment(pack_python: Path) -> None:
    pack = subprocess.Popen([str(pack_python), "-u", str(PACK / "__main__.py")], cwd=PACK,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pack.stdout is not None
        port = pack.stdout.readline().strip()
        # Constructing the PolicyPack serves forever: it must still be running.
        with pytest.raises(subprocess.TimeoutExpired):
            pack.wait(timeout=2)
    finally:
        pack.kill()
        _out, err = pack.communicate(timeout=10)
    assert port.isdigit() and int(port) > 0, err


def _stack() -> list[dict[str, Any]]:
    """A prod stack that breaks several rules: a heavy canary, an ungated retrain schedule,
    an unresolved alias, images by tag."""
    target = mlops.KubernetesTarget(namespace="ml", gateway=mlops.GatewayRef(
        name="public", namespace="gateways", section_name="https"))

    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=target)
        mlops.ModelService("fraud", target=target, registry=registry, image=RUNTIME_IMAGE,
                           model_uri="models:/fraud@champion", hostname="fraud.example.com",
                           rollout=mlops.Rollout.canary("models:/fraud/4", 40))
        mlops.RetrainSchedule("nightly", target=target, registry=registry, image=RUNTIME_IMAGE,
                              schedule="0 3 * * *", model_name="fraud",
                              dataset="sklearn:breast_cancer",
                              estimator="sklearn.linear_model.LogisticRegression")

    return [{"type": r.type, "name": r.name, "urn": r.urn, "parent": r.parent,
             "inputs": r.inputs} for r in resources_from_recording(record(program, stack="prod"))]


@pytest.mark.slow
def test_the_pack_reports_what_the_rules_find(
    pack_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resources = _stack()
    (tmp_path / "stack.json").write_text(json.dumps(resources))
    (tmp_path / "client.py").write_text(CLIENT)

    run = subprocess.run([str(pack_python), str(tmp_path / "client.py"), str(PACK),
                          str(tmp_path / "stack.json")],
                         capture_output=True, text=True, timeout=120, check=False)

    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["name"] == "pulumi-mlops"
    assert answer["policies"] == {r.name: str(r.level) for r in RULES}
    expected = evaluate([PolicyResource(r["type"], r["name"], r["urn"], r["inputs"], r["parent"])
                         for r in resources])
    assert {v.policy for v in expected} >= {"canary-weight-cap", "retrain-gated",
                                            "model-version-pinned", "image-digest"}
    # pulumi-policy puts the policy's description on the line before each message.
    assert sorted(map(tuple, answer["diagnostics"])) == sorted(
        (v.policy, str(v.level), f"{rule_named(v.policy).description}\n{v.message}", v.urn)
        for v in expected)
