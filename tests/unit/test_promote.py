"""`mlops promote`'s pure parts: arguments, registry identity, per-side credentials, the
idempotency lookup, the tags a copy carries, approvals (the registries: tests/e2e)."""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from typing import Any

import pytest

from pulumi_mlops.runtime import promote
from pulumi_mlops.runtime.environ import environment
from pulumi_mlops.runtime.promote import (
    Approval,
    Origin,
    PromoteError,
    SourceModel,
    approval_problem,
    find_promoted_version,
    lineage_tags,
    parse_source_model,
    registry_identity,
    resolve_registry,
    side_variables,
)

ORIGIN = Origin("https://mlflow.staging.example.com", "fraud", "7", "r1")


@pytest.mark.parametrize(("value", "expected"), [
    ("fraud@champion", SourceModel("fraud", alias="champion")),
    ("fraud/7", SourceModel("fraud", version="7")),
    ("models:/fraud@canary-2", SourceModel("fraud", alias="canary-2")),
    ("team@fraud@champion", SourceModel("team@fraud", alias="champion")),
])
def test_model_is_name_with_alias_or_version(value: str, expected: SourceModel) -> None:
    assert parse_source_model(value) == expected


@pytest.mark.parametrize(("value", "reason"), [
    ("fraud", "names neither a version nor an alias"),
    ("fraud/latest", "is not a number"),
    ("fraud@", "is not 1 to 255"),
    ("a:b@champion", "contains ':'"),
])
def test_malformed_model_is_a_usage_error(value: str, reason: str) -> None:
    with pytest.raises(PromoteError, match="must be NAME@ALIAS or NAME/VERSION") as caught:
        parse_source_model(value)
    assert reason in str(caught.value)
    assert caught.value.exit_code == promote.EXIT_USAGE


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlops")
    promote.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["promote", *argv])


def test_add_parser_wires_the_subcommand_with_defaults() -> None:
    ns = _parse("--from", "https://a", "--to", "https://b", "--model", "fraud@champion")
    assert ns.func is promote.run
    assert (ns.source, ns.dest, ns.model) == ("https://a", "https://b", "fraud@champion")
    assert ns.to_alias is None and ns.protected_alias is None
    assert ns.approved_by is None and ns.reason is None
    assert ns.experiment == promote.DEFAULT_EXPERIMENT


def test_protected_alias_repeats() -> None:
    ns = _parse("--from", "https://a", "--to", "https://b", "--model", "m/1",
                "--protected-alias", "champion", "--protected-alias", "prod")
    assert ns.protected_alias == ["champion", "prod"]


@pytest.mark.parametrize("flag", ["--password", "--from-password", "--to-password"])
def test_no_password_argument_exists(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _parse("--from", "https://a", "--to", "https://b", "--model", "m/1", flag, "x")
    assert caught.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_required_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        promote.main(["--from", "https://a"])
    assert "--to, --model" in capsys.readouterr().err


def _run(*argv: str) -> argparse.Namespace:
    return _parse("--from", "https://a.example.com", "--to", "https://b.example.com", *argv)


def test_to_alias_defaults_to_the_source_alias_then_champion() -> None:
    environ: dict[str, str] = {}
    assert promote._request(_run("--model", "m@canary"), environ).to_alias == "canary"
    assert promote._request(_run("--model", "m/3"), environ).to_alias == "champion"
    assert promote._request(_run("--model", "m/3", "--to-alias", "prod"),
                            environ).to_alias == "prod"


def test_bad_to_alias_is_a_usage_error() -> None:
    with pytest.raises(PromoteError, match="--to-alias 'a b'") as caught:
        promote._request(_run("--model", "m/3", "--to-alias", "a b"), {})
    assert caught.value.exit_code == promote.EXIT_USAGE


def test_same_registry_on_both_sides_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = promote.main(["--from", "https://u:p@Mlflow.example.com/", "--to",
                         "https://mlflow.example.com", "--model", "m@champion"])
    assert code == promote.EXIT_USAGE
    err = capsys.readouterr().err
    assert "name the same registry (https://mlflow.example.com)" in err
    assert "u:p" not in err


def test_request_takes_credentials_per_side_from_the_environment() -> None:
    environ = {"MLOPS_FROM_USERNAME": "ci", "MLOPS_FROM_PASSWORD": "s3",
               "MLOPS_TO_TOKEN": "tok", "MLFLOW_TRACKING_PASSWORD": "process"}
    request = promote._request(_run("--model", "m@champion", "--approved-by", " alice ",
                                    "--reason", "CHG-1"), environ)
    assert request.source_env["MLFLOW_TRACKING_USERNAME"] == "ci"
    assert request.source_env["MLFLOW_TRACKING_PASSWORD"] == "s3"
    assert request.source_env["MLFLOW_TRACKING_TOKEN"] is None
    assert request.dest_env["MLFLOW_TRACKING_PASSWORD"] is None
    assert request.dest_env["MLFLOW_TRACKING_TOKEN"] == "tok"
    assert request.approval == Approval("alice", "CHG-1")
    assert request.protected == promote.DEFAULT_PROTECTED_ALIASES


def test_side_variables_cover_every_side_variable() -> None:
    variables = side_variables("TO", {f"MLOPS_TO_{x}": x.lower() for x in
                                      promote.SIDE_VARIABLES})
    assert variables == {f"MLFLOW_TRACKING_{x}": x.lower() for x in promote.SIDE_VARIABLES}


def test_side_environment_sets_unsets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "process-user")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    with environment({"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_TOKEN": "t"}):
        assert "MLFLOW_TRACKING_USERNAME" not in os.environ
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == "t"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "process-user"
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ


