"""A real SMTP server on 127.0.0.1 (aiosmtpd), for tests and the demo.

::

    with SmtpServer(tls="starttls", username="u", password="p") as smtp:
        await aiosmtplib.send(msg, hostname=smtp.host, port=smtp.port, start_tls=True, username="u",
                              password="p", tls_context=ssl.create_default_context(cafile=smtp.ca_file))
        smtp.wait_for(1, timeout=5)

TLS modes: ``"none"``; ``"starttls"`` (STARTTLS offered and required before MAIL, AUTH only offered
after it); ``"implicit"`` (TLS from the first byte, "SMTPS"). For TLS a throw-away CA and a
certificate for ``127.0.0.1``/``localhost`` are made at start with ``trustme``; clients trust ``ca_file``.
With ``username``/``password`` set, AUTH PLAIN/LOGIN is required before MAIL; bad credentials get 535.

What aiosmtplib 5.x raises (all subclasses of ``aiosmtplib.SMTPException``):

* nothing listening -> ``SMTPConnectError`` (also an ``OSError``/``ConnectionError``)
* no greeting in time -> ``SMTPConnectTimeoutError``; slow answer later (``set_delay``) -> ``SMTPReadTimeoutError``;
  both subclass ``SMTPTimeoutError`` (and the builtin ``TimeoutError``)
* wrong credentials (535) -> ``SMTPAuthenticationError``; AUTH asked for but not offered (STARTTLS server,
  ``start_tls=False``) -> plain ``SMTPException``
* certificate not trusted: implicit TLS -> ``SMTPConnectError``; STARTTLS -> the raw ``ssl.SSLCertVerificationError``
  (an ``OSError``, *not* an ``SMTPException``), so catch ``(aiosmtplib.SMTPException, OSError)``
* 4xx/5xx on MAIL -> ``SMTPSenderRefused``; on RCPT -> ``SMTPRecipientsRefused`` when *every* recipient was
  refused (if only some were, ``send`` succeeds and returns them in its errors dict); on DATA -> ``SMTPDataError``
* ``exc.code`` carries the reply code on all ``SMTPResponseException`` subclasses (not on ``SMTPRecipientsRefused``:
  look at ``exc.recipients[i].code``).

A DATA reply that comes after the client's timeout is lost: aiosmtpd drops the message when the client hangs up.

aiosmtpd pitfalls handled here: ``Controller`` cannot take port 0 (its readiness probe connects to
``self.port``), so the bound port is read back before the probe; with implicit TLS ``auth_require_tls`` must be
off (aiosmtpd only counts STARTTLS as TLS, it would answer AUTH with 538), and switching it off makes aiosmtpd warn on
every connection, so it is switched off on each ``SMTP`` instance instead; ``server_hostname`` is set so aiosmtpd
does not call ``socket.getfqdn()``; its per-login "login_data is deprecated" log line is filtered out.
"""

from __future__ import annotations

import asyncio
import email.message
import email.parser
import email.policy
import hmac
import logging
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

TlsMode = Literal["none", "starttls", "implicit"]
Stage = Literal["mail", "rcpt", "data"]


@dataclass
class ReceivedMail:
    """One message accepted by the server: ``data`` as on the wire (CRLF), ``message`` parsed with LF line ends."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: email.message.EmailMessage
    authenticated_as: str | None
    tls: bool


@dataclass
class _Failure:
    stage: Stage
    reply: str
    remaining: int


class _QuietAiosmtpd(logging.Filter):
    """Drop aiosmtpd's log lines about choices made on purpose here."""

    NOISE = ("Session.login_data is deprecated", "auth_required == True but auth_require_tls == False")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


