#!/bin/sh
# Checks what `pulumi up` on the dev stack needs and says exactly what is missing.
missing=0
if ! command -v pulumi >/dev/null 2>&1; then
    echo "missing: the Pulumi CLI (pulumi). Install it from the Pulumi documentation" \
         "('Download & install Pulumi'), then re-run 'make up'." >&2
    missing=1
fi
if ! command -v docker >/dev/null 2>&1; then
    echo "missing: the Docker CLI (docker). Install Docker Engine or Docker Desktop." >&2
    missing=1
elif ! docker info >/dev/null 2>&1; then
    echo "missing: a running Docker daemon ('docker info' failed). Start Docker, and check" \
         "that your user may use it (DOCKER_HOST, or membership of the docker group)." >&2
    missing=1
fi
if [ "$missing" -ne 0 ]; then
    echo "preflight failed. Without them you can still run 'make demo' (the dev stack's" \
         "workloads as local processes) and 'make render' (manifests under mocks)." >&2
    exit 1
fi
echo "preflight ok: pulumi $(pulumi version), docker $(docker version --format '{{.Server.Version}}')"
