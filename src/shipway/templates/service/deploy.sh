#!/usr/bin/env bash
# Roll {{project}} out to the version its environment's alias names (set by `shipway promote`):
# the first deployment serves it at once; later ones start a canary that the rollout controller
# advances step by step, or rolls back on its own when the candidate does worse than stable.
#
#   ./deploy.sh [more `shipway deploy` options, e.g. --steps 10,50,100 --step-duration 5m]
#
# MODEL (default {{project}}) and ENVIRONMENT (default prod) say what.
set -euo pipefail

MODEL="${MODEL:-{{project}}}"
shipway deploy "$MODEL" --env "${ENVIRONMENT:-prod}" "$@"
shipway rollout status "$MODEL" --env "${ENVIRONMENT:-prod}"
