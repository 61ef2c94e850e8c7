"""The Prometheus metrics `mlops serve` exports: names, label keys and the label value for
classes past the bound. The server registers them under these names; MonitoringStack builds
its recording rules, alerts and dashboards from them, so renaming one breaks a unit test, not
an alert.

Counters are exposed with Prometheus' ``_total`` suffix (``mlops_requests_total``),
histograms with ``_bucket``/``_count`` (``_sum`` too unless a bucket bound is negative).
"""

from __future__ import annotations

__all__ = ["BATCH_ROWS", "BIN_LABEL", "CLASS_LABEL", "CODE_LABEL", "DRIFT_OBSERVATIONS",
           "DRIFT_REFERENCE", "DURATION_BUCKETS", "FEATURE_DRIFT", "FEATURE_LABEL",
           "JS_DISTANCE", "MODEL_INFO", "MODEL_INFO_LABELS", "OTHER_BIN", "OTHER_CLASS",
           "PREDICTIONS", "PREDICTION_VALUE", "PSI", "PSI_EPSILON", "REQUESTS", "REQUEST_DURATION",
           "STATISTIC_LABEL"]

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
