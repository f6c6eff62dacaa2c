"""Email: the channel's settings, its plain-text and HTML rendering, and delivery through aiosmtplib.

STARTTLS, implicit TLS or none. aiosmtplib is imported when a message is sent, not when this module is.
"""

from __future__ import annotations

import html
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Literal

import structlog
from pydantic import Field, SecretStr, field_validator

from sloeval.alerting.channels import ChannelKind, DeliveryError
from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.messages import (
    TEST_SUBJECT,
    RenderedMessage,
    SLODescription,
    fact_lines,
    headline,
    item_title,
    labels_text,
    links_of,
    test_message_text,
)
from sloeval.config.settings import CommaList, Settings, SettingsBase, email_addresses

log = structlog.get_logger("sloeval.alerting")

SUBJECT_LIMIT = 200


class EmailSettings(SettingsBase):
    """``SLOEVAL_SMTP_*`` and ``SLOEVAL_EMAIL_*``: the mail server and who gets the mail."""

    smtp_host: str | None = Field(None, description="SMTP server; email is off when unset.")
    smtp_port: int | None = Field(None, ge=1, le=65535, description="Default 587 (starttls), 465 (implicit), 25.")
    smtp_username: str | None = Field(None, description="SMTP AUTH user.")
    smtp_password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    smtp_password_file: Path | None = Field(None, description="File holding the SMTP password.")
    smtp_tls: Literal["starttls", "implicit", "none"] = Field("starttls", description="How SMTP is encrypted.")
    smtp_tls_verify: bool = Field(True, description="Verify the SMTP server's certificate.")
    smtp_ca_file: Path | None = Field(None, description="CA bundle to verify the SMTP server.")
    email_from: str = Field("sloeval@localhost", description="From address of alert emails.")
    email_to: CommaList = Field(default_factory=list, description="Comma list of recipients.")

    _addresses = field_validator("email_from", "email_to")(email_addresses)

    @property
    def smtp_port_or_default(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {"starttls": 587, "implicit": 465, "none": 25}[self.smtp_tls]

    @property
    def enabled(self) -> bool:
        return self.smtp_host is not None and bool(self.email_to)


def render_plain(group: MessageGroup, slo: SLODescription) -> RenderedMessage:
    lines = [
        headline(group, slo),
        "",
        f"SLO: {slo.name} ({slo.slo_type}, objective {100 * slo.objective:g}% over {slo.period_name})",
    ]
    lines.append(f"Service: {slo.service}")
    if group.labels:
        lines.append(f"Labels: {labels_text(group)}")
    for notification in group.notifications:
        lines += ["", item_title(notification, group)]
        lines += [f"  {line}" for line in fact_lines(notification.facts)]
    links = links_of(slo, group.notifications[0].key.alert)
    if links:
        lines.append("")
        lines += [f"{name}: {url}" for name, url in links]
    return RenderedMessage(subject=email_subject(group, slo), text="\n".join(lines), html=render_email_html(group, slo))


def email_subject(group: MessageGroup, slo: SLODescription) -> str:
    """One line: status first, no CR/LF or other control characters from label values."""
    text = f"[{group.status.upper()}] " + headline(group, slo).split(": ", 1)[1]
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned[:SUBJECT_LIMIT]


def render_email_html(group: MessageGroup, slo: SLODescription) -> str:
    e = html.escape
    parts = [f"<h3>{e(headline(group, slo))}</h3>", "<p>"]
    objective = f"objective {100 * slo.objective:g}% over {slo.period_name}"
    parts.append(f"SLO <b>{e(slo.name)}</b> ({e(slo.slo_type)}, {e(objective)})<br>")
    parts.append(f"Service {e(slo.service)}")
    if group.labels:
        parts.append(f"<br>Labels {e(labels_text(group))}")
    parts.append("</p>")
    for notification in group.notifications:
        parts.append(f"<p><b>{e(item_title(notification, group))}</b><br>")
        parts.append("<br>".join(e(line) for line in fact_lines(notification.facts)))
        parts.append("</p>")
    links = links_of(slo, group.notifications[0].key.alert)
    if links:
        parts.append("<p>" + " | ".join(f'<a href="{e(url)}">{e(name)}</a>' for name, url in links) + "</p>")
    return "".join(parts)


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

    def render(self, group: MessageGroup, slo: SLODescription) -> RenderedMessage:
        return render_plain(group, slo)

    def test_message(self) -> RenderedMessage:
        return RenderedMessage(subject=TEST_SUBJECT, text=test_message_text(self.name))

    async def send(self, recipient: str, message: RenderedMessage) -> None:
        import aiosmtplib

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


def _build(own: EmailSettings, settings: Settings) -> EmailChannel:
    assert own.smtp_host is not None
    if not own.smtp_tls_verify and own.smtp_tls != "none":
        log.warning("smtp_tls_verification_disabled")
    return EmailChannel(
        host=own.smtp_host,
        port=own.smtp_port_or_default,
        sender=own.email_from,
        recipients=tuple(own.email_to),
        tls=own.smtp_tls,
        username=own.smtp_username,
        password=own.smtp_password.get_secret_value() if own.smtp_password else None,
        verify=own.smtp_tls_verify,
        ca_file=str(own.smtp_ca_file) if own.smtp_ca_file else None,
        timeout=settings.notify_timeout,
    )


KIND = ChannelKind("email", EmailSettings, _build)
