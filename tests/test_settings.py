import os
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloeval.alerting.channels import load_channel_settings, settings_types
from sloeval.alerting.channels.smtp import EmailSettings
from sloeval.alerting.channels.telegram import TelegramSettings
from sloeval.cli import main
from sloeval.config.settings import Settings, SettingsError, load_settings

FIELDS = sorted({name for model in settings_types() for name in model.model_fields})


def load_all() -> tuple[Settings, TelegramSettings, EmailSettings]:
    """What the CLI reads at start: the daemon's settings and every channel's."""
    settings, channels = load_settings(), load_channel_settings()
    telegram, email = channels["telegram"], channels["email"]
    assert isinstance(telegram, TelegramSettings)
    assert isinstance(email, EmailSettings)
    return settings, telegram, email


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SLOEVAL_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s, telegram, email = load_all()
    assert s.prometheus_url == "http://localhost:9090"
    assert s.eval_interval == 20
    assert (s.http_host, s.http_port) == ("0.0.0.0", 9180)
    assert s.metric_prefix == "samokoder"
    assert s.prometheus_tls_verify
    assert email.smtp_tls == "starttls"
    assert email.smtp_port_or_default == 587
    assert not telegram.enabled
    assert not email.enabled


def test_secret_files_and_masking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("12345:very-secret-token\n")
    monkeypatch.setenv("SLOEVAL_TELEGRAM_BOT_TOKEN_FILE", str(token))
    monkeypatch.setenv("SLOEVAL_TELEGRAM_CHAT_IDS", "1, -1002")
    _, s, _ = load_all()
    assert s.telegram_bot_token is not None
    assert s.telegram_bot_token.get_secret_value() == "12345:very-secret-token"
    assert s.telegram_chat_ids == ["1", "-1002"]
    assert "very-secret-token" not in repr(s)
    assert "very-secret-token" not in str(s.model_dump())


def test_empty_secret_file_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose mounts every secret; an unused channel's file stays empty and must not enable it."""
    empty = tmp_path / "telegram_bot_token"
    empty.write_text("\n")
    monkeypatch.setenv("SLOEVAL_TELEGRAM_BOT_TOKEN_FILE", str(empty))
    monkeypatch.setenv("SLOEVAL_TELEGRAM_CHAT_IDS", "42")
    _, s, _ = load_all()
    assert s.telegram_bot_token is None
    assert not s.enabled


