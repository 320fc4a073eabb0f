"""Logging setup: one line per event on stderr, JSON lines when ``CTR_LOG_JSON=1``."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once (level from ``CTR_LOG_LEVEL``, default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("CTR_LOG_JSON") == "1":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("CTR_LOG_LEVEL", "INFO"))
    for chatty in ("alembic", "httpx", "kfp", "evidently"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
