"""Telegram and email channels through the real clients against the loopback peers in devtools."""

from __future__ import annotations

import html
import socket
import textwrap
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio
import pytest

from devtools.smtp_server import ReceivedMail, SmtpServer
from devtools.telegram_stub import BotApiStub
from sloeval.alerting.channels import DeliveryError
from sloeval.alerting.channels.smtp import EmailChannel, email_subject, render_plain
from sloeval.alerting.channels.telegram import TelegramChannel, render_telegram
from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.messages import RenderedMessage
from sloeval.alerting.model import AlertKey, Facts, Notification
from sloeval.config.slo_file import SLODefinition, parse_slo_text

CHAT = "4242"
OTHER_CHAT = "-1001"
TOKEN = "987654:SeCrEt-Token_abcDEF"
HOSTILE = "<b>&\"'"
SENDER = "sloeval@example.test"
ONCALL = "oncall@example.test"
USER, PASSWORD = "alerts", "s3cret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stub() -> Iterator[BotApiStub]:
    with BotApiStub(TOKEN) as server:
        yield server


def slo_definition() -> SLODefinition:
    text = textwrap.dedent(
        """\
        service: api
        period: 30d
        slos:
          - name: api-errors
            objective: 99.9
            ratio: {bad: 'req_total{code=~"5.."}', total: req_total, group_by: [endpoint, region]}
            dashboard_url: http://grafana.test/d/x?a=1&b=2
        """
    )
    [slo] = parse_slo_text(text, Path("slos.yaml")).slos
    return slo


def message_group(channel: str, labels: tuple[tuple[str, str], ...]) -> MessageGroup:
    facts = Facts(
        condition="burn rate over 1h and 5m above 14.4x",
        burn_rates=(("1h", 20.0), ("5m", 31.5)),
        factor=14.4,
        sli=(("1h", 0.98), ("5m", 0.97)),
        objective=0.999,
        budget_remaining_percent=42.0,
        exhausted_in_seconds=7200.0,
    )
    key = AlertKey("api-errors", "FastBurn", labels)
    notification = Notification(key, "critical", "firing", facts, at=1_700_000_000.0, since=1_700_000_000.0)
    return MessageGroup(channel, "api-errors", labels, (notification,))


def telegram_channel(stub: BotApiStub, **kwargs: Any) -> TelegramChannel:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("min_interval", 0.0)
    return TelegramChannel(stub.token, (CHAT,), api_url=stub.url, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def send_failing(
    channel: TelegramChannel | EmailChannel, recipient: str, message: RenderedMessage
) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await channel.send(recipient, message)
    return info.value


PLAIN = RenderedMessage(subject="FIRING: api-errors", text="FIRING: api-errors")

# --- Telegram ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_telegram_html_arrives_exactly(stub: BotApiStub) -> None:
    rendered = render_telegram(
        message_group("telegram", (("endpoint", HOSTILE), ("region", "zürich ✓"))), slo_definition()
    )
    assert html.escape(HOSTILE) in rendered.text
    assert HOSTILE not in rendered.text
    channel = telegram_channel(stub)
    try:
        await channel.send(CHAT, rendered)
        await channel.send(CHAT, RenderedMessage(subject="s", text=f"<b>{html.escape(HOSTILE)}</b> &amp; more"))
    finally:
        await channel.aclose()
    first, second = stub.wait_for_messages(2, timeout=2)
    assert (first.chat_id, first.parse_mode, first.text) == (CHAT, "HTML", rendered.text)
    assert second.text == "<b>&lt;b&gt;&amp;&quot;&#x27;</b> &amp; more"
    assert first.raw["link_preview_options"]  # previews of dashboard links are switched off
    assert [method for _, method, _ in stub.requests] == ["getMe", "sendMessage", "sendMessage"]


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # raised inside PTB for the int form
@pytest.mark.anyio
@pytest.mark.parametrize("timedelta_form", [False, True], ids=["int", "timedelta"])
async def test_telegram_429_carries_retry_after(
    stub: BotApiStub, monkeypatch: pytest.MonkeyPatch, timedelta_form: bool
) -> None:
    if timedelta_form:
        monkeypatch.setenv("PTB_TIMEDELTA", "true")
    stub.fail_next("sendMessage", status=429, retry_after=3)
    channel = telegram_channel(stub)
    try:
        error = await send_failing(channel, CHAT, PLAIN)
        assert error.retry_after == 3
        assert error.permanent is False
        await channel.send(CHAT, PLAIN)
    finally:
        await channel.aclose()
    assert len(stub.sent()) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "permanent", "words"),
    [
        (403, True, "refused"),
        (400, True, "rejected"),
        (404, True, "refused"),
        (500, False, "error"),
        (502, False, "error"),
    ],
)
async def test_telegram_error_kinds(stub: BotApiStub, status: int, permanent: bool, words: str) -> None:
    stub.fail_next("sendMessage", status=status)
    channel = telegram_channel(stub)
    try:
        error = await send_failing(channel, CHAT, PLAIN)
    finally:
        await channel.aclose()
    assert error.permanent is permanent
    assert error.retry_after is None
    assert words in str(error)
    assert stub.sent() == []


