#!/usr/bin/env bash
# The whole test suite. Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on
# 127.0.0.1:6379; .ci/run starts them when they are not answering.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest "$@"
