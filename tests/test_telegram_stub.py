"""The Bot API stub, driven by the real python-telegram-bot client."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import httpx
import pytest
import telegram
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.request import HTTPXRequest

from devtools.telegram_stub import BotApiStub

CHAT = "4242"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stub() -> Iterator[BotApiStub]:
    with BotApiStub() as server:
        yield server


def make_bot(stub: BotApiStub, *, token: str | None = None, read_timeout: float = 5.0) -> telegram.Bot:
    request = HTTPXRequest(read_timeout=read_timeout, connect_timeout=2.0)
    return telegram.Bot(token or stub.token, base_url=stub.url + "/bot", request=request)


@pytest.mark.anyio
async def test_get_me_and_send_message(stub: BotApiStub) -> None:
    async with make_bot(stub) as bot:
        assert bot.username == "sloeval_test_bot"
        me = await bot.get_me()
        assert me.is_bot
        assert me.id == 123456
        first = await bot.send_message(CHAT, "<b>SLO</b> burn &lt;fast&gt;", parse_mode="HTML")
        second = await bot.send_message(int(CHAT), "plain")
    assert first.text == "<b>SLO</b> burn &lt;fast&gt;"
    assert first.chat.id == int(CHAT)
    assert first.chat.type == "private"
    assert second.message_id == first.message_id + 1
    assert isinstance(first.date, dt.datetime)
    messages = stub.wait_for_messages(2, timeout=1)
    assert [(m.chat_id, m.parse_mode) for m in messages] == [(CHAT, "HTML"), (CHAT, None)]
    assert messages[0].token == stub.token
    assert [method for _, method, _ in stub.requests] == ["getMe", "getMe", "sendMessage", "sendMessage"]
    gap = stub.min_gap_per_chat()
    assert gap is not None
    assert gap >= 0


@pytest.mark.anyio
async def test_retry_after(stub: BotApiStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    stub.fail_next("sendMessage", status=429, retry_after=7)
    async with make_bot(stub) as bot:
        with pytest.raises(RetryAfter) as info:
            await bot.send_message(CHAT, "x")
        assert info.value.retry_after == dt.timedelta(seconds=7)
        await bot.send_message(CHAT, "after")
    assert [m.text for m in stub.sent()] == ["after"]
    assert len(stub.requests) == 3


@pytest.mark.anyio
async def test_forbidden_only_for_one_chat(stub: BotApiStub) -> None:
    stub.fail_next("sendMessage", status=403, chat_id="-100", times=2)
    async with make_bot(stub) as bot:
        await bot.send_message(CHAT, "ok")
        for _ in range(2):
            with pytest.raises(Forbidden, match="bot was kicked from the group chat"):
                await bot.send_message(-100, "x")
        await bot.send_message(-100, "ok again")
    assert [m.chat_id for m in stub.sent()] == [CHAT, "-100"]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502])
async def test_server_errors_are_network_errors(stub: BotApiStub, status: int) -> None:
    stub.fail_next("sendMessage", status=status)
    async with make_bot(stub) as bot:
        with pytest.raises(NetworkError) as info:
            await bot.send_message(CHAT, "x")
    assert not isinstance(info.value, TimedOut)
    assert stub.sent() == []


@pytest.mark.anyio
async def test_bad_html_is_rejected(stub: BotApiStub) -> None:
    async with make_bot(stub) as bot:
        with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
            await bot.send_message(CHAT, "latency < 2s", parse_mode="HTML")
        with pytest.raises(BadRequest, match=r"(?i)unsupported start tag"):
            await bot.send_message(CHAT, "<div>x</div>", parse_mode="HTML")
        with pytest.raises(BadRequest, match=r"(?i)too long"):
            await bot.send_message(CHAT, "x" * 4097)
        await bot.send_message(CHAT, '<a href="http://x/?a=1&amp;b=2">ok</a> &#8805; 99.9%', parse_mode="HTML")
    assert len(stub.sent()) == 1


@pytest.mark.anyio
async def test_wrong_token(stub: BotApiStub) -> None:
    bot = make_bot(stub, token="999:wrong")
    with pytest.raises(InvalidToken):
        async with bot:
            pass


@pytest.mark.anyio
async def test_slow_answer_times_out(stub: BotApiStub) -> None:
    async with make_bot(stub, read_timeout=0.3) as bot:
        stub.set_delay(1.0)
        with pytest.raises(TimedOut):
            await bot.send_message(CHAT, "x")
        stub.set_delay(0)
        await bot.send_message(CHAT, "fast")
    # Like the real API, the slow request is still delivered after the client gave up on it.
    assert sorted(m.text for m in stub.wait_for_messages(2, timeout=2)) == ["fast", "x"]


def test_json_and_form_bodies_and_errors(stub: BotApiStub) -> None:
    base = f"{stub.url}/bot{stub.token}"
    ok = httpx.post(f"{base}/sendMessage", json={"chat_id": 1, "text": "json"}).json()
    assert ok["ok"] is True
    assert ok["result"]["text"] == "json"
    multipart = httpx.post(
        f"{base}/sendMessage", data={"chat_id": "2", "text": "multi"}, files={"doc": ("a.txt", b"data", "text/plain")}
    )
    assert multipart.json()["ok"] is True
    assert httpx.post(f"{base}/close").json() == {"ok": True, "result": True}
    stub.fail_next("logOut", status=429, retry_after=3)
    assert httpx.post(f"{base}/logOut").json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    unauthorized = httpx.post(f"{stub.url}/bot1:nope/getMe")
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert [m.text for m in stub.sent()] == ["json", "multi"]
    assert stub.sent()[1].raw["doc"] == b"data"


def test_wait_for_messages_reports_what_arrived(stub: BotApiStub) -> None:
    httpx.post(f"{stub.url}/bot{stub.token}/sendMessage", data={"chat_id": "5", "text": "only one"})
    with pytest.raises(AssertionError, match="only one"):
        stub.wait_for_messages(2, timeout=0.2)


def test_min_gap_per_chat(stub: BotApiStub) -> None:
    base = f"{stub.url}/bot{stub.token}"
    assert stub.min_gap_per_chat() is None
    httpx.post(f"{base}/sendMessage", data={"chat_id": "1", "text": "a"})
    httpx.post(f"{base}/sendMessage", data={"chat_id": "2", "text": "b"})
    assert stub.min_gap_per_chat() is None
    time.sleep(0.2)
    httpx.post(f"{base}/sendMessage", data={"chat_id": "1", "text": "c"})
    gap = stub.min_gap_per_chat()
    assert gap is not None
    assert 0.2 <= gap < 1.0