@pytest.mark.anyio
async def test_telegram_bad_html_is_permanent(stub: BotApiStub) -> None:
    channel = telegram_channel(stub)
    try:
        error = await send_failing(channel, CHAT, RenderedMessage(subject="s", text="latency < 2s"))
    finally:
        await channel.aclose()
    assert error.permanent is True
    assert "parse entities" in str(error).lower()
    assert stub.sent() == []


@pytest.mark.anyio
async def test_telegram_read_timeout_is_temporary(stub: BotApiStub) -> None:
    channel = telegram_channel(stub, timeout=0.3)
    try:
        await channel.send(CHAT, PLAIN)  # initialised before the server slows down
        stub.set_delay(1.0)
        error = await send_failing(channel, CHAT, PLAIN)
        stub.set_delay(0)
    finally:
        await channel.aclose()
    assert error.permanent is False
    assert error.retry_after is None
    assert "in time" in str(error)


UNREADABLE_RESULTS = {
    "string": "garbage",
    "null": None,
    "list": [1, 2],
    "empty-object": {},
    "chat-without-type": {"message_id": 1, "chat": {"id": 1}, "date": 1},
    "bad-date": {"message_id": 1, "chat": {"id": 1, "type": "private"}, "date": "soon"},
    "true": True,
}


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["sendMessage", "getMe"])
@pytest.mark.parametrize("result", UNREADABLE_RESULTS.values(), ids=UNREADABLE_RESULTS.keys())
async def test_telegram_ok_answer_with_unreadable_result_is_a_delivery_error(
    stub: BotApiStub, method: str, result: object
) -> None:
    stub.answer_next(method, result=result)
    channel = telegram_channel(stub)
    try:
        error = await send_failing(channel, CHAT, PLAIN)
        assert error.__cause__ is None
        await channel.send(CHAT, PLAIN)  # the next, readable answer goes through
    finally:
        await channel.aclose()
    assert error.permanent is False  # "ok" may mean it was sent: at least once, like a timeout
    assert str(error).startswith("Telegram answered with a result that cannot be read (")
    assert "\n" not in str(error)
    assert TOKEN not in str(error)
    assert len(stub.sent()) == 1


