"""Outbox workers: one per channel, delivering persisted messages with backoff up to a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import anyio
import structlog

from sloeval.alerting.channels import Channel, DeliveryError
from sloeval.alerting.messages import RenderedMessage
from sloeval.alerting.store import OutboxItem, StateStore, StateStoreError

log = structlog.get_logger("sloeval.dispatcher")

MAX_BACKOFF = 300.0
IDLE_POLL = 5.0
MIN_POLL = 0.05
PRUNE_INTERVAL = 3600.0


def backoff_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Exponential backoff (1 s, 2 s, 4 s ... 5 min) with +-20 % jitter."""
    base = min(MAX_BACKOFF, 2.0 ** max(0, attempts))
    return base * (rng or random).uniform(0.8, 1.2)


class Dispatcher:
    """Delivers one channel's messages. A failing channel only ever delays itself."""

    def __init__(
        self,
        store: StateStore,
        channel: Channel,
        *,
        attempt_timeout: float,
        on_outcome: Callable[[str, str], None] = lambda channel, outcome: None,
        prune_interval: float = PRUNE_INTERVAL,
        may_send: Callable[[], bool] = lambda: True,
    ) -> None:
        """``may_send`` is asked before every send: a replica that lost leadership stops at once."""
        self._store = store
        self._channel = channel
        self._attempt_timeout = attempt_timeout
        self._on_outcome = on_outcome
        self._prune_interval = prune_interval
        self._may_send = may_send
        self._wake = anyio.Event()
        self._in_flight: anyio.CancelScope | None = None

    @property
    def channel_name(self) -> str:
        return self._channel.name

    def wake(self) -> None:
        self._wake.set()

    def finish_within(self, seconds: float) -> None:
        """Let the send in flight, if any, go on for at most ``seconds`` more (before this worker is cancelled)."""
        scope = self._in_flight
        if scope is not None and not scope.cancel_called:
            scope.deadline = min(scope.deadline, anyio.current_time() + seconds)

    async def run(self) -> None:
        """Deliver what is due, then sleep until the next message that can be sent, a wake-up or the idle poll.

        Finished messages of the channel are pruned every ``prune_interval`` seconds.
        """
        next_prune = anyio.current_time() + self._prune_interval
        try:
            while True:
                try:
                    await self.deliver_due()
                    if anyio.current_time() >= next_prune:
                        next_prune = anyio.current_time() + self._prune_interval
                        await self._prune()
                    next_at = await self._store.next_attempt_at(self._channel.name)
                except StateStoreError as exc:  # full or broken state volume: keep the worker, try again
                    log.error("outbox_unavailable", channel=self._channel.name, error=str(exc))
                    next_at = None
                wait = IDLE_POLL if next_at is None else max(MIN_POLL, next_at - time.time())
                wait = min(wait, IDLE_POLL, max(MIN_POLL, next_prune - anyio.current_time()))
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                await self._channel.aclose()

    async def _prune(self) -> None:
        pruned = await self._store.prune(self._channel.name, time.time())
        if pruned:
            log.info("outbox_pruned", channel=self._channel.name, messages=pruned)

    async def deliver_due(self) -> int:
        """Try every message that is due now; return how many were delivered."""
        if not self._may_send():
            return 0
        items = await self._store.due(self._channel.name, time.time())
        delivered = 0
        for item in items:
            if not self._may_send():  # leadership lost while sending: the new leader takes over
                log.warning("delivery_stopped", channel=self._channel.name, reason="no longer the leader")
                break
            delivered += await self._deliver(item)
        return delivered

    async def _deliver(self, item: OutboxItem) -> bool:
        message = RenderedMessage(subject=item.subject, text=item.body, html=item.html)
        try:
            # Shielded: a send under way is not cut off when the worker is cancelled (leadership lost,
            # SIGTERM), or the next leader would send it again; finish_within bounds how long it may take.
            scope = self._in_flight = anyio.CancelScope(shield=True)
            with scope, anyio.fail_after(self._attempt_timeout + 5.0):
                await self._channel.send(item.recipient, message)
            if scope.cancelled_caught:  # cut off by finish_within: not known to be sent, left pending
                log.warning("delivery_cut_off", channel=self._channel.name, recipient=item.recipient)
                return False
        except DeliveryError as exc:
            await self._failed(item, exc.message, permanent=exc.permanent, retry_after=exc.retry_after)
            return False
        except TimeoutError:
            await self._failed(item, "delivery timed out", permanent=False, retry_after=None)
            return False
        except Exception as exc:  # a client library bug must not end the worker: retry later
            log.exception("notification_unexpected_error", channel=self._channel.name, recipient=item.recipient)
            await self._failed(item, f"unexpected {type(exc).__name__}", permanent=False, retry_after=None)
            return False
        with anyio.CancelScope(shield=True):
            await self._store.mark_sent(item.id, time.time())
        self._on_outcome(self._channel.name, "sent")
        log.info("notification_sent", channel=self._channel.name, recipient=item.recipient, subject=item.subject)
        return True

    async def _failed(self, item: OutboxItem, error: str, *, permanent: bool, retry_after: float | None) -> None:
        now = time.time()
        delay = retry_after if retry_after is not None else backoff_delay(item.attempts)
        if retry_after is None and now < item.deadline:
            delay = min(delay, item.deadline - now)  # one last try at the deadline
        if permanent or now + delay > item.deadline:
            reason = "permanent error" if permanent else "deadline passed"
            with anyio.CancelScope(shield=True):
                await self._store.mark_failed(item.id, error, now)
            self._on_outcome(self._channel.name, "failed")
            log.error(
                "notification_failed",
                channel=self._channel.name,
                recipient=item.recipient,
                subject=item.subject,
                error=error,
                reason=reason,
                attempts=item.attempts + 1,
            )
            return
        with anyio.CancelScope(shield=True):
            await self._store.reschedule(item.id, now + delay, error)
        self._on_outcome(self._channel.name, "retry")
        log.warning(
            "notification_retry",
            channel=self._channel.name,
            recipient=item.recipient,
            error=error,
            retry_in_seconds=round(delay, 2),
            attempts=item.attempts + 1,
        )
