"""Process settings from ``SLOEVAL_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sloeval.config.durations import parse_duration
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


_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")


MAX_URL_LENGTH = 2048


def http_url(value: str) -> str:
    """A base URL setting: http(s) only, a host and port a client can connect to, no query or
    fragment (paths are appended to it), without a trailing slash. Checked here so that a URL the
    HTTP client would refuse is a settings error, not a crash at the first request."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"is {len(value)} characters long; the limit is {MAX_URL_LENGTH}")
    if any(not ("!" <= char <= "~") for char in value):
        raise ValueError("must be printable ASCII without spaces (write a host name in its xn-- form)")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    host = parts.hostname
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError("must not have a query (?...) or a fragment (#...)")
    if not host:
        raise ValueError("has no host, e.g. http://prometheus:9090")
    address = parts.netloc.rpartition("@")[2]
    if address.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    elif not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name")
    else:
        for label in host.split("."):
            if label.lower().startswith("xn--"):
                try:
                    label.encode("ascii").decode("idna")
                except UnicodeError:
                    raise ValueError(f"{host!r} is not a valid internationalised host name") from None
    _, colon, port = (address[address.find("]") + 1 :] if address.startswith("[") else address).partition(":")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"port {port or '(empty)'} is not a TCP port (1-65535)")
    return value.rstrip("/")


def duration_seconds(value: object) -> object:
    """A duration setting: ``30d``, ``1h30m`` (or whole seconds) as seconds."""
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isdigit() else parse_duration(text)
    return value


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
    long_window_min: Annotated[int, BeforeValidator(duration_seconds)] = Field(
        "30d",  # validated into seconds: 2592000
        validate_default=True,
        gt=0,
        description="Windows at least this long (a duration such as 30d or 7d) are long: evaluated every "
        "SLOEVAL_LONG_WINDOW_REFRESH seconds instead of every cycle. Shorter windows are evaluated every cycle.",
    )
    long_window_refresh: float = Field(
        300.0,
        ge=0,
        le=3600,
        description="Seconds between evaluations of the long windows (SLOEVAL_LONG_WINDOW_MIN and longer), each "
        "at a phase of its own; a refresh the cycle deadline cuts off leaves the SLOs that read it stale for that "
        "cycle. 0 evaluates every window every cycle.",
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
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:password@host/db) for alert state shared by several"
        " replicas, one of which leads; unset: SQLite in SLOEVAL_STATE_DIR for one replica.",
    )
    database_url_file: Path | None = Field(None, description="File holding the PostgreSQL URL (it has a password).")
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
    def _database_url(self) -> Settings:
        # After the secret files are read (SettingsBase's validator runs first): an empty file would
        # otherwise mean "no database", and every replica would lead on its own SQLite and page.
        if self.database_url_file is not None and self.database_url is None:
            raise ValueError("SLOEVAL_DATABASE_URL_FILE is empty: give the PostgreSQL URL, or unset it for SQLite")
        if self.database_url is not None:
            scheme = self.database_url.get_secret_value().partition("://")[0]
            if scheme not in ("postgresql", "postgres"):
                raise ValueError("SLOEVAL_DATABASE_URL must be a postgresql:// URL")
        return self

    @model_validator(mode="after")
    def _one_prometheus_auth(self) -> Settings:
        password = self.prometheus_password is not None or self.prometheus_password_file is not None
        bearer = self.prometheus_bearer_token is not None or self.prometheus_bearer_token_file is not None
        if password and self.prometheus_username is None:
            raise ValueError("a Prometheus password needs SLOEVAL_PROMETHEUS_USERNAME too")
        if self.prometheus_username is not None and bearer:
            raise ValueError(
                "use either basic auth (SLOEVAL_PROMETHEUS_USERNAME and _PASSWORD) or SLOEVAL_PROMETHEUS_BEARER_TOKEN,"
                " not both"
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError with a one-line message."""
    return Settings.load(**overrides)
