"""12-factor settings: ``CTR_*`` environment variables, secrets from files, typed and checked.

``CtrSettings`` is the base of a service's settings (pydantic-settings): field ``db_url`` reads
``CTR_DB_URL``, or the stripped content of the file ``CTR_DB_URL_FILE`` names — Kubernetes mounts
secrets as files, and pointing at one keeps the value out of the process environment — else its
default. Keyword arguments win over both. A value that does not parse or fails a check raises
``InputError`` naming the variable, before the service binds a port:

>>> class Demo(CtrSettings):
...     deadline_ms: PositiveInt = 200
>>> Demo(deadline_ms=5).deadline_ms
5
>>> Demo(deadline_ms="soon")
Traceback (most recent call last):
ctr.errors.InputError: CTR_DEADLINE_MS must be a positive integer, got 'soon'

``env_or_file`` is the same rule for one variable, for commands that read a single setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ctr.errors import InputError

PREFIX = "CTR_"
PositiveInt = Annotated[int, Field(ge=1)]


def _read_secret(variable: str, path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise InputError(f"{variable}_FILE={path} cannot be read: {exc.strerror}") from exc


def env_or_file(name: str, default: str | None = None) -> str | None:
    """The value of ``name``, else the stripped content of the file ``name + "_FILE"`` names."""
    if name in os.environ:
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    return _read_secret(name, path) if path else default


class _SecretFiles(PydanticBaseSettingsSource):
    """``CTR_<FIELD>_FILE``: the field's value from the file it names (when ``CTR_<FIELD>`` is unset)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = PREFIX + field_name.upper()
        path = os.environ.get(f"{variable}_FILE")
        if variable in os.environ or not path:
            return None, field_name, False
        return _read_secret(variable, path), field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


def _describe(exc: ValidationError) -> str:
    """One line for the first problem, naming the ``CTR_`` variable."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    variable = PREFIX + field.upper()
    if error["type"] == "value_error":  # a check of the settings class, already worded for people
        return str(error["ctx"]["error"])
    if error["type"] == "greater_than_equal":
        return f"{field} ({variable}) must be at least {error['ctx']['ge']}, got {error['input']!r}"
    if error["type"] in ("int_parsing", "int_from_float", "int_type"):
        return f"{variable} must be a positive integer, got {error['input']!r}"
    return f"{variable}: {error['msg']}, got {error['input']!r}"


class CtrSettings(BaseSettings):
    """A service's settings (see the module docstring); ``InputError`` for a bad value."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InputError(_describe(exc)) from None

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """The environment's settings with ``overrides`` (those not None) on top."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _SecretFiles(settings_cls)
