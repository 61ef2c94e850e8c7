"""The Prometheus metrics `mlops serve` exports: names, label keys and the label value for
classes past the bound. The server registers them under these names; MonitoringStack builds
its recording rules, alerts and dashboards from them, so renaming one breaks a unit test, not
an alert.

Counters are exposed with Prometheus' ``_total`` suffix (``mlops_requests_total``),
histograms with ``_bucket``/``_count`` (``_sum`` too unless a bucket bound is negative).
"""

from __future__ import annotations

__all__ = ["BATCH_ROWS", "BIN_LABEL", "CLASS_LABEL", "CODE_LABEL", "DRIFT_OBSERVATIONS",
           "DRIFT_REFERENCE", "DURATION_BUCKETS", "FAILED", "FEATURE_DRIFT", "FEATURE_LABEL",
           "FEEDBACK", "FEEDBACK_ABSOLUTE_ERROR", "FEEDBACK_CORRECT", "FEEDBACK_SQUARED_ERROR",
           "JS_DISTANCE", "MATCHED", "MODEL_INFO", "MODEL_INFO_LABELS", "MODEL_LOADED",
           "OTHER_BIN", "OTHER_CLASS", "OUTCOME_LABEL", "PREDICTIONS", "PREDICTION_FEATURE",
           "PREDICTION_VALUE", "PSI", "PSI_EPSILON", "REGISTRY_REQUESTS",
           "REGISTRY_REQUEST_DURATION", "REGISTRY_STATUS_LABEL", "REQUESTS", "REQUEST_DURATION",
           "RETRAIN_LAST_SUCCESS", "RETRAIN_RUNS", "RETRAIN_STARTED", "STATISTIC_LABEL",
           "SUCCEEDED", "UNMATCHED"]

REQUESTS = "mlops_requests"
"""Counter: scoring requests (``/invocations`` and V2 inference), by `CODE_LABEL`."""
REQUEST_DURATION = "mlops_request_duration_seconds"
"""Histogram: seconds to answer a scoring request, in `DURATION_BUCKETS`."""
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0)
"""The upper bounds of `REQUEST_DURATION`'s buckets, seconds (a latency objective is exact only
at one of them)."""
BATCH_ROWS = "mlops_batch_rows"
"""Histogram: input rows per answered scoring request."""
PREDICTIONS = "mlops_predictions"
"""Counter: predicted classes of a classification model, by `CLASS_LABEL`."""
PREDICTION_VALUE = "mlops_prediction_value"
"""Histogram: predicted values of a regression model."""
FEATURE_DRIFT = "mlops_feature_drift"
"""Gauge: drift of an input feature over this server's recent window, by `FEATURE_LABEL` and
`STATISTIC_LABEL` (one replica's view; across replicas use `DRIFT_OBSERVATIONS`)."""
DRIFT_OBSERVATIONS = "mlops_drift_observations"
"""Counter: input values seen per bin of the training profile, by `FEATURE_LABEL`, `BIN_LABEL`
and `STATISTIC_LABEL` (missing values are not counted). Summed across replicas and taken over
a time window, they give the drift of all the traffic, against `DRIFT_REFERENCE`."""
DRIFT_REFERENCE = "mlops_drift_reference_ratio"
"""Gauge: the training data's share of each bin (the profile), labelled as
`DRIFT_OBSERVATIONS`."""
MODEL_INFO = "mlops_model_info"
"""Gauge (1): the model being served, by `MODEL_INFO_LABELS`."""
MODEL_LOADED = "mlops_model_loaded"
"""Gauge: 1 while the server serves its model, 0 while it waits for it (an alias not promoted
yet, the model being fetched or loaded): a waiting server answers ``/metrics`` too."""
PREDICTION_FEATURE = "__prediction__"
"""The `FEATURE_LABEL` value of the model's output in the drift series: the predictions'
distribution is scored against the one on the training data as an input feature's is (PSI
for a regression model's values, Jensen-Shannon distance for a classifier's classes)."""