@pytest.mark.anyio
async def test_telegram_unreachable_is_temporary() -> None:
    channel = TelegramChannel(TOKEN, (CHAT,), api_url=f"http://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        error = await send_failing(channel, CHAT, PLAIN)
    finally:
        await channel.aclose()
    assert error.permanent is False
    assert TOKEN not in str(error)


@pytest.mark.anyio
async def test_telegram_wrong_token_is_permanent(stub: BotApiStub) -> None:
    wrong = "111:WrongToken"
    channel = TelegramChannel(wrong, (CHAT,), api_url=stub.url, timeout=2.0)
    try:
        error = await send_failing(channel, CHAT, PLAIN)
    finally:
        await channel.aclose()
    assert error.permanent is True
    assert wrong not in str(error)
    assert stub.sent() == []
    assert [token for token, _, _ in stub.requests] == [wrong]


@pytest.mark.anyio
async def test_telegram_min_interval_per_chat(stub: BotApiStub) -> None:
    channel = telegram_channel(stub, min_interval=0.3)
    try:
        await channel.send(CHAT, PLAIN)
        await channel.send(CHAT, PLAIN)
    finally:
        await channel.aclose()
    gap = stub.min_gap_per_chat()
    assert gap is not None
    assert gap >= 0.3 - 0.01


@pytest.mark.anyio
async def test_telegram_min_interval_counts_failed_attempts(stub: BotApiStub) -> None:
    stub.fail_next("sendMessage", status=500)
    channel = telegram_channel(stub, min_interval=0.3)
    try:
        await send_failing(channel, CHAT, PLAIN)
        await channel.send(CHAT, PLAIN)
    finally:
        await channel.aclose()
    gap = stub.min_gap_per_chat()
    assert gap is not None
    assert gap >= 0.3 - 0.01


@pytest.mark.anyio
async def test_telegram_chats_do_not_wait_for_each_other(stub: BotApiStub) -> None:
    interval = 1.0
    channel = TelegramChannel(stub.token, (CHAT, OTHER_CHAT), api_url=stub.url, timeout=2.0, min_interval=interval)
    try:
        await channel.send(CHAT, RenderedMessage("a1", "a1"))
        async with anyio.create_task_group() as group:
            group.start_soon(channel.send, CHAT, RenderedMessage("a2", "a2"))
            group.start_soon(channel.send, OTHER_CHAT, RenderedMessage("b1", "b1"))
    finally:
        await channel.aclose()
    a1, b1, a2 = stub.wait_for_messages(3, timeout=1)
    assert [(m.chat_id, m.text) for m in (a1, b1, a2)] == [(CHAT, "a1"), (OTHER_CHAT, "b1"), (CHAT, "a2")]
    assert b1.at - a1.at < interval  # the other chat did not sit out the first chat's interval
    assert a2.at - a1.at >= interval - 0.01


FAILURES = {
    "429": {"status": 429, "retry_after": 2},
    "403": {"status": 403, "description": f"Forbidden: bot{TOKEN} was blocked"},
    "400": {"status": 400, "description": f"Bad Request: chat not found for bot{TOKEN}"},
    "500": {"status": 500, "description": f"Internal Server Error at /bot{TOKEN}/sendMessage"},
    "409": {"status": 409, "description": f"Conflict: bot{TOKEN}"},
}


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # raised inside PTB for the int form
@pytest.mark.anyio
@pytest.mark.parametrize("failure", list(FAILURES.values()), ids=list(FAILURES))
async def test_telegram_token_never_in_error(stub: BotApiStub, failure: dict[str, Any]) -> None:
    stub.fail_next("sendMessage", **failure)
    channel = telegram_channel(stub)
    try:
        error = await send_failing(channel, CHAT, PLAIN)
    finally:
        await channel.aclose()
    assert TOKEN not in str(error)
    assert TOKEN.split(":")[1] not in str(error)
    assert TOKEN not in repr(error.args)


@pytest.mark.anyio
async def test_telegram_token_never_in_error_on_timeout_or_failed_init(stub: BotApiStub) -> None:
    stub.fail_next("getMe", status=500, description=f"Internal Server Error for {TOKEN}")
    channel = telegram_channel(stub, timeout=0.3)
    try:
        errors = [await send_failing(channel, CHAT, PLAIN)]
        stub.set_delay(1.0)
        errors.append(await send_failing(channel, CHAT, PLAIN))
        stub.set_delay(0)
    finally:
        await channel.aclose()
    assert [e.permanent for e in errors] == [False, False]
    assert all(TOKEN not in str(e) for e in errors)


@pytest.mark.anyio
async def test_telegram_token_never_in_error_even_lower_cased(stub: BotApiStub) -> None:
    stub.fail_next("sendMessage", status=400, description=f"Bad Request: chat not found for bot{TOKEN}")
    channel = telegram_channel(stub)
    try:
        error = await send_failing(channel, CHAT, PLAIN)
    finally:
        await channel.aclose()
    assert TOKEN.split(":")[1].lower() not in str(error).lower()


# --- email -------------------------------------------------------------------------------


def email_channel(server: SmtpServer, **kwargs: Any) -> EmailChannel:
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "sender": SENDER,
        "recipients": (ONCALL,),
        "tls": server.tls,
        "timeout": 3.0,
    }
    if server.username is not None:
        options.update(username=server.username, password=server.password)
    if server.ca_file is not None:
        options["ca_file"] = str(server.ca_file)
    options.update(kwargs)
    return EmailChannel(**options)


RICH = RenderedMessage(
    subject="[FIRING] api-errors [critical] 1 alert",
    text="[FIRING] api-errors\n\nerror budget left: 42.0%\n",
    html="<h3>[FIRING] api-errors</h3><p>error budget left: 42.0%</p>",
)


