"""The retrain job's configuration: the file `RetrainSchedule` renders and `mlops retrain`
reads (``mlops retrain --config FILE``). Plain pydantic, no Pulumi: it runs in the job's
container. Unknown keys are refused, so a typo fails the job before any work.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["CONFIG_VERSION", "Gates", "RetrainConfig"]

CONFIG_VERSION: Final = "mlops-retrain/v1"
_IMPORT_PATH = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$"
_TRAINER = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$"
_MODEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
_SKLEARN_DATASETS = ("breast_cancer", "diabetes", "wine", "iris", "digits",
                     "linnerud")

Metric = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gates(_Strict):
    """What a new version must pass before the alias moves to it.

    Metric names are the job's holdout metrics: classification ``accuracy``, ``f1``,
    ``roc_auc``, ``log_loss``; regression ``rmse``, ``mae``, ``r2``. For ``log_loss``, ``rmse``
    and ``mae`` lower is better: an improvement is a decrease.

    Attributes:
        min: Absolute minimums, e.g. ``{"roc_auc": 0.9}``. Default: none.
        max: Absolute maximums, e.g. ``{"log_loss": 0.3}``. Default: none.
        min_improvement: Least improvement over the current champion on the same holdout,
            e.g. ``{"roc_auc": 0.0}`` (not worse). Default: none. Passes when there is no
            champion yet.
        max_regression: Largest allowed worsening against the champion. Default: none.
    """

    min: dict[Metric, float] = Field(default_factory=dict)
    max: dict[Metric, float] = Field(default_factory=dict)
    min_improvement: dict[Metric, float] = Field(default_factory=dict)
    max_regression: dict[Metric, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class RetrainConfig(_Strict):
    """One retrain job.

    Attributes:
        version: Format of this document: ``mlops-retrain/v1``.
        model_name: Registered model the job registers versions of.
        dataset: ``sklearn:<name>`` (a dataset bundled with scikit-learn: breast_cancer,
            diabetes, wine, iris, digits), or a CSV or Parquet path or http(s) URL.
        target_column: Label column of a CSV/Parquet dataset (required for those).
        estimator: Import path of a scikit-learn estimator class, e.g.
            ``sklearn.ensemble.GradientBoostingClassifier``. Only one of ``estimator`` or
            ``trainer`` can be provided.
        params: Constructor parameters of ``estimator``. Default: none.
        trainer: ``pkg.module:function`` called as ``function(x_train, y_train, params)``,
            returning a fitted estimator or pipeline.
        search: Parameter distributions for scikit-learn's ``RandomizedSearchCV`` (lists of
            values), searched on the training split. Default: none (no search).
        search_iterations: Candidates the search tries. Default: 10.
        task: ``classification`` or ``regression``; ``auto`` infers it from the label.
        holdout_fraction: Share of rows held out for evaluation. Default: 0.2.
        seed: Seed of the split, the search and the estimator. Default: 0.
        gates: What a new version must pass to be promoted. Default: no gate.
        promote_alias: Alias moved to a version that passes every gate. Default: champion.
        challenger_alias: Alias set on every newly registered version. Default: challenger.
        experiment: MLflow experiment of the runs. Default: ``retrain-<model_name>``.
        schedule: The cron schedule the job runs on, for the record; the run's idempotency
            key comes from whoever starts it (``MLOPS_SCHEDULE_SLOT``), never from the clock.
    """

    version: Literal["mlops-retrain/v1"] = "mlops-retrain/v1"
    model_name: Annotated[str, Field(pattern=_MODEL_NAME)]
    dataset: str
    target_column: str | None = None
    estimator: Annotated[str, Field(pattern=_IMPORT_PATH)] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: Annotated[str, Field(pattern=_TRAINER)] | None = None
    search: dict[str, list[Any]] | None = None
    search_iterations: Annotated[int, Field(ge=1, le=1000)] = 10
    task: Literal["auto", "classification", "regression"] = "auto"
    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 0
    gates: Gates = Field(default_factory=Gates)
    promote_alias: Annotated[str, Field(pattern=_ALIAS)] = "champion"
    challenger_alias: Annotated[str, Field(pattern=_ALIAS)] = "challenger"
    experiment: str | None = None
    schedule: str | None = None

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        if value.startswith("sklearn:"):
            name = value.removeprefix("sklearn:")
            if name not in _SKLEARN_DATASETS:
                raise ValueError(f"`sklearn:{name}` is not a bundled dataset; use one of "
                                 + ", ".join(f"sklearn:{d}" for d in _SKLEARN_DATASETS))
            return value
        if not re.search(r"\.(csv|parquet|pq)(\.gz)?$", value.split("?", 1)[0], re.I):
            raise ValueError("must be sklearn:<name>, or a .csv or .parquet path or URL")
        return value

    @model_validator(mode="after")
    def _rules(self) -> RetrainConfig:
        if (self.estimator is None) == (self.trainer is None):
            raise ValueError("Only one of `estimator` or `trainer` can be provided (and one "
                             "is required).")
        if not self.dataset.startswith("sklearn:") and not self.target_column:
            raise ValueError("`target_column` is required for a CSV or Parquet dataset.")
        if self.promote_alias == self.challenger_alias:
            raise ValueError(f"`promote_alias` must not be {self.promote_alias!r}: every new "
                             "version gets that alias as the challenger. Promote to another "
                             "alias, e.g. 'champion'.")
        return self

    def experiment_name(self) -> str:
        """The MLflow experiment the job logs to."""
        return self.experiment or f"retrain-{self.model_name}"
