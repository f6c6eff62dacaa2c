"""Telegram: the channel's settings, its HTML rendering, and delivery through python-telegram-bot's ``Bot``.

python-telegram-bot is imported when a channel is built, not when this module is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import anyio
from pydantic import Field, SecretStr, field_validator

from sloeval.alerting.channels import ChannelKind, DeliveryError
from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.messages import (
    TEST_SUBJECT,
    RenderedMessage,
    SLODescription,
    fact_lines,
    fit_lines,
    headline,
    item_title,
    labels_text,
    links_of,
    test_message_text,
)
from sloeval.config.settings import CommaList, Settings, SettingsBase, http_url

if TYPE_CHECKING:
    from telegram import Bot

TELEGRAM_LIMIT = 4096


class TelegramSettings(SettingsBase):
    """``SLOEVAL_TELEGRAM_*``: the bot and the chats it pages."""

    telegram_bot_token: SecretStr | None = Field(None, description="Bot token from @BotFather.")
    telegram_bot_token_file: Path | None = Field(None, description="File holding the bot token.")
    telegram_chat_ids: CommaList = Field(default_factory=list, description="Comma list of chat ids to page.")
    telegram_api_url: str = Field("https://api.telegram.org", description="Bot API server (a local one works).")
    telegram_min_interval: float = Field(1.0, ge=0, description="Seconds between two messages to one chat.")

    _api_url = field_validator("telegram_api_url")(http_url)

    @property
    def enabled(self) -> bool:
        return self.telegram_bot_token is not None and bool(self.telegram_chat_ids)


def render_telegram(group: MessageGroup, slo: SLODescription) -> RenderedMessage:
    """Telegram HTML (parse_mode=HTML), every value escaped, at most 4096 characters."""
    e = html.escape
    lines = [f"<b>{e(headline(group, slo))}</b>"]
    objective = f"{100 * slo.objective:g}% / {slo.period_name}"
    lines.append(f"SLO <b>{e(slo.name)}</b> ({e(slo.slo_type)}, {e(objective)}), service {e(slo.service)}")
    if group.labels:
        lines.append(f"labels: <code>{e(labels_text(group))}</code>")
    for notification in group.notifications:
        lines.append("")
        lines.append(f"<b>{e(item_title(notification, group))}</b>")
        lines += [e(line) for line in fact_lines(notification.facts)]
    links = links_of(slo, group.notifications[0].key.alert)
    if links:
        lines.append("")
        lines.append(" | ".join(f'<a href="{e(url)}">{e(name)}</a>' for name, url in links))
    return RenderedMessage(subject=headline(group, slo), text=fit_lines(lines, TELEGRAM_LIMIT))


class TelegramChannel:
    """Sends to every configured chat; keeps at least ``min_interval`` seconds between two messages to one chat."""

    name = "telegram"

    def __init__(
        self,
        token: str,
        chat_ids: tuple[str, ...],
        *,
        api_url: str = "https://api.telegram.org",
        timeout: float = 15.0,
        min_interval: float = 1.0,
    ) -> None:
        from telegram import Bot
        from telegram.request import HTTPXRequest

        self.recipients = chat_ids
        self._token = token
        request = HTTPXRequest(
            connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout, pool_timeout=timeout
        )
        self._bot: Bot = Bot(token=token, base_url=f"{api_url}/bot", request=request)
        self._min_interval = min_interval
        self._last_sent: dict[str, float] = {}
        self._chat_locks: dict[str, anyio.Lock] = {}
        self._initialized = False

    def _clean(self, text: str) -> str:
        """Error texts must never carry the token (it is part of every request URL)."""
        for form in {self._token, quote(self._token, safe="")}:
            text = re.sub(re.escape(form), "<token>", text, flags=re.IGNORECASE)
        return text

    def render(self, group: MessageGroup, slo: SLODescription) -> RenderedMessage:
        return render_telegram(group, slo)

    def test_message(self) -> RenderedMessage:
        return RenderedMessage(subject=TEST_SUBJECT, text=html.escape(test_message_text(self.name)))

    async def send(self, recipient: str, message: RenderedMessage) -> None:
        from telegram import LinkPreviewOptions, Message
        from telegram.constants import ParseMode
        from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError, TimedOut

        lock = self._chat_locks.setdefault(recipient, anyio.Lock())
        async with lock:
            wait = self._last_sent.get(recipient, -1e9) + self._min_interval - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            try:
                if not self._initialized:
                    await self._bot.initialize()
                    self._initialized = True
                sent = await self._bot.send_message(
                    chat_id=recipient,
                    text=message.text,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
            except RetryAfter as exc:
                with warnings.catch_warnings():  # PTB deprecates the int form; both forms are handled
                    warnings.simplefilter("ignore")
                    delay = exc.retry_after
                seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
                raise DeliveryError(f"Telegram asks to wait {seconds:g}s (429)", retry_after=seconds) from None
            except (Forbidden, InvalidToken) as exc:
                raise DeliveryError(self._clean(f"Telegram refused: {exc.message}"), permanent=True) from None
            except BadRequest as exc:
                raise DeliveryError(
                    self._clean(f"Telegram rejected the message: {exc.message}"), permanent=True
                ) from None
            except TimedOut:
                raise DeliveryError("Telegram did not answer in time") from None
            except TelegramError as exc:
                raise DeliveryError(self._clean(f"Telegram error: {exc.message}")) from None
            except Exception as exc:  # "ok" with a result python-telegram-bot cannot read (its de_json raises)
                raise DeliveryError(self._unreadable(f"{type(exc).__name__}: {exc}")) from None
            finally:
                self._last_sent[recipient] = anyio.current_time()
            if not isinstance(sent, Message):
                raise DeliveryError(self._unreadable(f"{type(sent).__name__} instead of the message"))

    def _unreadable(self, what: str) -> str:
        """One line for an answer that says "ok" but carries no readable message (temporary: at least once)."""
        detail = " ".join(what.split())[:200]
        return self._clean(f"Telegram answered with a result that cannot be read ({detail}); it may have been sent")

    async def aclose(self) -> None:
        from telegram.error import TelegramError

        if self._initialized:
            with contextlib.suppress(TelegramError):
                await self._bot.shutdown()


def _build(own: TelegramSettings, settings: Settings) -> TelegramChannel:
    assert own.telegram_bot_token is not None
    return TelegramChannel(
        own.telegram_bot_token.get_secret_value(),
        tuple(own.telegram_chat_ids),
        api_url=own.telegram_api_url,
        timeout=settings.notify_timeout,
        min_interval=own.telegram_min_interval,
    )


KIND = ChannelKind("telegram", TelegramSettings, _build)