def test_both_secret_and_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw-one")
    monkeypatch.setenv("SLOEVAL_SMTP_PASSWORD", "pw-two")
    monkeypatch.setenv("SLOEVAL_SMTP_PASSWORD_FILE", str(secret))
    with pytest.raises(SettingsError) as info:
        load_all()
    assert "SLOEVAL_SMTP_PASSWORD" in str(info.value)
    assert "pw-one" not in str(info.value)
    assert "pw-two" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SLOEVAL_EVAL_INTERVAL", "0", "SLOEVAL_EVAL_INTERVAL"),
        ("SLOEVAL_EVAL_INTERVAL", "soon", "SLOEVAL_EVAL_INTERVAL"),
        ("SLOEVAL_HTTP_PORT", "70000", "SLOEVAL_HTTP_PORT"),
        ("SLOEVAL_PROMETHEUS_URL", "prometheus:9090", "http://"),
        ("SLOEVAL_PROMETHEUS_URL", "http://127.0.0.1:99999", "SLOEVAL_PROMETHEUS_URL: port 99999"),
        ("SLOEVAL_PROMETHEUS_URL", "http://xn--a:9090", "not a valid internationalised host name"),
        ("SLOEVAL_PROMETHEUS_URL", "http://prometheus:9090/" + "a" * 70_000, "the limit is 2048"),
        ("SLOEVAL_PROMETHEUS_URL", "http://127.0.0.1:0", "SLOEVAL_PROMETHEUS_URL: port 0"),
        ("SLOEVAL_PROMETHEUS_URL", "http://prometheus:90x", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "http://:9090", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "https://", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "http://[zz]:9090", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "http://[::1:9090", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "http://10.0.0.300:9090", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "http://prom\theus:9090", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "http://prom etheus:9090", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_PROMETHEUS_URL", "http://prometheus:9090?tenant=a", "SLOEVAL_PROMETHEUS_URL"),
        ("SLOEVAL_LONG_WINDOW_MIN", "soon", "SLOEVAL_LONG_WINDOW_MIN"),
        ("SLOEVAL_METRIC_PREFIX", "bad-prefix", "SLOEVAL_METRIC_PREFIX"),
        ("SLOEVAL_LOG_FORMAT", "xml", "SLOEVAL_LOG_FORMAT"),
        ("SLOEVAL_SMTP_TLS", "maybe", "SLOEVAL_SMTP_TLS"),
        ("SLOEVAL_EMAIL_TO", "a@b.c,evil\r\nBcc: x@y.z", "SLOEVAL_EMAIL_TO"),
        ("SLOEVAL_TELEGRAM_BOT_TOKEN_FILE", "/nonexistent/token", "cannot read"),
    ],
)
def test_bad_settings_give_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_all()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=30).filter(lambda v: "\x00" not in v), max_size=4))
def test_fuzzed_environment_loads_or_fails_with_one_line(values: dict[str, str]) -> None:
    env = {f"SLOEVAL_{k.upper()}": v for k, v in values.items() if not k.endswith("_file")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        load_all()
    except SettingsError as exc:
        assert "\n" not in str(exc)
        assert "SLOEVAL_" in str(exc)  # names the variable(s), also for rules that span two
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_long_window_settings() -> None:
    s = load_settings()
    assert (s.long_window_min, s.long_window_refresh) == (30 * 86400, 300)  # 30d cached, refreshed every 5 min
    assert load_settings(long_window_min="7d").long_window_min == 7 * 86400
    assert Settings.model_fields["long_window_min"].description
    assert "SLOEVAL_LONG_WINDOW_MIN" in (Settings.model_fields["long_window_refresh"].description or "")


@pytest.mark.parametrize("command", [["check"], ["eval"]])
def test_cli_rejects_a_prometheus_url_httpx_cannot_use(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text("service: s\nslos:\n  - name: a\n    objective: 99\n    ratio: {bad: b, total: t}\n")
    monkeypatch.setenv("SLOEVAL_PROMETHEUS_URL", "http://127.0.0.1:99999")
    assert main([*command, "-c", str(slo_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("sloeval: invalid settings: SLOEVAL_PROMETHEUS_URL: ")
    assert err.count("\n") == 1


URL_CHARACTERS = st.sampled_from([*"az09.-_:@[]/?#%+ \t", "\u00e4", "\x00", "::1", "99999", "65535", "0"])


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["http://", "https://"]), st.lists(URL_CHARACTERS, max_size=12).map("".join))
def test_every_accepted_prometheus_url_is_one_httpx_can_query(scheme: str, rest: str) -> None:
    try:
        url = load_settings(prometheus_url=scheme + rest).prometheus_url
    except SettingsError as exc:
        assert str(exc).startswith("SLOEVAL_PROMETHEUS_URL: ")
        assert "\n" not in str(exc)
        return
    parsed = httpx.URL(url + "/api/v1/query")  # what the client sends to: httpx must take it
    assert parsed.scheme in ("http", "https")
    assert parsed.host
    assert parsed.port is None or 0 < parsed.port < 65536
    assert not parsed.query
    assert not parsed.fragment


def test_database_url_file_that_is_empty_is_refused_not_taken_for_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty URL file would make every replica lead on its own SQLite, and each would page."""
    empty = tmp_path / "database_url"
    empty.write_text("\n")
    monkeypatch.setenv("SLOEVAL_DATABASE_URL_FILE", str(empty))
    with pytest.raises(SettingsError, match="SLOEVAL_DATABASE_URL_FILE is empty"):
        load_settings()
    url = tmp_path / "database_url_2"
    url.write_text("postgresql://sloeval:s3cr3t-pw@db:5432/sloeval\n")
    monkeypatch.setenv("SLOEVAL_DATABASE_URL_FILE", str(url))
    settings = load_settings()
    assert settings.database_url is not None
    assert "s3cr3t-pw" not in repr(settings)


def test_database_url_must_be_postgresql_and_errors_never_show_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOEVAL_DATABASE_URL", "mysql://sloeval:s3cr3t-pw@db/sloeval")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "postgresql://" in str(info.value)
    assert "s3cr3t-pw" not in str(info.value)
