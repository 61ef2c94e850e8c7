"""The retrain job's configuration: the file `RetrainSchedule` renders and `mlops retrain`
reads (``mlops retrain --config FILE``). Plain pydantic, no Pulumi: it runs in the job's
container. Unknown keys are refused, so a typo fails the job before any work.

The config names code (``estimator``, ``trainer``), and whoever can edit it (a ConfigMap) is not
always whoever can change the job's image, so validating it checks what the names resolve to
(`check_estimator`, `check_trainer`): the same rule at preview (RetrainSchedule validates its
config) and in the job (`load_job_config`), before anything runs. A dataset URL is kept free of
credentials (`url_credentials`): it is written into the ConfigMap, the plan, the job's logs and
lineage tags that every reader of the registry sees.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_DATASET_MAX_BYTES",
    "DEFAULT_DATASET_MAX_RATIO",
    "DEFAULT_DATASET_TIMEOUT",
    "Gates",
    "RetrainConfig",
    "check_estimator",
    "check_trainer",
    "redact_url",
    "url_credentials",
]

CONFIG_VERSION: Final = "mlops-retrain/v1"
_IMPORT_PATH = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$"
_TRAINER = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$"
_MODEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
_SKLEARN_DATASETS = ("breast_cancer", "diabetes", "wine", "iris", "digits",
                     "linnerud")

Metric = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]

DEFAULT_DATASET_MAX_BYTES: Final = 512 * 1024 * 1024
"""Default `RetrainConfig.dataset_max_bytes`: 512 MiB, a quarter of the job's default memory
limit (2 GiB), since the data is held in memory once as bytes and once as a frame."""
DEFAULT_DATASET_MAX_RATIO: Final = 100
"""Default `RetrainConfig.dataset_max_ratio`: CSV compresses 5 to 20 times with gzip; a bomb
compresses a thousand times and more."""
DEFAULT_DATASET_TIMEOUT: Final = 600.0
"""Default `RetrainConfig.dataset_timeout`, in seconds: a sixth of the job's default timeout."""

# Query parameters that carry a credential in the URLs of common stores (S3, GCS and Azure
# signed URLs, API keys, OAuth tokens).
_SECRET_QUERY = re.compile(
    r"^(x-(amz|goog)-(signature|credential|security-token)|\w*token|\w*secret|\w*passw(or)?d"
    r"|pwd|sig|signature|((api|access|secret|private|subscription)[-_]?)?key|apikey|auth"
    r"|authorization|credentials?|session|jwt)$", re.I)
_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


def _refuse_stdlib(module: str, field: str) -> None:
    # Decided from the name alone: importing a standard-library module may itself act
    # (`antigravity`, `this`), and none of them holds an estimator or a trainer.
    top = module.split(".", 1)[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "__main__":
        raise ValueError(f"`{field}` must not name the standard library's module {module!r}: "
                         "it runs what the config names, so only scikit-learn estimators and "
                         "functions of installed non-standard-library packages are allowed")


def _resolve(module: str, name: str, field: str) -> Any:
    if importlib.util.find_spec(module.split(".", 1)[0]) is None:
        raise ValueError(f"`{field}`: module {module!r} is not installed here (install its "
                         "package where the preview runs, as in the job's image)")
    try:
        found = importlib.import_module(module)
    except Exception as err:
        raise ValueError(f"`{field}`: importing {module!r} failed: {type(err).__name__}: "
                         f"{err}") from None
    if not hasattr(found, name):
        raise ValueError(f"`{field}`: module {module!r} has no {name!r}")
    return getattr(found, name)


def check_estimator(path: str) -> type[Any]:
    """The scikit-learn estimator class ``path`` (``pkg.module.Class``) names.

    The rule: the module is not the standard library's (decided from its name, without importing
    it); it is imported (scikit-learn's, or an installed package's, such as xgboost); the name is
    a class deriving from ``sklearn.base.BaseEstimator``. So ``subprocess.Popen`` is refused
    before anything is imported, and a class re-exported from elsewhere is judged as itself.

    Raises:
        ValueError: the rule is broken; the message says how.
    """
    module, _, name = path.rpartition(".")
    _refuse_stdlib(module, "estimator")
    found = _resolve(module, name, "estimator")
    from sklearn.base import BaseEstimator

    if not (inspect.isclass(found) and issubclass(found, BaseEstimator)):
        raise ValueError(f"`estimator` must name a scikit-learn estimator class (a subclass of "
                         f"sklearn.base.BaseEstimator); {path!r} is not")
    return found


def check_trainer(path: str) -> Any:
    """The function ``path`` (``pkg.module:function``) names.

    The rule: the module is not the standard library's (decided from its name, without importing
    it); it is imported; the name is a Python function (``def``) whose own module is not the
    standard library's either (so ``mypkg:system`` re-exporting ``os.system`` is refused).

    Raises:
        ValueError: the rule is broken; the message says how.
    """
    module, _, name = path.partition(":")
    _refuse_stdlib(module, "trainer")
    found = _resolve(module, name, "trainer")
    if not inspect.isfunction(found):
        raise ValueError(f"`trainer` must name a Python function (def); {path!r} is a "
                         f"{type(found).__name__}")
    _refuse_stdlib(str(found.__module__), "trainer")
    return found


def url_credentials(url: str) -> list[str]:
    """What in ``url`` looks like a credential: ``user:password@``, and the names (never the
    values) of query parameters such as ``token``, ``api_key``, ``X-Amz-Signature``."""
    parts = urlsplit(url)
    found = ["user:password@"] if parts.username or parts.password else []
    return found + [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)
                    if _SECRET_QUERY.search(k)]