class _Controller(Controller):
    """aiosmtpd ``Controller`` that supports ``port=0`` and AUTH without STARTTLS."""

    def __init__(self, handler: Any, *, auth_require_tls: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._auth_require_tls = auth_require_tls

    def factory(self) -> SMTP:
        # Built with the default auth_require_tls=True (no UserWarning per connection), then relaxed.
        smtp = SMTP(self.handler, **self.SMTP_kwargs)
        smtp._auth_require_tls = self._auth_require_tls
        return smtp

    def _trigger_server(self) -> None:
        # Runs after the listener is bound and before the readiness probe connects to self.port.
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class _Handler:
    """aiosmtpd handler hooks; state lives in the owning ``SmtpServer``."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        failure = self._owner._take_failure("mail")
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        failure = self._owner._take_failure("rcpt")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        delay = self._owner._delay
        if delay > 0:
            await asyncio.sleep(delay)
        failure = self._owner._take_failure("data")
        if failure is not None:
            return failure
        content = envelope.original_content or b""
        if not content and isinstance(envelope.content, bytes):
            content = envelope.content
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(content.replace(b"\r\n", b"\n"))
        assert isinstance(parsed, email.message.EmailMessage)
        auth = session.auth_data
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=content,
            message=parsed,
            authenticated_as=auth if isinstance(auth, str) else None,
            tls=self._owner.tls == "implicit" or session.ssl is not None,
        )
        self._owner._deliver(mail)
        return "250 2.0.0 OK: queued"


class SmtpServer:
    """aiosmtpd server in a background thread on ``host:port``; a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsMode = "none",
        username: str | None = None,
        password: str | None = None,
        cert_dir: Path | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("set both username and password, or neither")
        self.host = host
        self.port = port
        self.tls: TlsMode = tls
        self.username = username
        self.password = password
        self.ca_file: Path | None = None
        self._requested_port = port
        self._cert_dir = cert_dir
        self._own_cert_dir: Path | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._received: list[ReceivedMail] = []
        self._failures: list[_Failure] = []
        self._delay = 0.0
        self._controller: _Controller | None = None

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Make certificates if needed, start listening, set ``port`` (and ``ca_file``)."""
        if self._controller is not None:
            raise RuntimeError("SmtpServer already started")
        server_ctx = self._make_tls_context() if self.tls != "none" else None
        kwargs: dict[str, Any] = {"server_hostname": "localhost", "ident": "sloeval test SMTP"}
        if self.tls == "starttls":
            kwargs.update(tls_context=server_ctx, require_starttls=True)
        elif self.tls == "implicit":
            kwargs.update(ssl_context=server_ctx)
        if self.username is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        mail_log = logging.getLogger("mail.log")
        if not any(isinstance(f, _QuietAiosmtpd) for f in mail_log.filters):
            mail_log.addFilter(_QuietAiosmtpd())
        controller = _Controller(
            _Handler(self),
            hostname=self.host,
            port=self._requested_port,
            auth_require_tls=self.tls == "starttls",
            **kwargs,
        )
        controller.start()
        self._controller = controller
        self.port = controller.port

    def stop(self) -> None:
        """Stop the server; remove generated certificates unless ``cert_dir`` was given."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._own_cert_dir is not None:
            shutil.rmtree(self._own_cert_dir, ignore_errors=True)
            self._own_cert_dir = None
            self.ca_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # scripting -------------------------------------------------------------------------------

    def fail_next(self, *, stage: Stage, code: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` MAIL/RCPT/DATA commands with ``code message`` (e.g. 451, 550)."""
        if not 400 <= code <= 599:
            raise ValueError(f"failure code must be 4xx or 5xx, not {code}")
        with self._lock:
            self._failures.append(_Failure(stage, f"{code} {message}", times))

    def set_delay(self, seconds: float) -> None:
        """Wait ``seconds`` before answering DATA (for client timeout tests; 0 to turn off)."""
        self._delay = seconds

    def reset(self) -> None:
        """Forget received mail, scripted failures and the delay."""
        with self._lock:
            self._received.clear()
            self._failures.clear()
            self._delay = 0.0

    # inspection ------------------------------------------------------------------------------

    def received(self) -> list[ReceivedMail]:
        """Snapshot of accepted messages, oldest first."""
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; ``AssertionError`` on timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._received) >= count, timeout):
                got = [(m.rcpt_tos, m.message.get("Subject")) for m in self._received]
                raise AssertionError(f"expected {count} mails within {timeout}s, got {len(got)}: {got}")
            return list(self._received)

    # internals -------------------------------------------------------------------------------

    def _take_failure(self, stage: Stage) -> str | None:
        with self._lock:
            for failure in self._failures:
                if failure.stage == stage:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    return failure.reply
        return None

    def _deliver(self, mail: ReceivedMail) -> None:
        with self._changed:
            self._received.append(mail)
            self._changed.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if mechanism not in {"PLAIN", "LOGIN"} or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        assert self.username is not None
        assert self.password is not None
        good = hmac.compare_digest(auth_data.login, self.username.encode()) & hmac.compare_digest(
            auth_data.password, self.password.encode()
        )
        if not good:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=self.username)

    def _make_tls_context(self) -> ssl.SSLContext:
        import trustme  # only needed for TLS modes

        if self._cert_dir is None:
            self._own_cert_dir = Path(tempfile.mkdtemp(prefix="sloeval-smtp-tls-"))
            cert_dir = self._own_cert_dir
        else:
            cert_dir = self._cert_dir
            cert_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="sloeval test CA")
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.ca_file = cert_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.cert_chain_pems[0].write_to_path(str(cert_dir / "server.pem"))
        cert.private_key_pem.write_to_path(str(cert_dir / "server.key"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context
