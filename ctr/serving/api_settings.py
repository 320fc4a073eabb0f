"""Settings of the score API: limits, addresses and keys, from ``CTR_*`` variables (12-factor).

``ApiSettings()`` reads ``CTR_<FIELD>`` (``CTR_<FIELD>_FILE`` for a secret in a file) with the
defaults below; keyword arguments win (``ctr api``'s flags). It refuses limits the service could
not run with — ``InputError`` naming the variable, before a port is bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import field_validator, model_validator
from pydantic_settings import NoDecode

from ctr.errors import InputError
from ctr.repository import MAX_BATCH_SIZE
from ctr.serving.exploration import Exploration
from ctr.settings import CtrSettings, PositiveInt


class ApiSettings(CtrSettings):
    """Configuration of one ``ctr api`` process."""

    triton: str = "localhost:8001"
    db_url: str = "sqlite:///ctr-events.db"
    max_candidates: PositiveInt = 1000
    max_body_bytes: PositiveInt = 1_000_000
    deadline_ms: PositiveInt = 200
    spool_dir: Path = Path("ctr-spool")
    spool_max_bytes: PositiveInt = 64 * 1024 * 1024
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()  # CTR_API_KEYS: comma-separated
    migrate: bool = True  # CTR_MIGRATE=0: leave the schema alone at start-up
    metrics_port: PositiveInt | None = None  # serve /metrics on its own port (then not on the API's)
    idempotency_window_s: PositiveInt = 600
    click_max_delay_s: PositiveInt = 86_400
    exploration: str = "none"  # CTR_EXPLORATION: none or epsilon:E (ctr.serving.exploration)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @model_validator(mode="after")
    def _servable(self) -> ApiSettings:
        if self.max_candidates > MAX_BATCH_SIZE:
            raise ValueError(
                f"max_candidates (CTR_MAX_CANDIDATES) must be at most {MAX_BATCH_SIZE}, Triton's max batch size; "
                f"got {self.max_candidates}"
            )
        if self.metrics_port is not None and self.metrics_port > 65535:
            raise ValueError(f"metrics_port (CTR_METRICS_PORT) must be a TCP port, got {self.metrics_port}")
        if any(not key.isascii() or not key.isprintable() for key in self.api_keys):
            raise ValueError("API keys (CTR_API_KEYS) must be printable ASCII")
        try:
            self.policy()  # CTR_EXPLORATION is checked before a port is bound
        except InputError as exc:
            raise ValueError(f"exploration: {exc}") from exc
        return self

    def policy(self) -> Exploration:
        """The serving policy of ``exploration``; ``InputError`` naming the variable if malformed."""
        return Exploration.parse(self.exploration)
