"""The retrain job's pure parts: gates, config errors, dataset loading, split, slot, metrics."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pulumi_mlops.cli import main
from pulumi_mlops.runtime.retrain.config import Gates, RetrainConfig
from pulumi_mlops.runtime.retrain.config_file import ConfigFileError, config_digest, load_job_config
from pulumi_mlops.runtime.retrain.data import DatasetError, infer_task, load_dataset, split
from pulumi_mlops.runtime.retrain.gates import HIGHER_IS_BETTER, apply_gates
from pulumi_mlops.runtime.retrain.job import EXIT_BAD_CONFIG, run, run_key
from pulumi_mlops.runtime.retrain.registry import (
    ModelLoadError,
    load_sklearn_model,
    trusted_types,
)
from pulumi_mlops.runtime.retrain.train import evaluate, feature_pipeline, train

METRICS = sorted(HIGHER_IS_BETTER)
TREE = "sklearn.tree.DecisionTreeClassifier"
values = st.floats(min_value=-10, max_value=10, allow_nan=False)
thresholds = st.floats(min_value=0, max_value=5, allow_nan=False)


# --------------------------------------------------------------------------- gates


def test_no_gates_give_no_results() -> None:
    assert apply_gates({"roc_auc": 0.9}, {"roc_auc": 0.95}, Gates()) == []


def test_absolute_gates_compare_with_the_threshold() -> None:
    results = apply_gates({"roc_auc": 0.85, "log_loss": 0.2},
                          None, Gates(min={"roc_auc": 0.9}, max={"log_loss": 0.3}))
    assert [(r.gate, r.metric, r.passed) for r in results] == [
        ("min", "roc_auc", False), ("max", "log_loss", True)]


def test_lower_is_better_metrics_improve_by_decreasing() -> None:
    gates = Gates(min_improvement={"log_loss": 0.01, "roc_auc": 0.0})
    results = {r.metric: r for r in apply_gates({"log_loss": 0.20, "roc_auc": 0.95},
                                                {"log_loss": 0.25, "roc_auc": 0.96}, gates)}
    assert results["log_loss"].passed
    assert not results["roc_auc"].passed


def test_max_regression_allows_a_bounded_worsening() -> None:
    gates = Gates(max_regression={"rmse": 0.5})
    assert apply_gates({"rmse": 10.4}, {"rmse": 10.0}, gates)[0].passed
    assert not apply_gates({"rmse": 10.6}, {"rmse": 10.0}, gates)[0].passed


def test_relative_gates_pass_without_a_champion_and_fail_when_it_lacks_the_metric() -> None:
    gates = Gates(min_improvement={"roc_auc": 0.0}, max_regression={"f1": 0.0})
    assert all(r.passed for r in apply_gates({"roc_auc": 0.5, "f1": 0.1}, None, gates))
    results = apply_gates({"roc_auc": 0.5, "f1": 0.1}, {"f1": 0.1}, gates)
    assert [(r.metric, r.passed) for r in results] == [("roc_auc", False), ("f1", True)]


def test_a_metric_that_was_not_computed_fails_its_gate() -> None:
    gates = Gates(min={"roc_auc": 0.0}, max={"log_loss": 1.0})
    results = apply_gates({"log_loss": math.nan}, None, gates)
    assert [r.passed for r in results] == [False, False]
    assert "not computed" in results[0].reason


@given(metric=st.sampled_from(METRICS), value=values, threshold=values)
def test_min_and_max_gates_are_the_comparisons(metric: str, value: float,
                                               threshold: float) -> None:
    [low] = apply_gates({metric: value}, None, Gates(min={metric: threshold}))
    [high] = apply_gates({metric: value}, None, Gates(max={metric: threshold}))
    assert low.passed == (value >= threshold)
    assert high.passed == (value <= threshold)


@given(metric=st.sampled_from(METRICS), new=values, champion=values, threshold=thresholds)
def test_improvement_and_regression_follow_the_metric_direction(
        metric: str, new: float, champion: float, threshold: float) -> None:
    gates = Gates(min_improvement={metric: threshold}, max_regression={metric: threshold})
    improve, regress = apply_gates({metric: new}, {metric: champion}, gates)
    gain = (new - champion) if HIGHER_IS_BETTER[metric] else (champion - new)
    assert improve.passed == (gain >= threshold)
    assert regress.passed == (-gain <= threshold)


@given(metric=st.sampled_from(METRICS), new=values, champion=values, step=thresholds,
       min_t=values, max_t=values, threshold=thresholds)
def test_a_better_new_metric_never_fails_a_gate_the_worse_one_passed(
        metric: str, new: float, champion: float, step: float, min_t: float, max_t: float,
        threshold: float) -> None:
    direction = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    better = new + direction * step
    relative = Gates(min_improvement={metric: threshold}, max_regression={metric: threshold})
    worse_results = apply_gates({metric: new}, {metric: champion}, relative)
    better_results = apply_gates({metric: better}, {metric: champion}, relative)
    for w, b in zip(worse_results, better_results, strict=True):
        assert b.passed or not w.passed


@given(st.dictionaries(st.sampled_from(METRICS), values, min_size=1))
def test_without_a_champion_only_absolute_gates_can_fail(metrics: dict[str, float]) -> None:
    gates = Gates(min_improvement=dict.fromkeys(metrics, 1.0),
                  max_regression=dict.fromkeys(metrics, 0.0))
    assert all(r.passed for r in apply_gates(metrics, None, gates))


# --------------------------------------------------------------------------- config


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "retrain.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_a_valid_config_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, {"model_name": "m", "dataset": "sklearn:iris",
                             "estimator": TREE})
    assert load_job_config(path).model_name == "m"


@pytest.mark.parametrize(("data", "names"), [
    ({"model_name": "m", "dataset": "sklearn:iris", "estimator": TREE,
      "gates": {"min": {"roc_auc": "high"}}}, "`gates.min.roc_auc`"),
    ({"model_name": "m", "dataset": "sklearn:iris", "estimator": TREE,
      "holdout": 0.3}, "`holdout`"),
    ({"model_name": "m", "dataset": "data.txt", "estimator": TREE}, "`dataset`"),
    ({"model_name": "m", "dataset": "sklearn:iris"}, "`estimator` or `trainer`"),
    ("{not json", "not JSON"),
])
def test_a_bad_config_names_the_field(tmp_path: Path, data: object, names: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        load_job_config(_write(tmp_path, data))
    assert names in str(info.value)


VALID: dict[str, Any] = {
    "model_name": "fraud", "dataset": "sklearn:breast_cancer",
    "estimator": "sklearn.ensemble.GradientBoostingClassifier", "params": {"n_estimators": 200},
    "gates": {"min": {"roc_auc": 0.9}, "min_improvement": {"roc_auc": 0.0}},
    "schedule": "0 3 * * *",
}


@pytest.mark.parametrize("name", ["retrain.yaml", "retrain.yml", "retrain.conf"])
def test_a_yaml_config_loads_to_the_same_config_as_its_json(tmp_path: Path, name: str) -> None:
    as_json = _write(tmp_path, VALID)
    as_yaml = tmp_path / name
    as_yaml.write_text(yaml.safe_dump(VALID, sort_keys=False))

    assert not as_yaml.read_text().lstrip().startswith("{")
    assert load_job_config(as_yaml) == load_job_config(as_json)
    assert config_digest(load_job_config(as_yaml)) == config_digest(load_job_config(as_json))


def test_a_json_document_named_yaml_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "retrain.yaml"
    path.write_text(json.dumps(VALID))

    assert load_job_config(path).params == {"n_estimators": 200}


YAML_BASE = ("model_name: m\ndataset: sklearn:iris\n"
             "estimator: sklearn.tree.DecisionTreeClassifier\n")


@pytest.mark.parametrize(("text", "names"), [
    (YAML_BASE + "gates:\n  min:\n    roc_auc: high\n", "`gates.min.roc_auc`"),
    (YAML_BASE + "holdout: 0.3\n", "`holdout`"),
    (YAML_BASE + "seed: [1, 2]\n", "`seed`"),
    (YAML_BASE + "gates:\n  min:\n    roc_auc: 0.9\n   max: {}\n", "not valid YAML"),
    (YAML_BASE + "params: {C: 1\n", "line 5"),
    (YAML_BASE + "model_name: other\n", "key 'model_name' is given twice"),
    ("- model_name: m\n", "valid dictionary"),
    ("", "is empty"),
])
def test_a_bad_yaml_config_names_the_field(tmp_path: Path, text: str, names: str) -> None:
    path = tmp_path / "retrain.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        load_job_config(path)
    assert names in str(info.value)


def test_a_key_given_twice_in_json_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"model_name": "m", "model_name": "n", "dataset": "sklearn:iris",'
                            ' "estimator": "sklearn.tree.DecisionTreeClassifier"}')
    with pytest.raises(ConfigFileError, match="'model_name' is given twice"):
        load_job_config(path)


def test_the_config_digest_changes_with_any_value_and_not_with_the_layout() -> None:
    base = RetrainConfig.model_validate(VALID)
    same = RetrainConfig.model_validate(dict(reversed(list(VALID.items()))))
    changed = RetrainConfig.model_validate({**VALID, "params": {"n_estimators": 201}})
    assert config_digest(base) == config_digest(same)
    assert config_digest(base) != config_digest(changed)
    assert len(config_digest(base)) == 64


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_job_config(tmp_path / "nope.json")


def test_the_cli_exits_with_the_bad_config_code_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"model_name": "m", "dataset": "sklearn:iris",
                             "estimator": TREE, "seed": "zero"})
    assert main(["retrain", "--config", str(path)]) == EXIT_BAD_CONFIG
    assert "`seed`" in capsys.readouterr().err


def test_the_cli_exits_with_the_bad_config_code_naming_the_field_of_a_yaml_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "retrain.yaml"
    path.write_text(YAML_BASE + "gates:\n  min:\n    roc_auc: high\n")
    assert main(["retrain", "--config", str(path)]) == EXIT_BAD_CONFIG
    assert "`gates.min.roc_auc`" in capsys.readouterr().err


def test_the_cli_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["retrain", "--help"])
    out = capsys.readouterr().out
    for line in ("0   promoted", "10  registered as challenger", "1   failed", "2   bad config",
                 "3   the config changed"):
        assert line in out
    assert "--slot" in out


def test_the_cli_passes_slot_as_the_key_and_refuses_a_bad_one_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi_mlops.runtime.retrain.job as job

    path = _write(tmp_path, {"model_name": "m", "dataset": "sklearn:iris",
                             "estimator": TREE})
    seen: list[str | None] = []
    monkeypatch.setattr(job, "find_slot_version", lambda name, key: seen.append(key))
    monkeypatch.setattr(job, "load_dataset", lambda *a: (_ for _ in ()).throw(
        RuntimeError("stop here")))
    assert main(["retrain", "--config", str(path), "--slot", "manual-1"]) == job.EXIT_FAILED
    assert seen == ["manual-1"]
    assert main(["retrain", "--config", str(path), "--slot", "not a key!"]) == EXIT_BAD_CONFIG
    assert seen == ["manual-1"]


def test_the_job_imports_without_pulumi_or_mlflow() -> None:
    code = ("import sys; import pulumi_mlops.runtime.retrain.job; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- data


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": range(40), "b": [i % 7 * 0.5 for i in range(40)],
                         "y": [i % 2 for i in range(40)]})


def test_a_bundled_dataset_has_a_stable_content_hash() -> None:
    first, second = load_dataset("sklearn:iris"), load_dataset("sklearn:iris")
    assert first.sha256 == second.sha256
    assert len(first.sha256) == 64
    assert first.rows == 150
    assert load_dataset("sklearn:wine").sha256 != first.sha256


@pytest.mark.parametrize("suffix", ["csv", "csv.gz", "parquet"])
def test_a_file_dataset_is_hashed_by_its_bytes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data.{suffix}"
    if suffix == "parquet":
        _frame().to_parquet(path)
    elif suffix == "csv.gz":
        path.write_bytes(gzip.compress(_frame().to_csv(index=False).encode()))
    else:
        _frame().to_csv(path, index=False)
    dataset = load_dataset(str(path), "y")
    assert dataset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dataset.rows == 40
    assert list(dataset.x.columns) == ["a", "b"]
    assert dataset.y.name == "y"


@pytest.mark.parametrize(("content", "match"), [
    (None, "cannot read"),
    ("a,b,y\n1,2,0\n1,2,3,4,5\n", "malformed"),
    ("a,b,label\n1,2,0\n", "no target column 'y'"),
    ("a,b,y\n", "no rows"),
    ("a,b,y\n1,2,\n1,2,1\n", "missing values"),
])
def test_a_bad_dataset_is_a_dataset_error(tmp_path: Path, content: str | None,
                                          match: str) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_dataset(str(path), "y")


def test_the_split_is_deterministic_and_seeded() -> None:
    dataset = load_dataset("sklearn:breast_cancer")
    one = split(dataset, 0.2, 7, "classification")
    two = split(dataset, 0.2, 7, "classification")
    other = split(dataset, 0.2, 8, "classification")
    assert list(one.x_holdout.index) == list(two.x_holdout.index)
    assert list(one.x_holdout.index) != list(other.x_holdout.index)
    assert len(one.x_holdout) == 114
    # Stratified: the holdout keeps the class balance.
    assert abs(one.y_holdout.mean() - dataset.y.mean()) < 0.01


def test_the_task_is_inferred_from_the_label() -> None:
    assert infer_task(load_dataset("sklearn:breast_cancer").y) == "classification"
    assert infer_task(load_dataset("sklearn:diabetes").y) == "regression"
    assert infer_task(pd.Series(["a", "b"])) == "classification"
    assert infer_task(pd.Series(range(100))) == "regression"


def test_regression_and_multiclass_metrics() -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    data = split(load_dataset("sklearn:diabetes"), 0.2, 0, "regression")
    model = LinearRegression().fit(data.x_train, data.y_train)
    metrics = evaluate(model, data.x_holdout, data.y_holdout, "regression")
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["rmse"] >= metrics["mae"] > 0
    data = split(load_dataset("sklearn:iris"), 0.3, 0, "classification")
    model = LogisticRegression(max_iter=1000).fit(data.x_train, data.y_train)
    metrics = evaluate(model, data.x_holdout, data.y_holdout, "classification")
    assert set(metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert metrics["roc_auc"] > 0.9


# --------------------------------------------------------------------------- key


def test_the_run_key_is_given_never_taken_from_the_clock() -> None:
    assert run_key(None, {}) is None
    assert run_key(None, {"MLOPS_SCHEDULE_SLOT": ""}) is None
    assert run_key(None, {"MLOPS_SCHEDULE_SLOT": "fraud-nightly-retrain-29390580"}) == (
        "fraud-nightly-retrain-29390580")
    assert run_key("2026-11-24T03:00Z", {"MLOPS_SCHEDULE_SLOT": "other"}) == "2026-11-24T03:00Z"


@pytest.mark.parametrize("key", ["it's", "a b", "-leading-dash", "x" * 254, "slot/1"])
def test_a_run_key_that_is_not_a_key_names_the_variable(key: str) -> None:
    with pytest.raises(ValueError, match="`MLOPS_SCHEDULE_SLOT` must be") as info:
        run_key(None, {"MLOPS_SCHEDULE_SLOT": key})
    assert repr(key) in str(info.value)


def test_a_bad_run_key_exits_with_the_bad_input_code_before_any_work(
        capsys: pytest.CaptureFixture[str]) -> None:
    config = RetrainConfig.model_validate(VALID)
    # No registry is configured: reaching it would fail with another code.
    assert run(config, environ={"MLOPS_SCHEDULE_SLOT": "it's"}) == EXIT_BAD_CONFIG
    assert "`MLOPS_SCHEDULE_SLOT` must be" in capsys.readouterr().out


# --------------------------------------------------------------------------- model


def _mixed(rows: int = 120) -> tuple[pd.DataFrame, pd.Series]:
    x = pd.DataFrame({"age": [20 + i % 50 for i in range(rows)],
                      "income": [30.0 + (i * 7) % 40 for i in range(rows)],
                      "city": [("paris", "lyon", "nice")[i % 3] for i in range(rows)]})
    y = pd.Series(["yes" if (i % 3 == 0) != (i % 7 == 0) else "no" for i in range(rows)],
                  name="churned")
    return x, y


def test_numeric_data_trains_the_bare_estimator() -> None:
    from sklearn.linear_model import LogisticRegression

    x = load_dataset("sklearn:iris").x
    estimator = LogisticRegression()
    assert feature_pipeline(estimator, x) is estimator


def test_string_columns_are_one_hot_encoded_and_numeric_ones_scaled() -> None:
    x, y = _mixed()
    config = RetrainConfig(model_name="m", dataset="data.csv", target_column="churned",
                           estimator="sklearn.naive_bayes.GaussianNB")
    model, params = train(config, x, y)

    assert params == {}
    features = model.named_steps["features"]
    assert [(name, list(columns)) for name, _, columns in features.transformers] == [
        ("numeric", ["age", "income"]), ("categorical", ["city"])]
    # The fitted model takes the raw columns, and a city never seen in training too.
    unseen = x.head(3).assign(city=["paris", "tokyo", "nice"])
    encoded = features.transform(unseen)
    assert encoded.shape == (3, 5)
    assert list(encoded[1, 2:]) == [0.0, 0.0, 0.0]
    assert set(model.predict(unseen)) <= {"yes", "no"}


def test_a_search_over_a_pipeline_names_the_estimator_parameters() -> None:
    x, y = _mixed()
    config = RetrainConfig(model_name="m", dataset="data.csv", target_column="churned",
                           estimator="sklearn.linear_model.LogisticRegression",
                           search={"C": [0.1, 1.0]}, search_iterations=2)
    model, params = train(config, x, y)

    assert set(params) == {"C"}
    assert params["C"] == model.named_steps["model"].C


def test_string_labels_give_every_classification_metric() -> None:
    x, y = _mixed()
    config = RetrainConfig(model_name="m", dataset="data.csv", target_column="churned",
                           estimator="sklearn.linear_model.LogisticRegression")
    model, _ = train(config, x, y)
    metrics = evaluate(model, x, y, "classification")

    assert set(metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert all(math.isfinite(v) for v in metrics.values())


def test_the_trusted_types_are_what_the_model_is_made_of() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    data = load_dataset("sklearn:breast_cancer")
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(data.x, data.y)
    boosted = HistGradientBoostingRegressor(max_iter=3).fit(data.x, data.y)
    linear = LogisticRegression(max_iter=5000).fit(data.x, data.y)

    assert trusted_types(forest) == ["sklearn.tree._tree.Tree"]
    assert trusted_types(boosted) == [
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
    assert trusted_types(linear) == []


# --------------------------------------------------------------------------- docs


def test_the_docs_page_lists_every_config_field_and_exit_code() -> None:
    from pulumi_mlops.runtime.retrain import job, registry
    from pulumi_mlops.runtime.retrain.config import RetrainConfig

    doc = (Path(__file__).resolve().parents[2] / "docs" / "retrain-job.md").read_text()
    section = doc.split("## Config file", 1)[1].split("\n## ", 1)[0]

    assert set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M)) == set(
        RetrainConfig.model_fields)
    for code in (job.EXIT_PROMOTED, job.EXIT_NOT_PROMOTED, job.EXIT_FAILED, job.EXIT_BAD_CONFIG,
                 job.EXIT_CONFIG_CHANGED):
        assert f"\n| {code} |" in doc
    for tag in registry.LINEAGE_TAGS:
        assert f"`{tag}`" in doc


def test_the_docs_json_and_yaml_examples_are_the_same_valid_config(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "retrain-job.md").read_text()
    [as_json] = re.findall(r"```json\n(.*?)```", doc, re.S)
    [as_yaml] = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    (tmp_path / "a.json").write_text(as_json)
    (tmp_path / "a.yaml").write_text(as_yaml)

    config = load_job_config(tmp_path / "a.yaml")
    assert config == load_job_config(tmp_path / "a.json")
    assert config.gates.max_regression == {"log_loss": 0.05}


def test_a_schedule_that_is_not_cron_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, {"model_name": "m", "dataset": "sklearn:iris",
                             "estimator": TREE, "schedule": "every day"})
    with pytest.raises(ConfigFileError, match="`schedule`"):
        load_job_config(path)


# --------------------------------------------------------------------------- code in the config

# A function of the standard library re-exported by a module that is not: judged as itself.
from shutil import rmtree as reexported_rmtree  # noqa: E402, F401


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("estimator", "subprocess.Popen", "must not name the standard library's module"),
    ("estimator", "os.path.Path", "must not name the standard library's module"),
    ("estimator", "this.Zen", "must not name the standard library's module"),
    ("estimator", "sklearn.base.clone", "must name a scikit-learn estimator class"),
    ("estimator", "pandas.DataFrame", "must name a scikit-learn estimator class"),
    ("estimator", "sklearn.ensemble.RandomForestClasifier", "has no 'RandomForestClasifier'"),
    ("estimator", "fraud_models_not_installed.Model", "is not installed here"),
    ("trainer", "subprocess:run", "must not name the standard library's module"),
    ("trainer", "os:system", "must not name the standard library's module"),
    ("trainer", "builtins:exec", "must not name the standard library's module"),
    ("trainer", "__main__:main", "must not name the standard library's module"),
    ("trainer", "tests.unit.test_retrain_job:reexported_rmtree",
     "must not name the standard library's module 'shutil'"),
    ("trainer", "tests.unit.test_retrain_job:VALID", "must name a Python function"),
])
def test_code_the_config_may_not_name_is_refused_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: str,
        rule: str) -> None:
    path = _write(tmp_path, {"model_name": "m", "dataset": "sklearn:iris", field: value})
    with pytest.raises(ConfigFileError) as info:
        load_job_config(path)
    assert f"`{field}`" in str(info.value)
    assert rule in str(info.value)
    # A standard-library module is refused by its name, without importing it (`this` prints).
    assert "Beautiful is better" not in capsys.readouterr().out


def test_an_estimator_that_runs_a_command_runs_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    path = _write(tmp_path, {
        "model_name": "m", "dataset": "sklearn:iris", "estimator": "subprocess.Popen",
        "params": {"args": [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]}})

    code = main(["retrain", "--config", str(path)])

    assert code == EXIT_BAD_CONFIG
    assert "`estimator`" in capsys.readouterr().err
    time.sleep(0.5)  # a Popen would have run by now
    assert not marker.exists()


def test_estimators_and_trainers_of_installed_packages_are_accepted() -> None:
    config = RetrainConfig(model_name="m", dataset="sklearn:iris",
                           estimator="sklearn.ensemble.HistGradientBoostingClassifier")
    assert config.estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
    config = RetrainConfig(model_name="m", dataset="sklearn:iris",
                           trainer="tests.e2e.retrain_trainers:scaled_logistic")
    assert config.trainer == "tests.e2e.retrain_trainers:scaled_logistic"


# --------------------------------------------------------------------------- loading a champion


def _saved(tmp_path: Path, fmt: str) -> Path:
    import mlflow.sklearn
    from sklearn.ensemble import RandomForestClassifier

    data = load_dataset("sklearn:iris")
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(data.x, data.y)
    path = tmp_path / fmt
    mlflow.sklearn.save_model(model, str(path), serialization_format=fmt,
                              skops_trusted_types=trusted_types(model) if fmt == "skops"
                              else None)
    return path


def test_a_skops_model_loads_with_pickle_deserialization_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = load_sklearn_model(_saved(tmp_path, "skops"))
    assert list(model.predict(load_dataset("sklearn:iris").x.head(2))) == [0, 0]


@pytest.mark.parametrize("setting", ["false", "0"])
def test_a_pickled_model_is_refused_without_the_opt_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    path = _saved(tmp_path, "cloudpickle")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", setting)
    with pytest.raises(ModelLoadError, match=r"cloudpickle-format.*`allow_pickle=True`"):
        load_sklearn_model(path)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    assert load_sklearn_model(path).n_estimators == 3
    # Unset, the variable means what it means to MLflow (RetrainSchedule always sets it).
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    assert load_sklearn_model(path).n_estimators == 3


def test_a_skops_model_needing_a_type_outside_scikit_learn_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import operator

    import mlflow.sklearn
    import skops.io
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    # A function the model's own MLmodel trusts: skops would call it into being.
    model = make_pipeline(FunctionTransformer(func=operator.neg),
                          LinearRegression()).fit(np.array([[1.0], [2.0]]), [1.0, 2.0])
    path = tmp_path / "model"
    mlflow.sklearn.save_model(model, str(path), serialization_format="skops",
                              skops_trusted_types=skops.io.get_untrusted_types(
                                  data=skops.io.dumps(model)))
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(ModelLoadError, match="only scikit-learn classes are trusted") as err:
        load_sklearn_model(path)
    assert "neg" in str(err.value)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # as MLflow loads it
    assert load_sklearn_model(path).predict(np.array([[3.0]])).round(6).tolist() == [3.0]


