# syntax=docker/dockerfile:1
# The runtime image: `mlops serve` (and `mlops retrain`). See docs/runtime-image.md.
#
#   docker build -t mlops-runtime:0.1.0 .
#   docker run --rm -p 8080:8080 mlops-runtime:0.1.0 serve --model-uri models:/fraud@champion --host 0.0.0.0
#
# Requirements come from requirements/runtime.txt: every package pinned to the version the
# test suite runs with, installed with --no-deps so nothing unpinned slips in. Pulumi is not
# installed; the runtime never imports it.

# One pinned base for both stages. The minor version must match the test environment's
# (tests/unit/test_image.py checks it); add @sha256:<digest> to pin it immutably.
FROM python:3.11.14-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

FROM base AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/runtime.txt /tmp/requirements/runtime.txt
# Wheels only (no compilers in the image), exactly the pinned set, then a consistency check of
# that set before the project itself (whose Pulumi dependencies are left out on purpose).
RUN pip install --no-cache-dir --no-deps --only-binary=:all: \
        -r /tmp/requirements/runtime.txt \
    && pip check
COPY pyproject.toml README.md /src/
COPY sdk /src/sdk
# Bytecode pip compiled stays: the root filesystem is read-only at run time, so without it
# every start would compile mlflow, pandas and scikit-learn again.
RUN pip install --no-cache-dir --no-deps /src \
    && python -c "import pulumi_mlops.runtime.serve.server, mlflow.pyfunc, mlflow.sklearn, skops.io"

FROM base AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pulumi-mlops runtime" \
      org.opencontainers.image.description="mlops serve and mlops retrain: the workloads pulumi-mlops components run" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="python:3.11.14-slim-bookworm"
# The same non-root identity the components run workloads as (RUN_AS_USER in workload.py).
RUN groupadd --system --gid 10001 mlops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mlops
COPY --from=build /opt/venv /opt/venv
# HOME on /tmp: the root filesystem is read-only in the components, /tmp is a scratch mount.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MLFLOW_DISABLE_TELEMETRY=true
USER 10001:10001
EXPOSE 8080
# For `docker run` of `mlops serve` on its default port; Kubernetes ignores it, and the
# components declare their own probes and health checks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('MLOPS_HEALTHCHECK_URL', 'http://127.0.0.1:8080/ping'), timeout=4)"]
ENTRYPOINT ["mlops"]
CMD ["--help"]
