import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sloeval.config.selectors import Matcher
from sloeval.config.slo_file import (
    ConfigError,
    LatencyIndicator,
    RatioIndicator,
    load_slo_file,
    parse_slo_text,
    windows_for,
)

PATH = Path("slos.yaml")
REPO = Path(__file__).resolve().parent.parent


def slo_file(slo_body: str, head: str = "service: api\nperiod: 30d\n") -> str:
    return head + "slos:\n" + textwrap.indent(textwrap.dedent(slo_body), "  ")


GOOD = """\
- name: errors
  objective: 99
  ratio: {bad: 'req_total{code=~"5.."}', total: req_total, group_by: [endpoint]}
"""


def test_valid_file_compiles() -> None:
    config = parse_slo_text(slo_file(GOOD), PATH)
    (slo,) = config.slos
    assert slo.objective == pytest.approx(0.99)
    assert slo.period == 30 * 86400
    assert slo.window_names == ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
    assert slo.group_by == ("endpoint",)
    assert isinstance(slo.indicator, RatioIndicator)
    assert slo.indicator.bad is not None
    assert slo.indicator.bad.matchers == (Matcher("code", "=~", "5.."),)


def test_shipped_config_is_valid() -> None:
    config = load_slo_file(REPO / "config" / "slos.yaml")
    assert {s.slo_type for s in config.slos} == {"availability", "latency", "errors"}
    latency = next(s for s in config.slos if s.slo_type == "latency")
    assert isinstance(latency.indicator, LatencyIndicator)
    assert latency.indicator.threshold_seconds == 2
    assert {s.objective for s in config.slos} == {0.999, 0.95, 0.99}


def test_windows_never_exceed_the_period() -> None:
    assert windows_for(86400) == (300, 1800, 3600, 7200, 21600, 86400)
    assert windows_for(7 * 86400)[-1] == 7 * 86400


def test_latency_histogram_suffix_is_accepted() -> None:
    text = slo_file("- name: lat\n  objective: 95\n  latency: {histogram: h_bucket, threshold_seconds: 2}\n")
    indicator = parse_slo_text(text, PATH).slos[0].indicator
    assert isinstance(indicator, LatencyIndicator)
    assert indicator.histogram.metric == "h"


BAD_CASES = [
    # (slo body or whole file, expected fragments)
    ("- name: e\n  objective: 100\n  ratio: {bad: a, total: b}\n", ['slo "e"', "objective", "less than 100"]),
    ("- name: e\n  objective: 0\n  ratio: {bad: a, total: b}\n", ['slo "e"', "objective", "greater than 0"]),
    ("- name: e\n  objective: '99'\n  ratio: {bad: a, total: b}\n", ['slo "e"', "objective"]),
    ("- name: e\n  objective: 99\n  ratio: {bad: a, total: b}\n  colour: red\n", ['slo "e"', 'unknown key "colour"']),
    ("- name: e\n  objective: 99\n  ratio: {bad: a, total: b, extra: 1}\n", ['slo "e"', "ratio", '"extra"']),
    ("- name: e\n  objective: 99\n  ratio: {total: b}\n", ['slo "e"', "ratio", "exactly one of 'good' or 'bad'"]),
    ("- name: e\n  objective: 99\n", ['slo "e"', "exactly one SLI kind"]),
    (
        "- name: e\n  objective: 99\n  ratio: {bad: a, total: b}\n  uptime: {selector: up}\n",
        ['slo "e"', "exactly one SLI kind", "ratio, uptime"],
    ),
    ("- name: e\n  objective: 99\n  period: 30x\n  ratio: {bad: a, total: b}\n", ['slo "e"', "period", "30x"]),
    ("- name: e\n  objective: 99\n  period: 0d\n  ratio: {bad: a, total: b}\n", ['slo "e"', "period"]),
    ("- name: e\n  objective: 99\n  ratio: {bad: '{}', total: b}\n", ['slo "e"', "ratio.bad", "empty selector"]),
    (
        "- name: e\n  objective: 99\n  ratio: {bad: 'a{x=\"1\"} or vector(1)', total: b}\n",
        ['slo "e"', "ratio.bad", "unexpected text"],
    ),
    ("- name: e\n  objective: 99\n  ratio: {bad: a, total: b, group_by: [slo]}\n", ['slo "e"', "group_by", "reserved"]),
    ("- name: e\n  objective: 99\n  ratio: {bad: a, total: b, group_by: [9x]}\n", ['slo "e"', "group_by", "label"]),
    ("- name: e\n  objective: 99\n  labels: {'a-b': x}\n  ratio: {bad: a, total: b}\n", ['slo "e"', "labels"]),
    (
        "- name: e\n  objective: 95\n  latency: {histogram: h, threshold_seconds: 0}\n",
        ['slo "e"', "latency.threshold_seconds"],
    ),
    (
        "- name: e\n  objective: 95\n  latency: {histogram: 'h{le=\"2\"}', threshold_seconds: 2}\n",
        ['slo "e"', "latency.histogram", "le"],
    ),
    ("- name: e\n  objective: 95\n  raw: {error_ratio: 'rate(x[5m])'}\n", ['slo "e"', "raw.error_ratio", "$window"]),
    ("- objective: 99\n  ratio: {bad: a, total: b}\n", ["slo #1", "name", "missing"]),
    ("- name: 'bad name'\n  objective: 99\n  ratio: {bad: a, total: b}\n", ['slo "bad name"', "name"]),
    (
        "- name: e\n  objective: 99\n  ratio: {bad: a, total: b}\n"
        "- name: e\n  objective: 98\n  ratio: {bad: a, total: b}\n",
        ["slos", "used twice"],
    ),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_CASES)
