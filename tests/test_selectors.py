import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloeval.config.selectors import Matcher, Selector, SelectorError, parse_selector, quote


def test_parse_plain_metric() -> None:
    assert parse_selector("up") == Selector("up", ())


def test_parse_matchers_all_ops_and_quotes() -> None:
    sel = parse_selector("""http_requests_total{ job="api", code!='200', path=~`/v1/.*`, x!~"a|b", }""")
    assert sel.metric == "http_requests_total"
    assert sel.matchers == (
        Matcher("job", "=", "api"),
        Matcher("code", "!=", "200"),
        Matcher("path", "=~", "/v1/.*"),
        Matcher("x", "!~", "a|b"),
    )


def test_name_matcher_becomes_metric() -> None:
    assert parse_selector('{__name__="up", job="a"}') == Selector("up", (Matcher("job", "=", "a"),))


def test_escapes_are_decoded_and_reencoded() -> None:
    sel = parse_selector(r'm{a="q\"}\n\\ \u00e9"}')
    assert sel.matchers[0].value == 'q"}\n\\ é'
    assert parse_selector(sel.render()) == sel


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        '{job=~".*"}',
        'm{a="b"} or vector(1)',
        "sum(m)",
        "m[5m]",
        'm{a="b"',
        "m{a=b}",
        'm{a="b"}}',
        'm{="b"}',
        'm{a=~"("}',
        'up{__name__="x"}',
        'm{a="\\q"}',
        "m offset 5m",
    ],
)
def test_rejects_anything_but_one_selector(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


label_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(label_values)
def test_quote_round_trips_any_value(value: str) -> None:
    sel = Selector("m", (Matcher("a", "=", value),))
    assert parse_selector(sel.render()) == sel
    assert "\n" not in quote(value)


@given(label_values)
def test_hostile_value_cannot_escape_the_matcher(value: str) -> None:
    rendered = Selector("m", (Matcher("a", "=", value),)).render()
    reparsed = parse_selector(rendered)
    assert reparsed.metric == "m"
    assert len(reparsed.matchers) == 1
    assert reparsed.matchers[0].value == value