def assert_rich_mail(mail: ReceivedMail, message: RenderedMessage = RICH) -> None:
    parsed = mail.message
    assert parsed.get_all("Subject") == [message.subject]
    assert parsed["From"] == SENDER
    assert parsed["To"] == ONCALL
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == [ONCALL]
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(("plain",))
    rich = parsed.get_body(("html",))
    assert plain is not None
    assert rich is not None
    assert plain.get_content() == message.text
    assert rich.get_content().rstrip("\n") == message.html
    assert parsed["Message-ID"].endswith("@example.test>")
    assert parsed["Date"]


@pytest.mark.anyio
async def test_email_starttls_with_auth() -> None:
    with SmtpServer(tls="starttls", username=USER, password=PASSWORD) as server:
        await email_channel(server).send(ONCALL, RICH)
        [mail] = server.wait_for(1, timeout=2)
    assert_rich_mail(mail)
    assert mail.authenticated_as == USER
    assert mail.tls is True


@pytest.mark.anyio
async def test_email_implicit_tls() -> None:
    with SmtpServer(tls="implicit", username=USER, password=PASSWORD) as server:
        await email_channel(server).send(ONCALL, RICH)
        [mail] = server.wait_for(1, timeout=2)
    assert_rich_mail(mail)
    assert mail.authenticated_as == USER
    assert mail.tls is True


@pytest.mark.anyio
async def test_email_without_tls() -> None:
    with SmtpServer() as server:
        message = RenderedMessage(subject="plain only ✓", text="no html part, ünïcode\n")
        await email_channel(server).send(ONCALL, message)
        [mail] = server.wait_for(1, timeout=2)
    assert mail.tls is False
    assert mail.authenticated_as is None
    assert mail.message.get_all("Subject") == ["plain only ✓"]
    assert mail.message.get_content_type() == "text/plain"
    assert mail.message.get_content() == "no html part, ünïcode\n"


@pytest.mark.anyio
async def test_email_tls_none_never_starts_tls() -> None:
    # A STARTTLS-only server refuses MAIL before STARTTLS (530); a client that upgraded on its own would pass that
    # (or fail on the untrusted certificate instead).
    with SmtpServer(tls="starttls") as server:
        error = await send_failing(email_channel(server, tls="none"), ONCALL, RICH)
        assert server.received() == []
    assert "530" in str(error)
    assert error.permanent is True


@pytest.mark.anyio
async def test_email_wrong_password_is_permanent() -> None:
    with SmtpServer(tls="starttls", username=USER, password=PASSWORD) as server:
        error = await send_failing(email_channel(server, password="wrong"), ONCALL, RICH)
        assert server.received() == []
    assert error.permanent is True
    assert "535" in str(error)
    assert "wrong" not in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stage", "code", "permanent"),
    [("data", 451, False), ("data", 550, True), ("mail", 421, False), ("mail", 553, True), ("rcpt", 550, True)],
)
async def test_email_reply_codes(stage: Any, code: int, permanent: bool) -> None:
    with SmtpServer() as server:
        server.fail_next(stage=stage, code=code, message="scripted")
        channel = email_channel(server)
        error = await send_failing(channel, ONCALL, RICH)
        assert server.received() == []
        await channel.send(ONCALL, RICH)  # the failure was only for one attempt
        assert len(server.wait_for(1, timeout=2)) == 1
    assert error.permanent is permanent
    assert str(code) in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize("code", [450, 451])
async def test_email_temporary_recipient_refusal_is_retried(code: int) -> None:
    with SmtpServer() as server:
        server.fail_next(stage="rcpt", code=code, message="4.7.1 greylisted, try again later")
        error = await send_failing(email_channel(server), ONCALL, RICH)
    assert str(code) in str(error)
    assert error.permanent is False


@pytest.mark.anyio
async def test_email_refused_connection_is_temporary() -> None:
    channel = EmailChannel(
        host="127.0.0.1", port=free_port(), sender=SENDER, recipients=(ONCALL,), tls="none", timeout=2
    )
    error = await send_failing(channel, ONCALL, RICH)
    assert error.permanent is False
    assert "connection failed" in str(error)


