"""``python -m supervisor``: the same as the ``dind-supervisor`` command."""

from __future__ import annotations

import sys

from supervisor.entry import main

sys.exit(main())
