"""Delivery channels: one small class per way of reaching a person."""

from __future__ import annotations

from typing import Protocol

from sloeval.alerting.messages import RenderedMessage


class DeliveryError(Exception):
    """A send failed. ``permanent`` errors are not retried; ``retry_after`` is the server's wish."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class Channel(Protocol):
    name: str
    recipients: tuple[str, ...]

    async def send(self, recipient: str, message: RenderedMessage) -> None:
        """Deliver or raise :class:`DeliveryError`."""
        ...

    async def aclose(self) -> None: ...
