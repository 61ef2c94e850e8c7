"""The local runner's remapping of container paths, bind address and service names."""

from __future__ import annotations

from pathlib import Path

from pulumi_mlops.local import localize, run_job
from pulumi_mlops.plans.workload import ConfigFile, ExecCheck, HttpCheck, Mount, SecretRef, Workload

WORKLOAD = Workload(
    name="app",
    image="img:1",
    command=("app", "--host", "0.0.0.0", "--data", "/data/db", "--tmp", "/tmpx",
             "--db", "postgresql://u@db.ns.svc.cluster.local:5432/x"),
    env={"HOME": "/tmp", "TOKEN": SecretRef("token"), "URI": "sqlite:////data/app.db"},
    port=8000,
    health=HttpCheck("/health"),
    files=(ConfigFile("/etc/app/app.ini", SecretRef("ini")),),
    mounts=(Mount("data", "/data", "data", "1Gi"), Mount("tmp", "/tmp", "scratch", "1Gi")),
)


def test_paths_bind_address_and_hosts_are_remapped(tmp_path: Path) -> None:
    cmd = localize(WORKLOAD, {"token": "t0k", "ini": "x=/data/y"}, tmp_path,
                   hosts={"db.ns.svc.cluster.local:5432": "127.0.0.1:6543"})
    assert cmd.argv == ("app", "--host", "127.0.0.1", "--data", f"{tmp_path}/data/db",
                        # '/tmpx' is not under the '/tmp' mount and must stay as it is.
                        "--tmp", "/tmpx", "--db", "postgresql://u@127.0.0.1:6543/x")
    assert cmd.env["HOME"] == f"{tmp_path}/tmp"
    assert cmd.env["TOKEN"] == "t0k"
    assert cmd.env["URI"] == f"sqlite:///{tmp_path}/data/app.db"
    assert cmd.files == {tmp_path / "config-0" / "app.ini": f"x={tmp_path}/data/y"}
    assert set(cmd.directories) == {tmp_path / "data", tmp_path / "tmp"}


def test_a_remapped_path_is_not_rewritten_twice(tmp_path: Path) -> None:
    # The local root itself lives under /tmp, which is also a container mount.
    root = Path("/tmp/run")
    cmd = localize(WORKLOAD, {"token": "", "ini": ""}, root)
    assert cmd.env["HOME"] == "/tmp/run/tmp"
    assert cmd.argv[4] == "/tmp/run/data/db"


def test_a_job_runs_once_with_its_files_and_paths_remapped_and_reports_its_exit_code(
    tmp_path: Path,
) -> None:
    job = Workload(
        name="job", image="img:1",
        command=("python", "-c", "import os, sys; print(open('/etc/job/job.json').read(), "
                 "os.environ['HOME'], os.environ['TOKEN'], os.environ['SLOT']); sys.exit(10)"),
        env={"HOME": "/tmp", "TOKEN": SecretRef("token")}, port=0, health=ExecCheck(("true",)),
        files=(ConfigFile("/etc/job/job.json", "{}"),),
        mounts=(Mount("tmp", "/tmp", "scratch", "1Gi"),), startup_seconds=60,
    )

    result = run_job(job, {"token": "t0k"}, tmp_path / "run", env={"SLOT": "s1"})

    assert result.returncode == 10
    assert result.stdout == f"{{}} {tmp_path}/run/tmp t0k s1\n"
    assert (tmp_path / "run" / "job.log").read_text() == result.stdout
