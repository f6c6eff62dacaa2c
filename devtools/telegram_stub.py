"""A local stand-in for the Telegram Bot API, for tests and the demo.

Speaks enough of https://core.telegram.org/bots/api for python-telegram-bot 22::

    with BotApiStub() as stub:
        bot = telegram.Bot(stub.token, base_url=stub.url + "/bot")
        ...  # await bot.send_message(...)
        stub.wait_for_messages(1, timeout=5)

Requests go to ``/bot<token>/<method>``; parameters may come as a query string,
``application/x-www-form-urlencoded`` (what PTB sends), ``multipart/form-data`` (PTB, with files) or JSON.
Access logging is off because the token is part of the path.

What python-telegram-bot 22 raises for each answer (mapped from the HTTP status, see
``telegram.request.BaseRequest._request_wrapper``):

* any status with ``parameters.retry_after`` (429) -> ``telegram.error.RetryAfter``. Reading
  ``exc.retry_after`` gives an ``int`` plus a ``PTBDeprecationWarning`` unless ``PTB_TIMEDELTA=true``,
  in which case it is a ``datetime.timedelta``.
* 403 -> ``telegram.error.Forbidden``
* 401 and 404 -> ``telegram.error.InvalidToken``
* 400 -> ``telegram.error.BadRequest``; 409 -> ``telegram.error.Conflict``. PTB strips a leading
  "Bad Request: " from the description and then ``str.capitalize()``-s the rest (so "Can't parse entities: unsupported
  start tag ..."): match error texts case-insensitively.
* 500, 502 and any other status -> ``telegram.error.NetworkError`` (the description is the message)
* a reply slower than the client's read timeout (``set_delay``) -> ``telegram.error.TimedOut``
  (a subclass of ``NetworkError``); nothing listening -> ``NetworkError``.
* ``"ok": true`` with a ``result`` that is not what the method returns (``answer_next``): not a
  ``TelegramError`` at all but whatever ``de_json`` trips over (``KeyError``, ``TypeError``,
  ``AttributeError``); a bare ``true`` for ``sendMessage`` comes back as ``True``, not a ``Message``.

``Bot.__aenter__`` (``initialize``) calls ``getMe``, so a failure scripted for ``getMe`` fires there.
With ``parse_mode="HTML"`` the text is checked like the real API does (allowed tags only, bare ``<``/``&`` rejected
with 400), and texts longer than 4096 visible characters get 400 "message is too long". A request answered after the
client's timeout still counts as delivered, as on the real API.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from html import unescape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from devtools.loopback import LoopbackServer

DEFAULT_TOKEN = "123456:TEST-token"
BOT_ID = 123456
MAX_MESSAGE_LENGTH = 4096
# Tags the Bot API accepts with parse_mode=HTML.
_HTML_TAGS = frozenset(
    ["b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre"]
) | {"blockquote", "tg-emoji"}
_HTML_TOKEN = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[^<>]*)?)\s*>|<|&(#\d+|#x[0-9A-Fa-f]+|lt|gt|amp|quot);|&")
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was kicked from the group chat",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass
class SentMessage:
    """A ``sendMessage`` call the stub answered successfully."""

    token: str
    chat_id: str
    text: str
    parse_mode: str | None
    at: float
    raw: dict[str, Any]


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None
    remaining: int
    chat_id: str | None


class _ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def _error_body(status: int, description: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def _check_html(text: str) -> str:
    """Validate Telegram-flavoured HTML like the Bot API does; return the visible text."""
    stack: list[str] = []
    visible: list[str] = []
    pos = 0
    for match in _HTML_TOKEN.finditer(text):
        visible.append(text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        offset = len(text[: match.start()].encode())
        if match.group(2):
            name = match.group(2).lower()
            if name not in _HTML_TAGS:
                kind = "end" if match.group(1) else "start"
                raise _ApiError(
                    400, f'Bad Request: can\'t parse entities: Unsupported {kind} tag "{name}" at byte offset {offset}'
                )
            if not match.group(1):
                stack.append(name)
            elif not stack or stack.pop() != name:
                raise _ApiError(400, f"Bad Request: can't parse entities: Unexpected end tag at byte offset {offset}")
        elif match.group(4):
            visible.append(unescape(token))
        else:
            raise _ApiError(400, f"Bad Request: can't parse entities: Unescaped {token!r} at byte offset {offset}")
    visible.append(text[pos:])
    if stack:
        raise _ApiError(
            400, f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1]}\""
        )
    return "".join(visible)


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    params: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        params[name] = raw if part.get_filename() else raw.decode("utf-8")
    return params


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], stub: BotApiStub) -> None:
        super().__init__(address, _Handler)
        self.stub = stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client (e.g. after its timeout) hangs up mid-answer."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """No access log: the token is in the path."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.server.stub._answer(self.path, self.headers.get("Content-Type") or "", body)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class BotApiStub(LoopbackServer):
    """Threaded HTTP server answering Bot API calls on 127.0.0.1; a context manager."""

    thread_name = "telegram-stub"
    poll_interval = 0.05

    def __init__(self, token: str = DEFAULT_TOKEN, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self.token = token
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._messages: list[SentMessage] = []
        self._requests: list[tuple[str, str, dict[str, Any]]] = []
        self._attempts: dict[str, list[float]] = {}
        self._failures: list[_Failure] = []
        self._answers: list[list[Any]] = []  # [method, result, remaining]
        self._delay = 0.0
        self._message_ids = itertools.count(1)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in a daemon thread; sets ``url``."""
        if self._server is not None:
            raise RuntimeError("BotApiStub already started")
        self._stopping.clear()
        super().start()

    def _make_server(self) -> _Server:
        return _Server((self.host, self._port), self)

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._stopping.set()
        super().stop()

    # scripting -------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: str | int | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (optionally only to ``chat_id``) with an API error.

        ``description`` defaults to the Bot API wording for ``status`` (429: "Too Many Requests: retry after N").
        """
        if status == HTTPStatus.TOO_MANY_REQUESTS and retry_after is None:
            retry_after = 1
        if description is None:
            if status == HTTPStatus.TOO_MANY_REQUESTS:
                description = f"Too Many Requests: retry after {retry_after}"
            else:
                description = _DEFAULT_DESCRIPTIONS.get(status, HTTPStatus(status).phrase)
        failure = _Failure(
            method.lower(), status, description, retry_after, times, None if chat_id is None else str(chat_id)
        )
        with self._lock:
            self._failures.append(failure)

    def answer_next(self, method: str, *, result: Any, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": true, "result": result}``, e.g. a malformed one.

        Such a ``sendMessage`` is not recorded as delivered.
        """
        with self._lock:
            self._answers.append([method.lower(), result, times])

    def set_delay(self, seconds: float) -> None:
        """Wait ``seconds`` before answering every following request (0 to turn off)."""
        with self._lock:
            self._delay = seconds

    def reset(self) -> None:
        """Forget recorded traffic, scripted failures and the delay."""
        with self._lock:
            self._messages.clear()
            self._requests.clear()
            self._attempts.clear()
            self._failures.clear()
            self._answers.clear()
            self._delay = 0.0

    # inspection ------------------------------------------------------------------------------

    @property
    def messages(self) -> list[SentMessage]:
        """Snapshot of delivered messages (same as ``sent()``)."""
        return self.sent()

    @property
    def requests(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Snapshot of ``(token, method, params)`` for every request, failed ones included."""
        with self._lock:
            return list(self._requests)

    def sent(self) -> list[SentMessage]:
        """Snapshot of successfully delivered ``sendMessage`` calls, oldest first."""
        with self._lock:
            return list(self._messages)

    def wait_for_messages(self, count: int, timeout: float) -> list[SentMessage]:
        """Block until at least ``count`` messages were delivered; ``AssertionError`` on timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                got = [(m.chat_id, m.text) for m in self._messages]
                raise AssertionError(f"expected {count} Telegram messages within {timeout}s, got {len(got)}: {got}")
            return list(self._messages)

    def min_gap_per_chat(self) -> float | None:
        """Smallest interval (s) between two ``sendMessage`` attempts to one chat, failed ones included.

        ``None`` while no chat got two attempts.
        """
        with self._lock:
            gaps = [b - a for times in self._attempts.values() for a, b in itertools.pairwise(times)]
        return min(gaps) if gaps else None

    # request handling ------------------------------------------------------------------------

    def _answer(self, raw_path: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        match = re.fullmatch(r"/bot([^/]*)/([A-Za-z]+)/?", parts.path)
        if match is None:
            return 404, _error_body(404, "Not Found")
        token, method = match.groups()
        try:
            params = self._parse_params(parts.query, content_type, body)
        except ValueError as exc:
            return 400, _error_body(400, f"Bad Request: {exc}")
        with self._lock:
            self._requests.append((token, method, params))
            delay = self._delay
            if method.lower() == "sendmessage" and "chat_id" in params:
                self._attempts.setdefault(str(params["chat_id"]), []).append(time.monotonic())
        if delay > 0 and self._stopping.wait(delay):
            return 500, _error_body(500, "Internal Server Error: stub stopping")
        if token != self.token:
            return 401, _error_body(401, "Unauthorized")
        try:
            self._maybe_fail(method, params)
            scripted = self._scripted_answer(method)
            if scripted is not None:
                return 200, {"ok": True, "result": scripted[0]}
            return 200, {"ok": True, "result": self._result(token, method, params)}
        except _ApiError as exc:
            return exc.status, _error_body(exc.status, exc.description, exc.parameters)

    @staticmethod
    def _parse_params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        mime = content_type.split(";", 1)[0].strip().lower()
        if not body:
            return params
        if mime == "application/json":
            decoded = json.loads(body)
            if not isinstance(decoded, dict):
                raise ValueError("JSON body must be an object")
            params.update(decoded)
        elif mime == "multipart/form-data":
            params.update(_parse_multipart(content_type, body))
        else:
            params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        return params

    def _maybe_fail(self, method: str, params: Mapping[str, Any]) -> None:
        chat = str(params.get("chat_id")) if "chat_id" in params else None
        with self._lock:
            for failure in self._failures:
                if failure.method != method.lower() or (failure.chat_id is not None and failure.chat_id != chat):
                    continue
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                extra = {"retry_after": failure.retry_after} if failure.retry_after is not None else None
                raise _ApiError(failure.status, failure.description, extra)

    def _scripted_answer(self, method: str) -> tuple[Any] | None:
        with self._lock:
            for answer in self._answers:
                if answer[0] == method.lower():
                    answer[2] -= 1
                    if answer[2] <= 0:
                        self._answers.remove(answer)
                    return (answer[1],)
        return None

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "sloeval-test",
            "username": "sloeval_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _result(self, token: str, method: str, params: dict[str, Any]) -> Any:
        name = method.lower()
        if name == "getme":
            return self._bot_user()
        if name == "sendmessage":
            return self._send_message(token, params)
        return True

    def _send_message(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = str(params.get("chat_id", "")).strip()
        text = str(params.get("text", ""))
        if not chat_id:
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        parse_mode = params.get("parse_mode")
        parse_mode = str(parse_mode) if parse_mode else None
        visible = _check_html(text) if parse_mode is not None and parse_mode.upper() == "HTML" else text
        if len(visible) > MAX_MESSAGE_LENGTH:
            raise _ApiError(400, "Bad Request: message is too long")
        if re.fullmatch(r"-?\d+", chat_id):
            numeric = int(chat_id)
            chat: dict[str, Any] = (
                {"id": numeric, "type": "private", "first_name": "oncall"}
                if numeric > 0
                else {"id": numeric, "type": "group", "title": "sloeval"}
            )
        else:
            chat = {"id": -1001000000000, "type": "channel", "title": chat_id, "username": chat_id.lstrip("@")}
        now = time.time()
        with self._changed:
            message_id = next(self._message_ids)
            self._messages.append(SentMessage(token, chat_id, text, parse_mode, now, dict(params)))
            self._changed.notify_all()
        return {"message_id": message_id, "from": self._bot_user(), "chat": chat, "date": int(now), "text": text}
