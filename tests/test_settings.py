import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloeval.alerting.channels import load_channel_settings, settings_types
from sloeval.alerting.channels.smtp import EmailSettings
from sloeval.alerting.channels.telegram import TelegramSettings
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
