#!/usr/bin/env bash
# Serve every deployment of an environment on http://$HOST:$PORT and follow it: rollouts started
# by ./deploy.sh reach this server within a second, each version loaded and warmed before it gets
# traffic. Leave it running (or run it in a container, with HOST=0.0.0.0).
#
#   ./serve.sh [more `shipway serve` options, e.g. --max-batch-size 32]
#
# ENVIRONMENT (default prod), HOST (default 127.0.0.1) and PORT (default 8080) say where.
set -euo pipefail

exec shipway serve --env "${ENVIRONMENT:-prod}" --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}" "$@"
