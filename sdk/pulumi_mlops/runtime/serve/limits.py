"""The bounds `mlops serve` holds every request to, per worker process.

Each is an option of ``mlops serve`` with the default below. The memory a worker can be made to
hold by clients is about ``max_concurrency * max_body_bytes`` of request bodies (32 * 16 MiB =
512 MiB at the defaults, reached only by 32 clients each sending a full 16 MiB body at once)
plus what one request's decoding takes (predictions run one at a time per worker, so a worker
decodes one body at a time: a JSON body of numbers takes about 3 times its size as Python
objects and its matrix). With ``--workers N`` multiply by N and add the model's memory once
(the workers share it). Size the container's memory limit, or these options, to that budget.
The feedback window (`pulumi_mlops.runtime.serve.feedback`) adds at most about 28 MiB per
worker at its defaults (100,000 one-row predictions).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Per-worker request bounds of the scoring server.

    Attributes:
        max_body_bytes: Larger request bodies (scoring and ``/feedback``) get 413.
            Default: 16 MiB.
        max_concurrency: Scoring requests (``/invocations``, V2 ``infer``) and ``/feedback``
            requests a worker holds at once, from reading their body to the end of their
            prediction; one more gets 503 with ``Retry-After: 1``. Health, metrics and
            metadata routes are not counted. Default: 32.
        max_rows: Input rows per request; more get 413 naming the bound. Default: 100,000.
        max_header_bytes: Request line and headers larger than this get 431 and the connection
            is closed. Default: 64 KiB.
        header_timeout: Seconds from a connection's opening, or from the first byte of a
            request, to the end of its headers; a client slower than that gets 408 and the
            connection is closed (so connections that send nothing do not pile up). Default: 10.
        body_timeout: Seconds to receive a request's whole body once its headers are in;
            slower gets 408. Default: 60.
        keep_alive_timeout: Whole seconds an idle keep-alive connection stays open between
            requests. Default: 5 (MLflow's scoring server's and uvicorn's). Keep it above the
            idle timeout of a proxy in front that reuses connections, or raise it.
        prediction_timeout: Seconds a prediction may take before the client gets 504; None for
            no bound. A prediction past it still runs to its end (a thread cannot be stopped)
            and keeps its concurrency slot until then. Default: none.
        max_class_labels: Distinct predicted classes that get their own ``class`` label on
            ``mlops_predictions_total``; predictions of any further class count as ``other``,
            so a model whose output depends on its input cannot grow the metric without bound.
            Default: 50.
        feedback_window_ids: Recent scoring answers (request ids) whose predictions a worker
            keeps for ``/feedback``; the oldest are dropped first. 0 keeps none (every label
            is unmatched). Default: 100,000.
        feedback_window_rows: Predicted rows those answers may hold together; the oldest
            answers are dropped first, and an answer of more rows is not kept. 0 keeps none.
            Default: 100,000.
    """

    max_body_bytes: int = 16 * 2**20
    max_concurrency: int = 32
    max_rows: int = 100_000
    max_header_bytes: int = 64 * 2**10
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: int = 5
    prediction_timeout: float | None = None
    max_class_labels: int = 50
    feedback_window_ids: int = 100_000
    feedback_window_rows: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_concurrency", "max_rows", "max_header_bytes",
                     "max_class_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1 (got {value!r}).")
        for name in ("feedback_window_ids", "feedback_window_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0 (got {value!r}).")
        if isinstance(self.keep_alive_timeout, bool) or not isinstance(
                self.keep_alive_timeout, int) or self.keep_alive_timeout < 1:
            raise ValueError("`keep_alive_timeout` must be a whole number of seconds >= 1 (got "
                             f"{self.keep_alive_timeout!r}).")
        for name in ("header_timeout", "body_timeout", "prediction_timeout"):
            value = getattr(self, name)
            if value is None and name == "prediction_timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"`{name}` must be a number of seconds > 0 (got {value!r}).")
