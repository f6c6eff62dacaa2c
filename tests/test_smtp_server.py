"""The test SMTP server, driven by the real aiosmtplib client."""

from __future__ import annotations

import socket
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from devtools.smtp_server import SmtpServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_message(subject: str = "SLO burn", to: str = "oncall@example.test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sloeval@example.test"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("error budget: 12.5 % left\n")
    return message


def client_kwargs(server: SmtpServer, *, auth: bool = True, timeout: float = 5.0) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"hostname": server.host, "port": server.port, "timeout": timeout}
    if auth:
        kwargs.update(username=server.username, password=server.password)
    if server.ca_file is not None:
        kwargs["tls_context"] = ssl.create_default_context(cafile=str(server.ca_file))
    if server.tls == "starttls":
        kwargs["start_tls"] = True
    elif server.tls == "implicit":
        kwargs["use_tls"] = True
    else:
        kwargs["start_tls"] = False
    return kwargs


@pytest.mark.anyio
async def test_plain_without_auth() -> None:
    with SmtpServer() as server:
        assert server.ca_file is None
        assert server.port > 0
        errors, _ = await aiosmtplib.send(make_message(), **client_kwargs(server, auth=False))
        assert errors == {}
        [mail] = server.wait_for(1, timeout=2)
    assert mail.mail_from == "sloeval@example.test"
    assert mail.rcpt_tos == ["oncall@example.test"]
    assert mail.message["Subject"] == "SLO burn"
    assert mail.message.get_content() == "error budget: 12.5 % left\n"
    assert b"Subject: SLO burn\r\n" in mail.data
    assert mail.authenticated_as is None
    assert mail.tls is False


@pytest.mark.anyio
@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
async def test_auth_in_every_tls_mode(tls: Any) -> None:
    with SmtpServer(tls=tls, username="alerts", password="s3cret") as server:
        assert (server.ca_file is not None) == (tls != "none")
        await aiosmtplib.send(make_message(f"via {tls}"), **client_kwargs(server))
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
            await aiosmtplib.send(make_message(), **{**client_kwargs(server), "password": "wrong"})
        assert info.value.code == 535
        [mail] = server.wait_for(1, timeout=2)
    assert mail.authenticated_as == "alerts"
    assert mail.tls is (tls != "none")
    assert mail.message["Subject"] == f"via {tls}"


@pytest.mark.anyio
async def test_auth_is_required() -> None:
    with SmtpServer(username="alerts", password="s3cret") as server:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
            await aiosmtplib.send(make_message(), **client_kwargs(server, auth=False))
        assert info.value.code == 530
        assert server.received() == []


@pytest.mark.anyio
async def test_starttls_offers_auth_only_after_tls() -> None:
    with SmtpServer(tls="starttls", username="alerts", password="s3cret") as server:
        plain = {**client_kwargs(server), "start_tls": False}
        with pytest.raises(aiosmtplib.SMTPException, match="AUTH extension is not supported"):
            await aiosmtplib.send(make_message(), **plain)
        client = aiosmtplib.SMTP(
            **{k: v for k, v in client_kwargs(server, auth=False).items() if k != "start_tls"}, start_tls=False
        )
        async with client:
            await client.ehlo()
            assert not client.supports_extension("auth")
            assert client.supports_extension("starttls")
            await client.starttls()
            await client.ehlo()
            assert client.supports_extension("auth")
            assert sorted(client.server_auth_methods) == ["login", "plain"]
            await client.auth_login("alerts", "s3cret")
            await client.send_message(make_message("login"))
        assert server.wait_for(1, timeout=2)[0].authenticated_as == "alerts"


@pytest.mark.anyio
async def test_untrusted_certificate() -> None:
    with SmtpServer(tls="implicit") as server:
        kwargs = client_kwargs(server, auth=False)
        kwargs["tls_context"] = ssl.create_default_context()
        with pytest.raises(aiosmtplib.SMTPConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await aiosmtplib.send(make_message(), **kwargs)
    with SmtpServer(tls="starttls") as server:
        kwargs = client_kwargs(server, auth=False)
        kwargs["tls_context"] = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            await aiosmtplib.send(make_message(), **kwargs)


@pytest.mark.anyio
async def test_scripted_failures() -> None:
    with SmtpServer() as server:
        kwargs = client_kwargs(server, auth=False)
        server.fail_next(stage="data", code=451, message="4.3.0 try again later")
        with pytest.raises(aiosmtplib.SMTPDataError) as data_info:
            await aiosmtplib.send(make_message(), **kwargs)
        assert data_info.value.code == 451
        assert data_info.value.message == "4.3.0 try again later"

        server.fail_next(stage="data", code=550, message="5.7.1 rejected", times=2)
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPDataError) as info:
                await aiosmtplib.send(make_message(), **kwargs)
            assert info.value.code == 550

        server.fail_next(stage="mail", code=421, message="4.7.0 slow down")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as mail_info:
            await aiosmtplib.send(make_message(), **kwargs)
        assert mail_info.value.code == 421

        server.fail_next(stage="rcpt", code=550, message="5.1.1 no such user")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as rcpt_info:
            await aiosmtplib.send(make_message(), **kwargs)
        assert [r.code for r in rcpt_info.value.recipients] == [550]

        server.fail_next(stage="rcpt", code=550, message="5.1.1 no such user")
        message = make_message("partial", to="gone@example.test, oncall@example.test")
        errors, _ = await aiosmtplib.send(message, **kwargs)
        assert list(errors) == ["gone@example.test"]

        await aiosmtplib.send(make_message("delivered"), **kwargs)
        mails = server.wait_for(2, timeout=2)
    assert [m.message["Subject"] for m in mails] == ["partial", "delivered"]
    assert mails[0].rcpt_tos == ["oncall@example.test"]


@pytest.mark.anyio
async def test_timeouts_and_refused_connection() -> None:
    with SmtpServer() as server:
        server.set_delay(2.0)
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
            await aiosmtplib.send(make_message(), **client_kwargs(server, auth=False, timeout=0.3))
        server.set_delay(0)
        port = server.port
    with pytest.raises(aiosmtplib.SMTPConnectError, match="Connect call failed"):
        await aiosmtplib.send(make_message(), hostname="127.0.0.1", port=port, timeout=2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(aiosmtplib.SMTPConnectTimeoutError):
            await aiosmtplib.send(make_message(), hostname="127.0.0.1", port=silent.getsockname()[1], timeout=0.3)


def test_wait_for_reports_what_arrived() -> None:
    with SmtpServer() as server, pytest.raises(AssertionError, match="got 0"):
        server.wait_for(1, timeout=0.1)


def test_cert_dir_is_kept(tmp_path: Path) -> None:
    with SmtpServer(tls="implicit", cert_dir=tmp_path) as server:
        assert server.ca_file == tmp_path / "ca.pem"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem", "server.key", "server.pem"]
    with SmtpServer(tls="starttls") as server:
        assert server.ca_file is not None
        generated = server.ca_file.parent
        assert generated.exists()
    assert not generated.exists()
