"""``python -m tests.harness ARGS``: ``dind-supervisor ARGS`` with test instruments.

- LOOPCHECK_OUT=path: both detectors of a blocked event loop (``loopcheck.py``),
  their findings appended to that file;
- INJECT_FAULTS=http,containers,gc: those parts crash once (``faults.py``).

The agent forked by PID 1 inherits them: they are installed before ``main``.
"""

from __future__ import annotations

import os
import sys

import supervisor  # first, as the real entry point: PID 1 blocks signals at this import
from tests.harness import faults, loopcheck

if "LOOPCHECK_OUT" in os.environ:
    loopcheck.install(os.environ["LOOPCHECK_OUT"], package=supervisor.__name__)
if os.environ.get("INJECT_FAULTS"):
    faults.install(os.environ["INJECT_FAULTS"].split(","),
                   after=float(os.environ.get("INJECT_FAULT_AFTER", "1")))

# After the instruments are in place.
from supervisor.entry import main

sys.argv[0] = "dind-supervisor"
sys.exit(main())
