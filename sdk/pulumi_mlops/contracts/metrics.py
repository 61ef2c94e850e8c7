"""The Prometheus metrics `mlops serve` exports: names, label keys and the label value for
classes past the bound. The server registers them under these names; MonitoringStack builds
its recording rules, alerts and dashboards from them, so renaming one breaks a unit test, not
an alert.

Counters are exposed with Prometheus' ``_total`` suffix (``mlops_requests_total``),
histograms with ``_bucket``/``_count`` (``_sum`` too unless a bucket bound is negative).
"""

from __future__ import annotations

__all__ = ["BATCH_ROWS", "CLASS_LABEL", "CODE_LABEL", "FEATURE_DRIFT", "FEATURE_LABEL",
           "MODEL_INFO", "MODEL_INFO_LABELS", "OTHER_CLASS", "PREDICTIONS", "PREDICTION_VALUE",
           "REQUESTS", "REQUEST_DURATION", "STATISTIC_LABEL"]

REQUESTS = "mlops_requests"
"""Counter: scoring requests (``/invocations`` and V2 inference), by `CODE_LABEL`."""
REQUEST_DURATION = "mlops_request_duration_seconds"
"""Histogram: seconds to answer a scoring request."""
BATCH_ROWS = "mlops_batch_rows"
"""Histogram: input rows per answered scoring request."""
PREDICTIONS = "mlops_predictions"
"""Counter: predicted classes of a classification model, by `CLASS_LABEL`."""
PREDICTION_VALUE = "mlops_prediction_value"
"""Histogram: predicted values of a regression model."""
FEATURE_DRIFT = "mlops_feature_drift"
"""Gauge: drift of an input feature, by `FEATURE_LABEL` and `STATISTIC_LABEL`."""
MODEL_INFO = "mlops_model_info"
"""Gauge (1): the model being served, by `MODEL_INFO_LABELS`."""

CODE_LABEL = "code"
"""The HTTP status answered."""
CLASS_LABEL = "class"
"""The predicted class (bounded: see `OTHER_CLASS`)."""
FEATURE_LABEL = "feature"
"""The input feature's name."""
STATISTIC_LABEL = "statistic"
"""``psi`` for a numeric feature, ``js_distance`` for a categorical one."""
MODEL_INFO_LABELS = ("model_name", "model_version", "model_alias", "model_uri")
"""The labels of `MODEL_INFO`."""
OTHER_CLASS = "__other__"
"""The class label value of predictions past the server's bound on distinct classes."""
