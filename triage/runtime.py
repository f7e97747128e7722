"""Process set-up shared by the commands: logging, and Prefect's embedded defaults."""

from __future__ import annotations

import logging
import os
import sys

from triage.config import Settings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("pynetdicom", "httpx", "prefect", "alembic", "aiosqlite", "highdicom"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def configure_prefect(settings: Settings) -> None:
    """Run on Prefect's ephemeral API with its database under TRIAGE_HOME, unless the operator
    pointed PREFECT_API_URL at a Prefect server. Must run before prefect is imported."""
    prefect_home = settings.home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
