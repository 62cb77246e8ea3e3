#!/usr/bin/env bash
# The whole test suite (the README's test command). Needs root: integration
# tests run the agent as PID 1 of private PID/mount/network namespaces.
# Pass pytest arguments to narrow it, e.g. `scripts/test.sh -m unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
