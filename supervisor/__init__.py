"""dind-supervisor: the init and supervisor for Docker-in-Docker."""

from __future__ import annotations

__version__ = "0.1.0"
