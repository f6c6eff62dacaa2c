"""Telegram through python-telegram-bot's ``Bot`` (no polling), HTML parse mode."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import warnings
from urllib.parse import quote

import anyio
from telegram import Bot, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from sloeval.alerting.channels import DeliveryError
from sloeval.alerting.messages import RenderedMessage


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
        self.recipients = chat_ids
        self._token = token
        request = HTTPXRequest(
            connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout, pool_timeout=timeout
        )
        self._bot = Bot(token=token, base_url=f"{api_url}/bot", request=request)
        self._min_interval = min_interval
        self._last_sent: dict[str, float] = {}
        self._chat_locks: dict[str, anyio.Lock] = {}
        self._initialized = False

    def _clean(self, text: str) -> str:
        """Error texts must never carry the token (it is part of every request URL)."""
        for form in {self._token, quote(self._token, safe="")}:
            text = re.sub(re.escape(form), "<token>", text, flags=re.IGNORECASE)
        return text

    async def send(self, recipient: str, message: RenderedMessage) -> None:
        lock = self._chat_locks.setdefault(recipient, anyio.Lock())
        async with lock:
            wait = self._last_sent.get(recipient, -1e9) + self._min_interval - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            try:
                if not self._initialized:
                    await self._bot.initialize()
                    self._initialized = True
                await self._bot.send_message(
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
            finally:
                self._last_sent[recipient] = anyio.current_time()

    async def aclose(self) -> None:
        if self._initialized:
            with contextlib.suppress(TelegramError):
                await self._bot.shutdown()
