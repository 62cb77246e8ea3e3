#!/usr/bin/env bash
# The fast part of the suite: the unit tests (our own logic, no dockerd, no
# root needed for most), in seconds. Collects only tests/unit, so the slower
# suites are not even imported. Installs the venv first if it is missing, or
# holds only the runtime profile (scripts/run-local.sh's: no pytest).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qs '^dev ' .venv/.dind-supervisor-installed || scripts/setup.sh
exec .venv/bin/python -m pytest tests/unit -q "$@"
