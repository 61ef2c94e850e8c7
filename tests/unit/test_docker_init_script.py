"""The Docker init container's script writes every config file byte for byte (run by a real
`sh`), and the policy rules read the same files back from the recorded inputs."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pulumi_mlops.plans.workload import ConfigFile, SecretRef, Workload
from pulumi_mlops.policy.resources import docker_init_files
from pulumi_mlops.targets.docker._containers import RUN_AS_USER, init_script

# Text a config file may hold: quotes, newlines, shell syntax, non-ASCII; no NUL (no argument
# or environment variable can carry one).
_content = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
                   max_size=300)


@settings(max_examples=40, deadline=None)
@given(files=st.lists(st.tuples(_content, st.booleans()), min_size=1, max_size=4))
def test_the_script_writes_each_file_as_declared_and_the_policy_reads_it_back(
    files: list[tuple[str, bool]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _check(Path(directory), files)


def _check(root: Path, files: list[tuple[str, bool]]) -> None:
    declared = tuple(
        ConfigFile(str(root / f"f{i}.txt"), SecretRef(f"k{i}") if secret else content)
        for i, (content, secret) in enumerate(files))
    workload = Workload(name="w", image="img:1", command=("true",), env={}, port=None,
                        health=None, files=declared)
    script = init_script(workload)
    # The secret files' contents, as the init container's environment carries them.
    env = {f"MLOPS_FILE_{i}": content for i, (content, secret) in enumerate(files) if secret}
    # Each file is handed to the workloads' user (run here without the root that needs).
    chowns = [f"\nchown {RUN_AS_USER}:{RUN_AS_USER} {f.path}" for f in declared]
    runnable = script
    for chown in chowns:
        assert runnable.count(chown) == 1
        runnable = runnable.replace(chown, "")
    subprocess.run(["sh", "-c", runnable], env={**os.environ, **env}, check=True, timeout=30)
    for f, (content, _) in zip(declared, files, strict=True):
        assert Path(f.path).read_bytes() == content.encode()
    inputs = {"entrypoints": ["sh", "-c", script],
              "envs": [f"{k}={v}" for k, v in env.items()]}
    assert docker_init_files(inputs) == {f.path: c for f, (c, _) in zip(declared, files,
                                                                         strict=True)}
    # A secret file's content comes from the environment (the script, plain in the state,
    # holds only its variable's name).
    for i, (_, secret) in enumerate(files):
        assert (f'printf %s "$MLOPS_FILE_{i}" > ' in script) is secret
