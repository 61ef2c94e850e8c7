#!/bin/sh
# Checks what `pulumi up` on the stack $STACK (default dev) needs, and says exactly what is
# missing: the Pulumi CLI always; a Docker daemon where the stack deploys to Docker or builds
# the runtime image (every stack without `mlops:image`); a current kubectl context where it
# deploys to Kubernetes.
stack=${STACK:-dev}
config="stacks/Pulumi.$stack.yaml"
if [ ! -f "$config" ]; then
    echo "missing: $config (no stack '$stack'). The stacks are:" \
         "$(ls stacks/Pulumi.*.yaml 2>/dev/null | sed 's|stacks/Pulumi\.||; s|\.yaml||' | tr '\n' ' ')" >&2
    exit 1
fi
# The stack file is YAML; these two keys are plain scalars at the top of its config.
target=$(sed -n 's/^ *mlops:target: *\([a-z]*\).*/\1/p' "$config" | head -n 1)
given_image=$(sed -n 's/^ *mlops:image: *\(.*\)/\1/p' "$config" | head -n 1)
missing=0
if ! command -v pulumi >/dev/null 2>&1; then
    echo "missing: the Pulumi CLI (pulumi). Install it from the Pulumi documentation" \
         "('Download & install Pulumi'), then re-run 'make up'." >&2
    missing=1
fi
need_docker=0
if [ "$target" = "docker" ] || [ -z "$given_image" ]; then
    need_docker=1
fi
if [ "$need_docker" -eq 1 ]; then
    why="stack '$stack' deploys to Docker"
    [ "$target" = "docker" ] || why="stack '$stack' builds the runtime image (set mlops:image to skip that)"
    if ! command -v docker >/dev/null 2>&1; then
        echo "missing: the Docker CLI (docker): $why. Install Docker Engine or Docker Desktop." >&2
        missing=1
    elif ! docker info >/dev/null 2>&1; then
        echo "missing: a running Docker daemon ('docker info' failed): $why. Start Docker, and" \
             "check that your user may use it (DOCKER_HOST, or membership of the docker group)." >&2
        missing=1
    fi
fi
if [ "$target" = "kubernetes" ]; then
    if ! command -v kubectl >/dev/null 2>&1; then
        echo "missing: kubectl, to tell which cluster stack '$stack' deploys to. Install it" \
             "and select the cluster's context ('kubectl config use-context NAME')." >&2
        missing=1
    elif ! context=$(kubectl config current-context 2>/dev/null) || [ -z "$context" ]; then
        echo "missing: a current Kubernetes context for stack '$stack' ('kubectl config" \
             "current-context' names none). Select one with 'kubectl config use-context NAME'." >&2
        missing=1
    fi
fi
if [ "$missing" -ne 0 ]; then
    echo "preflight failed. Without them you can still run 'make demo' (the dev stack's" \
         "workloads as local processes) and 'make render' (manifests under mocks)." >&2
    exit 1
fi
found="pulumi $(pulumi version)"
[ "$need_docker" -eq 1 ] && found="$found, docker $(docker version --format '{{.Server.Version}}')"
[ "$target" = "kubernetes" ] && found="$found, kubernetes context $context"
echo "preflight ok for stack '$stack': $found"
