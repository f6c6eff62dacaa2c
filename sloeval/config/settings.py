"""Process settings from ``SLOEVAL_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sloeval.config.selectors import is_metric_name
from sloeval.errors import SloevalError

ENV_PREFIX = "SLOEVAL_"


class SettingsError(SloevalError):
    """Invalid settings, with a one-line message naming the variable."""


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


class SettingsBase(BaseSettings):
    """``SLOEVAL_*`` variables. A secret field ``x`` (``SecretStr``) may instead come from the file that
    the field ``x_file`` names (``SLOEVAL_X_FILE``, for container secrets); an empty file counts as unset."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    @model_validator(mode="after")
    def _read_secret_files(self) -> Self:
        fields = type(self).model_fields
        for name in fields:
            if f"{name}_file" not in fields:
                continue
            file_path: Path | None = getattr(self, f"{name}_file")
            if file_path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"set only one of {ENV_PREFIX}{name.upper()} and {ENV_PREFIX}{name.upper()}_FILE")
            try:
                secret = file_path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read {ENV_PREFIX}{name.upper()}_FILE: {exc.strerror}") from None
            if secret:  # an empty file (an unused channel's placeholder secret) counts as unset
                object.__setattr__(self, name, SecretStr(secret))
        return self

    @classmethod
    def load(cls, **overrides: object) -> Self:
        """Read from the environment; raise SettingsError with a one-line message naming the variable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            loc = [str(p) for p in error["loc"]]
            variable = f"{ENV_PREFIX}{loc[0].upper()}" if loc else "settings"
            message = error["msg"].removeprefix("Value error, ")
            raise SettingsError(" ".join(f"{variable}: {message}".split())) from None


def http_url(value: str) -> str:
    """A base URL setting: http(s) only, without a trailing slash."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


def email_addresses(value: str | list[str]) -> str | list[str]:
    """One plain address or a list of them (no display names, no header tricks)."""
    for address in [value] if isinstance(value, str) else value:
        if "@" not in address or any(ch in address for ch in "\r\n<>,; "):
            raise ValueError(f"{address!r} is not a plain email address")
    return value


class Settings(SettingsBase):
    """What the daemon reads from its environment, but for each channel's own settings (``alerting.channels``)."""

    prometheus_url: str = Field("http://localhost:9090", description="Base URL of the Prometheus HTTP API.")
    slo_file: Path = Field(Path("config/slos.yaml"), description="Path of the SLO file.")
    eval_interval: float = Field(20.0, gt=0, le=86400, description="Seconds between evaluation cycles.")
    http_host: str = Field("0.0.0.0", description="Address for /metrics, /healthz and /readyz.")  # noqa: S104
    http_port: int = Field(9180, ge=0, le=65535, description="Port for /metrics, /healthz and /readyz.")
    http_max_requests_per_second: float = Field(
        100.0, ge=0, description="Pace of the HTTP endpoints (0 = unpaced); a flood waits instead of starving the loop."
    )
    metric_prefix: str = Field("samokoder", description="Prefix of the exported SLO metrics.")
    log_format: Literal["json", "console"] = Field("json", description="Log output format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    query_timeout: float = Field(10.0, gt=0, le=600, description="Seconds one PromQL query may take.")
    query_attempts: int = Field(3, ge=1, le=10, description="Tries per query when a retry can help.")
    query_concurrency: int = Field(8, ge=1, le=256, description="Queries in flight at once.")
    long_window_refresh: float = Field(
        300.0,
        ge=0,
        le=3600,
        description="Seconds between evaluations of windows of 8640 times that or more (30d and longer at 300); "
        "shorter windows are evaluated every cycle. 0 evaluates every window every cycle.",
    )
    ready_max_failed_cycles: int = Field(
        3, ge=1, description="Cycles in a row that evaluate no SLO before /readyz fails."
    )
    prometheus_username: str | None = Field(None, description="Basic auth user for Prometheus.")
    prometheus_password: SecretStr | None = Field(None, description="Basic auth password.")
    prometheus_password_file: Path | None = Field(None, description="File holding the basic auth password.")
    prometheus_bearer_token: SecretStr | None = Field(None, description="Bearer token for Prometheus.")
    prometheus_bearer_token_file: Path | None = Field(None, description="File holding the bearer token.")
    prometheus_ca_file: Path | None = Field(None, description="CA bundle to verify Prometheus's TLS certificate.")
    prometheus_tls_verify: bool = Field(True, description="Verify Prometheus's TLS certificate.")
    state_dir: Path = Field(Path("sloeval-state"), description="Where alert state and the outbox persist.")
    stale_alert_after: float = Field(600.0, gt=0, description="Seconds of missing data before SLODataMissing.")
    notify_deadline: float = Field(3600.0, gt=0, description="Seconds a message is retried before it is dropped.")
    notify_timeout: float = Field(15.0, gt=0, le=300, description="Seconds one delivery attempt may take.")

    _prometheus_url = field_validator("prometheus_url")(http_url)

    @field_validator("metric_prefix")
    @classmethod
    def _metric_prefix(cls, value: str) -> str:
        if not is_metric_name(value) or ":" in value:
            raise ValueError("must be a metric name prefix such as 'samokoder'")
        return value

    @property
    def prometheus_url_for_logs(self) -> str:
        """The URL without any user:password part."""
        scheme, sep, rest = self.prometheus_url.partition("://")
        host, slash, path = rest.partition("/")
        if "@" in host:
            host = "***@" + host.rsplit("@", 1)[1]
        return f"{scheme}{sep}{host}{slash}{path}"

    @model_validator(mode="after")
    def _one_prometheus_auth(self) -> Settings:
        password = self.prometheus_password is not None or self.prometheus_password_file is not None
        bearer = self.prometheus_bearer_token is not None or self.prometheus_bearer_token_file is not None
        if password and self.prometheus_username is None:
            raise ValueError("a Prometheus password needs SLOEVAL_PROMETHEUS_USERNAME too")
        if self.prometheus_username is not None and bearer:
            raise ValueError("use either basic auth (username/password) or a bearer token for Prometheus, not both")
        return self


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError with a one-line message."""
    return Settings.load(**overrides)
