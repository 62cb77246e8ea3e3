"""``python -m tests.harness ARGS``: ``dind-supervisor ARGS`` with test instruments.

- LOOPCHECK_OUT=path: both detectors of a blocked event loop (``loopcheck.py``),
  their findings appended to that file;
- INJECT_FAULTS=http,containers,gc: those parts crash once (``faults.py``);
- HARNESS_DIR with HARNESS_PAUSE, HARNESS_CRASH or HARNESS_CRASH_ON_SIGNAL: the
  agent waits or crashes once at a point of its lifecycle (``pauses.py``).

The agent forked by PID 1 inherits them: they are installed before ``main``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import supervisor  # first, as the real entry point: PID 1 blocks signals at this import
from tests.harness import faults, loopcheck, pauses

if "LOOPCHECK_OUT" in os.environ:
    loopcheck.install(os.environ["LOOPCHECK_OUT"], package=supervisor.__name__)
if os.environ.get("INJECT_FAULTS"):
    faults.install(os.environ["INJECT_FAULTS"].split(","),
                   after=float(os.environ.get("INJECT_FAULT_AFTER", "1")))

if os.environ.get("HARNESS_DIR"):
    pauses.install(Path(os.environ["HARNESS_DIR"]), pause=os.environ.get("HARNESS_PAUSE"),
                   crash=os.environ.get("HARNESS_CRASH"),
                   crash_on_signal=os.environ.get("HARNESS_CRASH_ON_SIGNAL"))

# After the instruments are in place.
from supervisor.entry import main

sys.argv[0] = "dind-supervisor"
sys.exit(main())