@pytest.mark.parametrize(("uri", "identity"), [
    ("https://mlflow.example.com/", "https://mlflow.example.com"),
    ("HTTPS://user:secret@MLflow.Example.com:8443/mlflow/?x=1#y",
     "https://mlflow.example.com:8443/mlflow"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_registry_identity_drops_credentials_and_spelling(uri: str, identity: str) -> None:
    assert registry_identity(uri) == identity


def test_uri_is_taken_as_is_without_the_pulumi_cli() -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no command for a URI")

    assert resolve_registry("https://mlflow.example.com", "--to", which=refuse,
                            run_command=refuse) == "https://mlflow.example.com"


def test_stack_name_without_the_pulumi_cli_says_to_give_a_uri() -> None:
    with pytest.raises(PromoteError) as caught:
        resolve_registry("prod", "--to", which=lambda _: None)
    message = str(caught.value)
    assert caught.value.exit_code == promote.EXIT_USAGE
    assert "--to 'prod' is not a tracking URI" in message
    assert "`pulumi stack output registry_url --stack prod`" in message
    assert "not on PATH" in message and "--to https://" in message


def test_stack_name_is_resolved_with_the_pulumi_cli() -> None:
    seen: list[list[str]] = []

    def pulumi(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        return subprocess.CompletedProcess(command, 0, "https://mlflow.prod.example.com\n", "")

    assert resolve_registry("acme/mlops/prod", "--to", which=lambda _: "/bin/pulumi",
                            run_command=pulumi) == "https://mlflow.prod.example.com"
    assert seen == [["pulumi", "stack", "output", "registry_url", "--stack", "acme/mlops/prod"]]


def test_stack_without_the_output_is_a_usage_error() -> None:
    def pulumi(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 255, "", "error: no stack named 'qa'")

    with pytest.raises(PromoteError, match="no stack named 'qa'") as caught:
        resolve_registry("qa", "--from", which=lambda _: "/bin/pulumi", run_command=pulumi)
    assert caught.value.exit_code == promote.EXIT_USAGE


def test_finds_the_copy_of_the_source_version() -> None:
    versions = [("1", {}), ("2", ORIGIN.tags()), ("3", {**ORIGIN.tags(), "x": "y"})]
    assert find_promoted_version(versions, ORIGIN) == "2"


@pytest.mark.parametrize("other", [
    Origin("https://mlflow.dev.example.com", "fraud", "7", "r1"),
    Origin(ORIGIN.registry, "fraud-v2", "7", "r1"),
    Origin(ORIGIN.registry, "fraud", "17", "r1"),
])
def test_a_copy_of_another_source_version_does_not_count(other: Origin) -> None:
    assert find_promoted_version([("4", other.tags())], ORIGIN) is None


def test_nothing_promoted_yet() -> None:
    assert find_promoted_version([], ORIGIN) is None
    assert find_promoted_version([("1", {"mlops.run_id": "r1"})], ORIGIN) is None


def test_racing_copies_resolve_to_the_lowest_version() -> None:
    assert find_promoted_version([("10", ORIGIN.tags()), ("9", ORIGIN.tags())], ORIGIN) == "9"


def test_lineage_tags_drop_the_sources_own_promotion_and_approval() -> None:
    tags = {"mlops.dataset.sha256": "ab", "mlops.run_id": "r0", "team": "risk",
            "mlops.promoted_from.registry": "https://dev", "mlops.approval.by": "carol"}
    assert lineage_tags(tags) == {"mlops.dataset.sha256": "ab", "mlops.run_id": "r0",
                                  "team": "risk"}


@pytest.mark.parametrize(("by", "reason", "missing"), [
    (None, None, "--approved-by and --reason"),
    ("alice", None, "give --reason"),
    ("  ", "CHG-1", "give --approved-by ("),
])
def test_protected_alias_needs_who_and_why(by: str | None, reason: str | None,
                                           missing: str) -> None:
    problem = approval_problem("champion", ("champion",), by, reason)
    assert problem is not None and missing in problem
    assert "`champion` is protected" in problem and "Nothing was changed" in problem


def test_unprotected_alias_or_full_approval_goes_ahead() -> None:
    assert approval_problem("canary", ("champion",), None, None) is None
    assert approval_problem("champion", ("champion",), "alice", "CHG-1") is None
    assert approval_problem("champion", ("prod",), None, None) is None


def test_approval_tags_record_who_when_why_in_utc() -> None:
    at = datetime.datetime(2026, 3, 1, 12, 0, 5, tzinfo=datetime.timezone(
        datetime.timedelta(hours=2)))
    assert Approval("alice", "CHG-1").tags("champion", at) == {
        "mlops.approval.by": "alice", "mlops.approval.reason": "CHG-1",
        "mlops.approval.at": "2026-03-01T10:00:05+00:00", "mlops.approval.alias": "champion"}


def test_building_the_parser_imports_neither_mlflow_nor_pandas() -> None:
    # `mlops` builds every subcommand's parser on each call, `--help` included.
    code = ("import sys; from pulumi_mlops.runtime import promote; "
            "print(sorted(m for m in ('mlflow', 'pandas', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"