@pytest.mark.anyio
async def test_email_slow_server_times_out() -> None:
    with SmtpServer() as server:
        server.set_delay(1.5)
        error = await send_failing(email_channel(server, timeout=0.3), ONCALL, RICH)
    assert error.permanent is False
    assert "in time" in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_email_untrusted_certificate(tls: Any) -> None:
    with SmtpServer(tls=tls) as server:
        error = await send_failing(email_channel(server, ca_file=None), ONCALL, RICH)
        assert type(error) is DeliveryError
        assert error.__cause__ is None
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)
        assert server.received() == []
        await email_channel(server, ca_file=None, verify=False).send(ONCALL, RICH)
        [mail] = server.wait_for(1, timeout=2)
    assert mail.tls is True
    assert_rich_mail(mail)


def header_block(mail: ReceivedMail) -> bytes:
    return mail.data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.anyio
async def test_email_header_injection_from_labels() -> None:
    slo = slo_definition()
    group = message_group("email", (("endpoint", "x\r\nBcc: evil@x"), ("region", "eu\nX-Evil: 1")))
    rendered = render_plain(group, slo)
    assert rendered.subject == email_subject(group, slo)
    with SmtpServer() as server:
        await email_channel(server).send(ONCALL, rendered)
        [mail] = server.wait_for(1, timeout=2)
        await anyio.sleep(0.1)
        assert len(server.received()) == 1
    assert mail.rcpt_tos == [ONCALL]
    assert mail.message.get_all("Subject") == [rendered.subject]
    assert mail.message.get_all("Bcc") is None
    assert mail.message.get_all("X-Evil") is None
    headers = header_block(mail)
    assert b"\r\nBcc:" not in headers
    assert b"\r\nX-Evil:" not in headers
    assert headers.count(b"\r\nSubject:") + headers.startswith(b"Subject:") == 1
    assert "Bcc: evil@x" in mail.message["Subject"]  # kept visible, but inside the one Subject line


@pytest.mark.anyio
async def test_email_body_has_no_line_forged_by_a_label_value() -> None:
    slo = slo_definition()
    labels = (("endpoint", "x\nBcc: evil@x"), ("region", "eu\u2028X-Evil: 1\r\nFrom: boss@x \u202etxt.exe"))
    rendered = render_plain(message_group("email", labels), slo)
    with SmtpServer() as server:
        await email_channel(server).send(ONCALL, rendered)
        [mail] = server.wait_for(1, timeout=2)
    plain, rich = mail.message.get_body(("plain",)), mail.message.get_body(("html",))
    assert plain is not None
    assert rich is not None
    for body in (plain.get_content(), rich.get_content()):
        assert not [line for line in body.splitlines() if line.startswith(("Bcc:", "X-Evil:", "From:"))]
        assert not {"\u2028", "\u202e", "\r"} & set(body)
    text = plain.get_content()
    assert text.splitlines()[0] == rendered.text.splitlines()[0]
    assert "endpoint=x\\nBcc: evil@x, region=eu\\u2028X-Evil: 1\\r\\nFrom: boss@x \\u202etxt.exe" in text
    assert mail.message.get_all("Bcc") is None
    assert mail.message.get_all("From") == [SENDER]


@pytest.mark.anyio
async def test_email_body_cannot_end_the_data_phase() -> None:
    smuggled = "a\r\n.\r\nMAIL FROM:<x@x>\r\nRCPT TO:<evil@x>\r\nDATA\r\nevil\r\n.\r\n"
    message = RenderedMessage(subject="s", text=f"before\n{smuggled}\nafter\n", html=f"<p>{smuggled}</p>")
    with SmtpServer() as server:
        await email_channel(server).send(ONCALL, message)
        [mail] = server.wait_for(1, timeout=2)
        await anyio.sleep(0.1)
        assert len(server.received()) == 1
    assert mail.rcpt_tos == [ONCALL]
    plain = mail.message.get_body(("plain",))
    assert plain is not None
    assert "RCPT TO:<evil@x>" in plain.get_content()
    assert plain.get_content().rstrip("\n").endswith("after")


def test_build_email_refuses_raw_newlines_in_subject() -> None:
    from sloeval.alerting.channels.smtp import build_email

    with pytest.raises(ValueError, match="linefeed or carriage return"):
        build_email(SENDER, ONCALL, RenderedMessage(subject="a\r\nBcc: evil@x", text="t"))
    mail: EmailMessage = build_email(SENDER, ONCALL, RenderedMessage(subject="ok", text="t"))
    assert mail.get_all("Subject") == ["ok"]
