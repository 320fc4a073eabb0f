"""Settings of the score API: limits, addresses and keys, from ``CTR_*`` variables (12-factor).

``ApiSettings.from_env()`` reads the environment (``*_FILE`` for secrets); the constructor
refuses limits the service could not run with (``InputError``, before a port is bound).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctr.errors import InputError
from ctr.repository import MAX_BATCH_SIZE
from ctr.settings import env_int, env_or_file


@dataclass(frozen=True)
class ApiSettings:
    """Configuration; ``from_env`` reads ``CTR_*`` variables (12-factor)."""

    triton: str = "localhost:8001"
    db_url: str = "sqlite:///ctr-events.db"
    max_candidates: int = 1000
    max_body_bytes: int = 1_000_000
    deadline_ms: int = 200
    spool_dir: Path = Path("ctr-spool")
    spool_max_bytes: int = 64 * 1024 * 1024
    api_keys: tuple[str, ...] = field(default_factory=tuple)
    migrate: bool = True
    metrics_port: int | None = None  # serve /metrics on its own port (then not on the API's)
    idempotency_window_s: int = 600
    click_max_delay_s: int = 86_400

    def __post_init__(self) -> None:
        """Refuse limits the service could not run with (``InputError``, before it binds a port)."""
        for name in (
            "max_candidates",
            "max_body_bytes",
            "deadline_ms",
            "spool_max_bytes",
            "idempotency_window_s",
            "click_max_delay_s",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"{name} (CTR_{name.upper()}) must be at least 1, got {getattr(self, name)}")
        if self.max_candidates > MAX_BATCH_SIZE:
            raise InputError(
                f"max_candidates (CTR_MAX_CANDIDATES) must be at most {MAX_BATCH_SIZE}, Triton's max batch size; "
                f"got {self.max_candidates}"
            )
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise InputError(f"metrics_port (CTR_METRICS_PORT) must be a TCP port, got {self.metrics_port}")
        for key in self.api_keys:
            if not key.isascii() or not key.isprintable():
                raise InputError("API keys (CTR_API_KEYS) must be printable ASCII")

    @classmethod
    def from_env(cls, **overrides: Any) -> ApiSettings:
        env = os.environ
        values: dict[str, Any] = {
            "triton": env.get("CTR_TRITON", cls.triton),
            "db_url": env_or_file("CTR_DB_URL", cls.db_url),
            "max_candidates": env_int("CTR_MAX_CANDIDATES", cls.max_candidates),
            "max_body_bytes": env_int("CTR_MAX_BODY_BYTES", cls.max_body_bytes),
            "deadline_ms": env_int("CTR_DEADLINE_MS", cls.deadline_ms),
            "spool_dir": Path(env.get("CTR_SPOOL_DIR", str(cls.spool_dir))),
            "spool_max_bytes": env_int("CTR_SPOOL_MAX_BYTES", cls.spool_max_bytes),
            "api_keys": tuple(k.strip() for k in (env_or_file("CTR_API_KEYS") or "").split(",") if k.strip()),
            "migrate": env.get("CTR_MIGRATE", "1") != "0",
            "metrics_port": env_int("CTR_METRICS_PORT", 0) or None,
            "idempotency_window_s": env_int("CTR_IDEMPOTENCY_WINDOW_S", cls.idempotency_window_s),
            "click_max_delay_s": env_int("CTR_CLICK_MAX_DELAY_S", cls.click_max_delay_s),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
