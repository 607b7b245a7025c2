#!/usr/bin/env bash
# The main job, embedded: set up, start the API and one Celery worker on SQLite with a
# folder as the broker, submit examples/mnist1d-kd.json with `distill`, watch it, print the
# result table and download the student. Override the job: scripts/demo.sh other-spec.json
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

spec=${1:-examples/mnist1d-kd.json}
export DISTILL_HOME=${DISTILL_HOME:-var/demo}
port=${DISTILL_PORT:-8000}
mkdir -p "$DISTILL_HOME"

# No `alembic upgrade head`: on SQLite the API (and the worker) migrate the database as they start.
.venv/bin/uvicorn app.main:app --host 127.0.0.1 --port "$port" >"$DISTILL_HOME/api.log" 2>&1 &
api=$!
.venv/bin/celery -A worker.celery_app worker --concurrency 1 --loglevel INFO \
    >"$DISTILL_HOME/worker.log" 2>&1 &
worker=$!
trap 'kill $api $worker 2>/dev/null; wait 2>/dev/null' EXIT
echo "API on http://127.0.0.1:$port (docs at /docs); logs in $DISTILL_HOME/"

# The client: `distill` (app/cli) reads the key the API wrote to $DISTILL_HOME/api-key.
export DISTILL_URL="http://127.0.0.1:$port"
.venv/bin/distill ready --timeout 60
job=$(.venv/bin/distill submit "$spec" --quiet)
.venv/bin/distill watch "$job"
.venv/bin/distill download "$job" "$DISTILL_HOME/out"
