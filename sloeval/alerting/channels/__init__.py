"""Delivery channels: one module per way of reaching a person, found here by discovery.

A channel module (``telegram``, ``smtp``; a ``slack`` one would sit beside them) defines, and
registers as its module-level ``KIND``, a :class:`ChannelKind`: its name (what routes in the SLO
file say), its settings (a :class:`~sloeval.config.settings.SettingsBase` with its own
``SLOEVAL_*`` variables and an ``enabled`` property) and how to build the channel from them. The
channel object renders messages in its own markup and delivers them. Nothing outside the module
names a channel, so adding one is adding a module (and its docs).

Channel modules import their client library (python-telegram-bot, aiosmtplib) only when a channel
is built, so commands that send nothing (``check``, ``eval``) never load it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, Protocol, TypeVar

from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.messages import RenderedMessage, SLODescription
from sloeval.config.settings import ENV_PREFIX, Settings, SettingsBase
from sloeval.errors import SloevalError


class DeliveryError(SloevalError):
    """A send failed. ``permanent`` errors are not retried; ``retry_after`` is the server's wish."""

    permanent: bool
    retry_after: float | None

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message, permanent=permanent, retry_after=retry_after)


class Channel(Protocol):
    name: str
    recipients: tuple[str, ...]

    def render(self, group: MessageGroup, slo: SLODescription) -> RenderedMessage:
        """The message for one group, in this channel's markup and within its size limits."""
        ...

    def test_message(self) -> RenderedMessage:
        """What ``sloeval notify-test`` sends."""
        ...

    async def send(self, recipient: str, message: RenderedMessage) -> None:
        """Deliver or raise :class:`DeliveryError`."""
        ...

    async def aclose(self) -> None: ...


class ChannelSettings(Protocol):
    @property
    def enabled(self) -> bool:
        """Whether enough is set to send (a token and a chat, a server and a recipient)."""
        ...


S = TypeVar("S", bound=SettingsBase)


@dataclass(frozen=True)
class ChannelKind(Generic[S]):
    """What a channel module registers: its name, its settings, and how to build it from them."""

    name: str
    settings_type: type[S]
    build: Callable[[S, Settings], Channel]  # (the channel's settings, the daemon's settings)

    def load_settings(self) -> S:
        """This channel's ``SLOEVAL_*`` settings; raises SettingsError naming the variable."""
        return self.settings_type.load()

    def enabled(self, settings: SettingsBase) -> bool:
        return bool(getattr(settings, "enabled", False))

    def variable_patterns(self) -> list[str]:
        """Its variables for people: ``SLOEVAL_SMTP_*``, ``SLOEVAL_EMAIL_*``."""
        heads = {name.split("_", 1)[0].upper() for name in self.settings_type.model_fields}
        return [f"{ENV_PREFIX}{head}_*" for head in sorted(heads)]


@cache
def channel_kinds() -> dict[str, ChannelKind[Any]]:
    """Every channel module of this package, by channel name."""
    kinds: dict[str, ChannelKind[Any]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        kind = getattr(module, "KIND", None)
        if not isinstance(kind, ChannelKind):
            raise TypeError(f"channel module {module.__name__} registers no KIND = ChannelKind(...)")
        if kind.name in kinds:
            raise TypeError(f"two channel modules register the name {kind.name!r}")
        kinds[kind.name] = kind
    return kinds


def channel_names() -> frozenset[str]:
    """What a route in the SLO file may name."""
    return frozenset(channel_kinds())


def settings_types() -> tuple[type[SettingsBase], ...]:
    """Every settings model: the daemon's and each channel's (for docs and checks of deployment files)."""
    return (Settings, *(kind.settings_type for kind in channel_kinds().values()))


def load_channel_settings() -> dict[str, SettingsBase]:
    """Every channel's settings, read at start so a bad variable stops the start with one line."""
    return {name: kind.load_settings() for name, kind in channel_kinds().items()}


def build_channels(channel_settings: Mapping[str, SettingsBase], settings: Settings) -> dict[str, Channel]:
    """The channels whose settings enable them; a route naming another one is reported at start."""
    kinds = channel_kinds()
    return {
        name: kinds[name].build(own, settings) for name, own in channel_settings.items() if kinds[name].enabled(own)
    }