def test_bad_slo_gives_one_line_naming_file_slo_and_field(body: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_slo_text(slo_file(body), PATH)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("slos.yaml: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("service: a\nslos: [\n", ["invalid YAML", "line"]),
        ("- a\n- b\n", ["must be a mapping"]),
        ("", ["must be a mapping"]),
        ("service: a\nservice: b\nslos: []\n", ["duplicate key 'service'"]),
        ("service: a\nslos: []\n", ["slos", "at least 1"]),
        ("slos:\n" + GOOD, ["service", "missing"]),
        ("service: a\nperiod: 5\nslos:\n" + GOOD, ["period", "duration"]),
        ("service: a\nretention: 5d\nslos:\n" + GOOD, ['unknown key "retention"']),
    ],
)
def test_bad_file_level_problems(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_slo_text(text, PATH)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unreadable_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_slo_file(tmp_path / "missing.yaml")
    huge = tmp_path / "huge.yaml"
    huge.write_text("#" * (5 * 1024 * 1024))
    with pytest.raises(ConfigError, match="limit"):
        load_slo_file(huge)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_slo_file(binary)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
slo_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=12), st.integers()),
        "objective": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=5)),
        "period": st.one_of(st.text(max_size=6), st.integers()),
        "ratio": st.fixed_dictionaries(
            {}, optional={"bad": st.text(max_size=30), "total": st.text(max_size=30), "group_by": yaml_values}
        ),
        "latency": yaml_values,
        "labels": yaml_values,
        "unknown": yaml_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"service": yaml_values, "slos": st.lists(slo_like, max_size=3)}, optional={"period": yaml_values}
    )
)
def test_fuzzed_files_either_load_or_give_one_line(document: dict[str, object]) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    try:
        parse_slo_text(text, PATH)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith("slos.yaml")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_text_never_raises_anything_but_config_error(text: str) -> None:
    try:
        parse_slo_text(text, PATH)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_cli_check_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(slo_file("- name: e\n  objective: 120\n  ratio: {bad: a, total: b}\n"))
    run = [sys.executable, "-m", "sloeval", "check"]
    ok = subprocess.run([*run, "-c", str(REPO / "config" / "slos.yaml")], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    invalid = subprocess.run([*run, "-c", str(bad)], capture_output=True, text=True, check=False)
    assert invalid.returncode == 1
    assert "Traceback" not in invalid.stderr
    assert invalid.stderr.strip().count("\n") == 0
    assert str(bad) in invalid.stderr
    assert 'slo "e"' in invalid.stderr
    assert "objective" in invalid.stderr
    usage = subprocess.run([*run, "--no-such-flag"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2


def test_cli_bad_settings_one_line(tmp_path: Path) -> None:
    env = {"SLOEVAL_EVAL_INTERVAL": "-1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "sloeval", "check", "-c", str(REPO / "config" / "slos.yaml")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "SLOEVAL_EVAL_INTERVAL" in result.stderr
    assert "Traceback" not in result.stderr