FEEDBACK = "mlops_feedback"
"""Counter: delayed labels received on ``/feedback``, one per predicted row, by
`OUTCOME_LABEL`: `MATCHED` (the prediction was in this server's window) or `UNMATCHED`."""
FEEDBACK_CORRECT = "mlops_feedback_correct"
"""Counter: matched labels equal to the predicted class (classification); with
`FEEDBACK` ``{outcome="matched"}`` it gives the live accuracy."""
FEEDBACK_ABSOLUTE_ERROR = "mlops_feedback_absolute_error"
"""Counter: the sum of ``|label - prediction|`` over matched values (regression): the live
mean absolute error with `FEEDBACK` ``{outcome="matched"}``."""
FEEDBACK_SQUARED_ERROR = "mlops_feedback_squared_error"
"""Counter: the sum of ``(label - prediction)^2`` over matched values (regression)."""
OUTCOME_LABEL = "outcome"
"""How a feedback label or a retrain run ended."""
MATCHED = "matched"
"""Feedback whose prediction was found (by request id and row) in this server's window."""
UNMATCHED = "unmatched"
"""Feedback whose prediction was not found: expired from the window, answered by another
replica or worker, or never issued. Matching is independent of correctness, so the matched
share is an unbiased sample."""

RETRAIN_RUNS = "mlops_retrain_runs"
"""Counter (`mlops schedule`): finished runs of the scheduled command, by `OUTCOME_LABEL`:
`SUCCEEDED` (exit 0, whatever the gates decided) or `FAILED` (after its retries)."""
RETRAIN_LAST_SUCCESS = "mlops_retrain_last_success_timestamp_seconds"
"""Gauge (`mlops schedule`): when the last successful run ended, Unix seconds; 0 before one."""
RETRAIN_STARTED = "mlops_retrain_scheduler_start_timestamp_seconds"
"""Gauge (`mlops schedule`): when the scheduler started, Unix seconds (a schedule is overdue
only once two intervals have passed since the later of this and the last success)."""
SUCCEEDED = "succeeded"
FAILED = "failed"

REGISTRY_REQUESTS = "mlflow_http_request"
"""Counter of the MLflow server run with ``--expose-prometheus`` (prometheus-flask-exporter,
prefix ``mlflow``): HTTP requests by ``method`` and `REGISTRY_STATUS_LABEL`."""
REGISTRY_REQUEST_DURATION = "mlflow_http_request_duration_seconds"
"""Histogram of the MLflow server: seconds per HTTP request."""
REGISTRY_STATUS_LABEL = "status"
"""The HTTP status label of `REGISTRY_REQUESTS`."""

CODE_LABEL = "code"
"""The HTTP status answered."""
CLASS_LABEL = "class"
"""The predicted class (bounded: see `OTHER_CLASS`)."""
FEATURE_LABEL = "feature"
"""The input feature's name."""
STATISTIC_LABEL = "statistic"
"""`PSI` for a numeric feature, `JS_DISTANCE` for a categorical one."""
PSI = "psi"
"""Population stability index (numeric features)."""
PSI_EPSILON = 1e-4
"""Additive smoothing of bin proportions in the PSI, ``(x + eps) / (1 + bins * eps)``, so that
empty bins give finite scores: the server and the recording rules smooth alike."""
JS_DISTANCE = "js_distance"
"""Jensen-Shannon distance, base 2 (categorical features)."""
BIN_LABEL = "bin"
"""A bin of the training profile: its index (``0``, ``1`` ...) for numeric features, the index
of the training category for categorical ones, or `OTHER_BIN`. An index keeps the series
bounded by the profile whatever values arrive."""
OTHER_BIN = "other"
"""The bin of categorical values not seen in training."""
MODEL_INFO_LABELS = ("model_name", "model_version", "model_alias", "model_uri")
"""The labels of `MODEL_INFO`."""
OTHER_CLASS = "__other__"
"""The class label value of predictions past the server's bound on distinct classes."""