def redact_url(url: str) -> str:
    """``url`` without its userinfo and with the values of credential-like query parameters
    replaced by ``***``: what an error message may show of a refused URL."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{k}={'***' if _SECRET_QUERY.search(k) else v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


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
            diabetes, wine, iris, digits), or a CSV or Parquet path or http(s) URL. A URL must
            not hold credentials (``user:password@``, a ``token``/``key``/``sig`` query
            parameter): send them with ``dataset_headers_env``.
        dataset_headers_env: Environment variable holding a JSON object of HTTP headers sent
            with a URL dataset's download (e.g. ``{"Authorization": "Bearer ..."}``); the
            config names the variable, never the value. Headers are dropped on a redirect to
            another origin. Default: none.
        dataset_max_bytes: Most bytes a dataset may have, downloaded or read, and again once
            decompressed. Default: 512 MiB (`DEFAULT_DATASET_MAX_BYTES`).
        dataset_max_ratio: Most times a ``.gz`` dataset may grow when decompressed. Default:
            100.
        dataset_timeout: Seconds a URL dataset's whole download may take (connecting
            included). Default: 600.
        target_column: Label column of a CSV/Parquet dataset (required for those).
        estimator: Import path of a scikit-learn estimator class (a subclass of
            ``sklearn.base.BaseEstimator`` in a module that is not the standard library's, see
            `check_estimator`), e.g. ``sklearn.ensemble.GradientBoostingClassifier``. Only one
            of ``estimator`` or ``trainer`` can be provided.
        params: Constructor parameters of ``estimator``. Default: none.
        trainer: ``pkg.module:function`` called as ``function(x_train, y_train, params)``,
            returning a fitted estimator or pipeline: a Python function of an installed module
            that is not the standard library's (see `check_trainer`).
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
    dataset_headers_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    dataset_max_bytes: Annotated[int, Field(ge=1)] = DEFAULT_DATASET_MAX_BYTES
    dataset_max_ratio: Annotated[float, Field(ge=1)] = DEFAULT_DATASET_MAX_RATIO
    dataset_timeout: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = DEFAULT_DATASET_TIMEOUT
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
        found = url_credentials(value) if value.startswith(("http://", "https://")) else []
        if found:
            raise ValueError(f"must not hold credentials ({', '.join(found)}), which would be "
                             f"written into the config, the plan, the job's logs and the "
                             f"model's lineage tags ({redact_url(value)}); send them as headers "
                             "from a secret instead: `dataset_headers` of RetrainSchedule "
                             "(`dataset_headers_env` of the job's config)")
        return value

    @field_validator("estimator")
    @classmethod
    def _estimator(cls, value: str | None) -> str | None:
        if value is not None:
            check_estimator(value)
        return value

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, value: str | None) -> str | None:
        if value is not None:
            check_trainer(value)
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
