"""Email through aiosmtplib: plain text and HTML parts, STARTTLS / implicit TLS / none."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

import aiosmtplib

from sloeval.alerting.channels import DeliveryError
from sloeval.alerting.messages import RenderedMessage


def build_email(sender: str, recipient: str, message: RenderedMessage) -> EmailMessage:
    """A MIME message; the subject is already one line, and the SMTP policy refuses CR/LF in headers."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1] or "sloeval")
    mail.set_content(message.text)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: tuple[str, ...],
        tls: Literal["starttls", "implicit", "none"] = "starttls",
        username: str | None = None,
        password: str | None = None,
        verify: bool = True,
        ca_file: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.recipients = recipients
        self._host, self._port, self._sender = host, port, sender
        self._tls = tls
        self._username, self._password = username, password
        self._timeout = timeout
        self._context: ssl.SSLContext | None = None
        if tls != "none":
            self._context = ssl.create_default_context(cafile=ca_file)
            if not verify:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE

    async def send(self, recipient: str, message: RenderedMessage) -> None:
        mail = build_email(self._sender, recipient, message)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                use_tls=self._tls == "implicit",
                start_tls=self._tls == "starttls",
                tls_context=self._context,
                validate_certs=self._context is not None and self._context.verify_mode != ssl.CERT_NONE,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP authentication failed ({exc.code})", permanent=True) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = ", ".join(str(r.code) for r in exc.recipients)
            permanent = all(500 <= r.code < 600 for r in exc.recipients)  # 4xx: greylisting, try again
            raise DeliveryError(f"SMTP server refused the recipient ({codes})", permanent=permanent) from None
        except aiosmtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.code < 600
            raise DeliveryError(f"SMTP error {exc.code}: {exc.message}", permanent=permanent) from None
        except aiosmtplib.SMTPTimeoutError:
            raise DeliveryError("SMTP server did not answer in time") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP connection failed: {type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        return None
