#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what
# is missing (scripts/setup.sh), then ruff, mypy --strict and every test:
# unit, integration (real dockerd, the agent as PID 1 of private namespaces),
# e2e (real nested Docker-in-Docker) and chaos.
# Extra arguments go to pytest. The fast part alone: scripts/test-fast.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
.venv/bin/ruff check supervisor tests bench scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
