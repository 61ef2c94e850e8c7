#!/usr/bin/env bash
# Roll a new model version of one service out to one stack as a canary, raising its weight step
# by step while `mlops canary-check` says it does as well as stable, and rolling it back when it
# does not. Run by deploy-on-promotion.yml (GitHub Actions) and
# deploy-on-promotion.gitlab-ci.yml (GitLab CI) for prod; see docs/delivery.md.
#
# The canary is set in the stack's config of this checkout only (`pulumi config set`, never
# committed): stable pinned to OLD_VERSION, `rollout: canary` on NEW_VERSION at each weight.
# Promoting removes both overrides, so the committed config (`models:/<model>@champion`, which
# names NEW_VERSION by then) is what runs; rolling back leaves stable pinned to OLD_VERSION and
# no canary, and exits 1.
#
# Environment:
#   STACK, SERVICE                 the Pulumi stack and the ModelService (its `mlops:services` key)
#   MODEL                          the registered model (default: SERVICE)
#   OLD_VERSION, NEW_VERSION       the version serving now and the one rolled out
#   PROMETHEUS_URL                 a Prometheus scraping the service (MonitoringStack's)
#   CANARY_WEIGHTS                 the steps, percent (default: "10 25"; the `canary-weight-cap`
#                                  policy allows 25 unless configured otherwise)
#   CHECK_INTERVAL                 seconds between checks (default: 300)
#   MAX_WAITS                      checks answering 10 (too little traffic) tolerated per step
#                                  before giving up and rolling back (default: 6)
#   CANARY_CHECK_ARGS              more `mlops canary-check` options (window, tolerances)
set -euo pipefail
: "${STACK:?}" "${SERVICE:?}" "${OLD_VERSION:?}" "${NEW_VERSION:?}" "${PROMETHEUS_URL:?}"
MODEL="${MODEL:-$SERVICE}"
WEIGHTS="${CANARY_WEIGHTS:-10 25}"
INTERVAL="${CHECK_INTERVAL:-300}"
MAX_WAITS="${MAX_WAITS:-6}"
key="mlops:services.$SERVICE"

config() { pulumi config --stack "$STACK" "$@"; }
up() { pulumi up --yes --stack "$STACK"; }

roll_back() {
  echo "Rolling back: $MODEL version $NEW_VERSION ($1); stable stays on version $OLD_VERSION."
  config rm --path "$key.rollout"
  up
  exit 1
}

echo "Canary: $MODEL $OLD_VERSION -> $NEW_VERSION on $STACK, weights $WEIGHTS"
committed="$(config get --path "$key.modelUri" 2>/dev/null || true)"
config set --path "$key.modelUri" "models:/$MODEL/$OLD_VERSION"
config set --path "$key.rollout.kind" canary
config set --path "$key.rollout.modelUri" "models:/$MODEL/$NEW_VERSION"
for weight in $WEIGHTS; do
  config set --path "$key.rollout.weight" "$weight"
  up
  waits=0
  while :; do
    sleep "$INTERVAL"
    code=0
    # shellcheck disable=SC2086 # CANARY_CHECK_ARGS is a list of options
    mlops canary-check --prometheus "$PROMETHEUS_URL" --service "$SERVICE" \
      ${CANARY_CHECK_ARGS:-} || code=$?
    case "$code" in
      0) echo "Weight $weight %: the canary does as well as stable."; break ;;
      10)
        waits=$((waits + 1))
        if [ "$waits" -ge "$MAX_WAITS" ]; then
          roll_back "still too little traffic after $waits checks at $weight %"
        fi
        echo "Weight $weight %: too little traffic yet ($waits/$MAX_WAITS); waiting." ;;
      1) roll_back "worse than stable at $weight %" ;;
      *) roll_back "no verdict: mlops canary-check exited $code" ;;
    esac
  done
done
echo "Promoting: $MODEL version $NEW_VERSION serves all traffic."
config rm --path "$key.rollout"
if [ -n "$committed" ]; then
  config set --path "$key.modelUri" "$committed"
else
  config rm --path "$key.modelUri"
fi
# The committed model URI (an alias) must still name the version checked: if the alias moved
# again meanwhile, pin the checked one; the next run rolls the newer one out as a canary.
mlops plan --stack "$STACK" --out promote-plan.json
resolved="$(python3 "$(dirname "$0")/model_version.py" promote-plan.json "$SERVICE")"
if [ "$resolved" != "$NEW_VERSION" ]; then
  echo "The stack's model URI now names version '${resolved}', not $NEW_VERSION: pinning $NEW_VERSION."
  config set --path "$key.modelUri" "models:/$MODEL/$NEW_VERSION"
fi
up
