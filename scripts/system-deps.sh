#!/bin/sh
# System packages the tests use: promtool/Prometheus, Alertmanager/amtool and PostgreSQL (run by
# end-to-end tests),
# and a Docker engine with debootstrap (the Docker target's containers run on a private dockerd;
# debootstrap builds the stand-in base image, see tests/docker_engine/).
set -eu
need=""
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v amtool >/dev/null 2>&1 || need="$need prometheus-alertmanager"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
[ -z "$need" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "need root to install:$need (apt-get install -y$need)" >&2; exit 1
fi
echo "installing:$need"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $need >/dev/null
