"""``dind-supervisor certs generate|show|rotate``: placeholder until TLS lands."""

from __future__ import annotations

import sys
from pathlib import Path

from supervisor.config import Config
from supervisor.errors import EXIT_USAGE


def run_certs_command(action: str, *, certdir: Path | None, cfg: Config, as_json: bool) -> int:
    print(f"dind-supervisor: certs {action}: not available in this build", file=sys.stderr)
    return EXIT_USAGE
