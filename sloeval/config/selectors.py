"""PromQL series selectors: parsed from config text, rendered back with safe quoting.

A selector from the SLO file is parsed completely into a metric name and label
matchers. Queries are built from the parsed form only, so no text in the config can
change the meaning of a query (a ``"`` or ``}`` inside a label value stays inside it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from sloeval.errors import SloevalError

MatchOp = Literal["=", "!=", "=~", "!~"]

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS: tuple[MatchOp, ...] = ("=~", "!~", "!=", "=")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


class SelectorError(SloevalError, ValueError):
    """The text is not a valid PromQL series selector."""


def is_label_name(text: str) -> bool:
    return _LABEL_NAME.fullmatch(text) is not None


def is_metric_name(text: str) -> bool:
    return _METRIC_NAME.fullmatch(text) is not None


def quote(value: str) -> str:
    """Quote a string as a PromQL double-quoted literal that reads back as ``value``."""
    out = ['"']
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: MatchOp
    value: str

    def render(self) -> str:
        return f"{self.name}{self.op}{quote(self.value)}"

    def matches_empty(self) -> bool:
        if self.op == "=":
            return self.value == ""
        if self.op == "!=":
            return self.value != ""
        matched = re.fullmatch(self.value, "") is not None
        return matched if self.op == "=~" else not matched


@dataclass(frozen=True)
class Selector:
    """A series selector: an optional metric name plus label matchers."""

    metric: str | None
    matchers: tuple[Matcher, ...] = ()

    def render(self) -> str:
        inner = ", ".join(m.render() for m in self.matchers)
        if self.metric is None:
            return "{" + inner + "}"
        return f"{self.metric}{{{inner}}}" if inner else self.metric

    def with_metric(self, metric: str) -> Selector:
        return replace(self, metric=metric)

    def with_matcher(self, matcher: Matcher) -> Selector:
        return replace(self, matchers=(*self.matchers, matcher))

    def __str__(self) -> str:
        return self.render()


def parse_selector(text: str) -> Selector:
    """Parse ``metric{label="value", other=~"re.*"}`` into a :class:`Selector`.

    The whole text must be one selector; anything else (operators, functions,
    ranges, a second expression) is rejected.
    """
    if not isinstance(text, str):
        raise SelectorError("a selector must be a string such as 'http_requests_total{job=\"api\"}'")
    parser = _Parser(text)
    selector = parser.parse()
    _check_selector(selector)
    return selector


def _check_selector(selector: Selector) -> None:
    metric = selector.metric
    matchers = list(selector.matchers)
    for matcher in matchers:
        if matcher.name == "__name__" and metric is not None:
            raise SelectorError("metric name given twice (before '{' and as __name__)")
    if metric is None and not matchers:
        raise SelectorError("empty selector: name a metric or give at least one label matcher")
    if metric is None and all(m.matches_empty() for m in matchers):
        raise SelectorError("selector must contain at least one matcher that does not match the empty string")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> SelectorError:
        return SelectorError(f"{message} at position {self.pos + 1} of selector {self.text!r}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def take(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group(0)

    def parse(self) -> Selector:
        self.skip_space()
        metric = self.take(_METRIC_NAME)
        self.skip_space()
        matchers: list[Matcher] = []
        if self.pos < len(self.text) and self.text[self.pos] == "{":
            self.pos += 1
            matchers = self.parse_matchers()
        self.skip_space()
        if self.pos != len(self.text):
            raise self.error("unexpected text")
        if metric is None and not matchers and not self.text.strip().startswith("{"):
            raise self.error("expected a metric name or '{'")
        name_matchers = [m for m in matchers if m.name == "__name__" and m.op == "="]
        if metric is None and len(name_matchers) == 1 and is_metric_name(name_matchers[0].value):
            metric = name_matchers[0].value
            matchers = [m for m in matchers if m is not name_matchers[0]]
        return Selector(metric, tuple(matchers))

    def parse_matchers(self) -> list[Matcher]:
        matchers: list[Matcher] = []
        while True:
            self.skip_space()
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                return matchers
            name = self.take(_LABEL_NAME)
            if name is None:
                raise self.error("expected a label name")
            self.skip_space()
            op = next((o for o in _OPS if self.text.startswith(o, self.pos)), None)
            if op is None:
                raise self.error("expected one of = != =~ !~")
            self.pos += len(op)
            self.skip_space()
            value = self.parse_string()
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise self.error(f"invalid regular expression {value!r} ({exc})") from None
            matchers.append(Matcher(name, op, value))
            self.skip_space()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                return matchers
            raise self.error("expected ',' or '}'")

    def parse_string(self) -> str:
        if self.pos >= len(self.text):
            raise self.error("expected a quoted string")
        quote_char = self.text[self.pos]
        if quote_char not in "\"'`":
            raise self.error("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == quote_char:
                return "".join(out)
            if quote_char == "`":
                out.append(char)
            elif char == "\n":
                raise self.error("newline inside a quoted string")
            elif char == "\\":
                out.append(self.parse_escape(quote_char))
            else:
                out.append(char)
        raise self.error("unterminated quoted string")

    def parse_escape(self, quote_char: str) -> str:
        if self.pos >= len(self.text):
            raise self.error("unterminated escape sequence")
        char = self.text[self.pos]
        self.pos += 1
        if char in _SIMPLE_ESCAPES and (char not in "\"'" or char == quote_char):
            return _SIMPLE_ESCAPES[char]
        widths = {"x": 2, "u": 4, "U": 8}
        if char in widths:
            digits = self.text[self.pos : self.pos + widths[char]]
            if len(digits) != widths[char] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error(f"invalid \\{char} escape")
            self.pos += widths[char]
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise self.error(f"invalid \\{char} escape")
            return chr(code)
        if char in "01234567":
            digits = self.text[self.pos - 1 : self.pos + 2]
            if len(digits) != 3 or not all(c in "01234567" for c in digits):
                raise self.error("invalid octal escape")
            self.pos += 2
            return chr(int(digits, 8))
        raise self.error(f"unknown escape sequence \\{char}")
