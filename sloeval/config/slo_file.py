"""The SLO file: YAML validated by pydantic, then compiled into plain definitions.

``load_slo_file`` is the only entry point. Every problem becomes a
:class:`ConfigError` whose message is one line naming the file, the SLO and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sloeval.config.alert_rules import (
    CHANNELS_CONTEXT,
    AlertRule,
    AlertSpec,
    NotifyPolicy,
    NotifySpec,
    SilenceSpec,
    compile_alert,
    compile_policy,
    default_alerts,
)
from sloeval.config.durations import duration_from_config, format_duration, parse_duration
from sloeval.config.openslo import OpenSLOError, is_openslo, translate
from sloeval.config.selectors import Selector, SelectorError, is_label_name, parse_selector
from sloeval.errors import SloevalError

#: Windows evaluated for every SLO in addition to its period.
STANDARD_WINDOWS: tuple[int, ...] = (300, 1800, 3600, 7200, 21600, 86400, 259200)
#: Label names sloeval sets itself; config may not use them for grouping or extra labels.
RESERVED_LABELS = frozenset({"slo", "slo_type", "service", "window", "alert", "severity", "le", "sloeval_series"})
MAX_FILE_BYTES = 4 * 1024 * 1024
DEFAULT_PERIOD = "30d"


class ConfigError(SloevalError):
    """A configuration problem, with a one-line message fit for the user."""


def _to_selector(value: object) -> Selector:
    if isinstance(value, Selector):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a PromQL series selector string")
    try:
        return parse_selector(value)
    except SelectorError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[
    int,
    BeforeValidator(duration_from_config),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["5m", "1h", "30d"]}),
]
SelectorField = Annotated[
    Selector,
    PlainValidator(_to_selector),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ['samokoder_http_requests_total{job="api"}']}),
]


def _check_label_names(names: list[str] | dict[str, str]) -> None:
    for name in names:
        if not is_label_name(name):
            raise ValueError(f"{name!r} is not a valid label name")
        if name in RESERVED_LABELS or name.startswith("__"):
            raise ValueError(f"label name {name!r} is reserved by sloeval")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True)


class _Grouped(_Strict):
    group_by: list[str] = Field(default_factory=list, description="Labels to keep; one result per label set.")

    @field_validator("group_by")
    @classmethod
    def _valid_group_by(cls, value: list[str]) -> list[str]:
        _check_label_names(value)
        if len(set(value)) != len(value):
            raise ValueError("labels must not repeat")
        return value


class RatioSLI(_Grouped):
    """Events SLI: good/total or bad/total counters."""

    good: SelectorField | None = Field(None, description="Counter of good events.")
    bad: SelectorField | None = Field(None, description="Counter of bad events.")
    total: SelectorField = Field(description="Counter of all events.")

    @model_validator(mode="after")
    def _one_of_good_bad(self) -> RatioSLI:
        if (self.good is None) == (self.bad is None):
            raise ValueError("give exactly one of 'good' or 'bad' next to 'total'")
        return self


class LatencySLI(_Grouped):
    """Share of requests faster than a histogram bucket bound."""

    histogram: SelectorField = Field(description="Histogram base name (without _bucket) and matchers.")
    threshold_seconds: float = Field(gt=0, description="Bucket bound (le) that separates good from slow.")

    @field_validator("histogram")
    @classmethod
    def _base_name(cls, value: Selector) -> Selector:
        if value.metric is None:
            raise ValueError("the histogram selector must start with the metric name")
        if any(m.name == "le" for m in value.matchers):
            raise ValueError("do not match on 'le'; set threshold_seconds instead")
        for suffix in ("_bucket", "_count", "_sum"):
            if value.metric.endswith(suffix):
                return value.with_metric(value.metric.removesuffix(suffix))
        return value

    @field_validator("threshold_seconds")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value


class UptimeSLI(_Grouped):
    """Time-based availability: the share of samples equal to 1 (like ``up``)."""

    selector: SelectorField = Field(description='A 0/1 gauge, e.g. up{job="samokoder-api"}.')


class RawSLI(_Strict):
    """Escape hatch: any PromQL returning the error ratio, with ``$window`` as the range."""

    error_ratio: str = Field(min_length=1, description="PromQL with $window, returning the error ratio (0..1).")

    @field_validator("error_ratio")
    @classmethod
    def _has_window(cls, value: str) -> str:
        if "$window" not in value:
            raise ValueError("must contain $window where the range goes, e.g. rate(x[$window])")
        return value


class SLOSpec(_Strict):
    """One SLO as written in the file."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="Unique name; the `slo` label. Letters, digits and `_.:-`.",
    )
    slo_type: str = Field(
        "availability",
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="`availability`, `latency`, `errors` or your own word; the `slo_type` label.",
    )
    objective: float = Field(gt=0, lt=100, description="Target in percent, e.g. 99.9.")
    period: Duration | None = Field(None, description="Rolling period; defaults to the file's period.")
    description: str | None = Field(None, description="Free text for people.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on every exported series.")
    ratio: RatioSLI | None = Field(None, description="Events SLI from counters (see below).")
    latency: LatencySLI | None = Field(None, description="Latency SLI from a histogram (see below).")
    uptime: UptimeSLI | None = Field(None, description="Time-based SLI from a 0/1 gauge (see below).")
    raw: RawSLI | None = Field(None, description="Escape hatch: your own error-ratio PromQL (see below).")
    alerts: list[AlertSpec] | None = Field(
        None, description="Alert rules; when absent, the default burn-rate and budget alerts apply."
    )
    include_default_alerts: bool = Field(
        False, description="Add the default alerts to the listed ones (they are used anyway when none are listed)."
    )
    dashboard_url: str | None = Field(None, description="Link in this SLO's messages.")
    runbook_url: str | None = Field(None, description="Runbook link in this SLO's messages.")

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        _check_label_names(value)
        return value

    @field_validator("objective")
    @classmethod
    def _finite_objective(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite percentage between 0 and 100")
        return value

    @model_validator(mode="after")
    def _exactly_one_sli(self) -> SLOSpec:
        given = [k for k in ("ratio", "latency", "uptime", "raw") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one SLI kind of ratio, latency, uptime, raw (found: {found})")
        names = [a.name for a in self.alerts or ()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"alert name {duplicates[0]!r} is used twice in this SLO")
        return self


class SLOFileSpec(_Strict):
    """The whole SLO file."""

    service: str = Field(min_length=1, max_length=200, description="Service name, exported as label 'service'.")
    period: Duration = Field(parse_duration(DEFAULT_PERIOD), description="Default rolling period for every SLO.")
    slos: list[SLOSpec] = Field(min_length=1, description="The SLOs; at least one.")
    notify: NotifySpec = Field(
        default_factory=lambda: NotifySpec.model_validate({}), description="Routing, repeats, resolves, links."
    )
    silences: list[SilenceSpec] = Field(default_factory=list, description="Maintenance windows.")

    @field_validator("slos")
    @classmethod
    def _unique_names(cls, value: list[SLOSpec]) -> list[SLOSpec]:
        seen: set[str] = set()
        for slo in value:
            if slo.name in seen:
                raise ValueError(f"SLO name {slo.name!r} is used twice; names must be unique")
            seen.add(slo.name)
        return value


# --- compiled, internal form -------------------------------------------------------------


@dataclass(frozen=True)
class RatioIndicator:
    total: Selector
    good: Selector | None
    bad: Selector | None


@dataclass(frozen=True)
class LatencyIndicator:
    histogram: Selector
    threshold_seconds: float


@dataclass(frozen=True)
class UptimeIndicator:
    selector: Selector


@dataclass(frozen=True)
class RawIndicator:
    error_ratio: str


Indicator = RatioIndicator | LatencyIndicator | UptimeIndicator | RawIndicator
IndicatorKind = Literal["ratio", "latency", "uptime", "raw"]


@dataclass(frozen=True)
class SLODefinition:
    """One SLO ready for evaluation: durations in seconds, selectors parsed."""

    name: str
    slo_type: str
    service: str
    objective: float  # ratio, e.g. 0.999
    period: int  # seconds
    windows: tuple[int, ...]  # seconds, ascending, the period last
    group_by: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    indicator: Indicator
    description: str | None = None
    alerts: tuple[AlertRule, ...] = ()
    default_alerts: bool = False  # True when the rules are the (period-scaled) defaults
    dashboard_url: str | None = None
    runbook_url: str | None = None

    @property
    def kind(self) -> IndicatorKind:
        match self.indicator:
            case RatioIndicator():
                return "ratio"
            case LatencyIndicator():
                return "latency"
            case UptimeIndicator():
                return "uptime"
            case RawIndicator():
                return "raw"

    @cached_property
    def period_name(self) -> str:
        return format_duration(self.period)

    @cached_property
    def window_names(self) -> tuple[str, ...]:
        return tuple(format_duration(w) for w in self.windows)


@dataclass(frozen=True)
class SLOConfig:
    path: Path
    service: str
    slos: tuple[SLODefinition, ...]
    notify: NotifyPolicy = field(default_factory=NotifyPolicy)
    source_format: str = "sloeval"  # or "OpenSLO v1" for a translated OpenSLO file


def percent_to_ratio(percent: float) -> float:
    """99.9 -> 0.999 exactly as written (plain division gives 0.9990000000000001)."""
    return float(Decimal(repr(float(percent))) / 100)


def windows_for(period: int, extra: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The standard windows not longer than the period, the alerts' windows, the period."""
    return tuple(sorted({w for w in STANDARD_WINDOWS if w <= period} | set(extra) | {period}))


def _compile(spec: SLOSpec, file_spec: SLOFileSpec, min_window: float) -> SLODefinition:
    period = spec.period if spec.period is not None else file_spec.period
    listed = tuple(compile_alert(a) for a in spec.alerts or ())
    uses_defaults = spec.alerts is None or spec.include_default_alerts
    defaults = default_alerts(period, min_window) if uses_defaults else ()
    listed_names = {rule.name for rule in listed}
    alerts = tuple(rule for rule in defaults if rule.name not in listed_names) + listed
    for rule in alerts:
        for window in (*rule.windows, rule.for_seconds):
            if window > period:
                raise _CompileError(
                    spec.name, f"alerts.{rule.name}", f"{format_duration(window)} is longer than the period"
                )
    indicator: Indicator
    group_by: list[str] = []
    if spec.ratio is not None:
        indicator = RatioIndicator(spec.ratio.total, spec.ratio.good, spec.ratio.bad)
        group_by = spec.ratio.group_by
    elif spec.latency is not None:
        indicator = LatencyIndicator(spec.latency.histogram, spec.latency.threshold_seconds)
        group_by = spec.latency.group_by
    elif spec.uptime is not None:
        indicator = UptimeIndicator(spec.uptime.selector)
        group_by = spec.uptime.group_by
    else:
        assert spec.raw is not None
        indicator = RawIndicator(spec.raw.error_ratio)
    return SLODefinition(
        name=spec.name,
        slo_type=spec.slo_type,
        service=file_spec.service,
        objective=percent_to_ratio(spec.objective),
        period=period,
        windows=windows_for(period, tuple(w for rule in alerts for w in rule.windows)),
        group_by=tuple(group_by),
        labels=tuple(sorted(spec.labels.items())),
        indicator=indicator,
        description=spec.description,
        alerts=alerts,
        default_alerts=uses_defaults,
        dashboard_url=spec.dashboard_url or _fill(file_spec.notify.dashboard_url, spec.name),
        runbook_url=spec.runbook_url or _fill(file_spec.notify.runbook_url, spec.name),
    )


def _fill(template: str | None, slo: str) -> str | None:
    return None if template is None else template.replace("{slo}", slo)


class _CompileError(SloevalError):
    slo: str
    field: str

    def __init__(self, slo: str, field: str, message: str) -> None:
        super().__init__(message, slo=slo, field=field)


# --- loading --------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that refuses a mapping with the same key twice."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe_validation_error(path: Path, raw: Any, error: ValidationError) -> str:
    errors = error.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = list(first["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "slos" and isinstance(loc[1], int):
        index = loc[1]
        name = None
        slos = raw.get("slos") if isinstance(raw, dict) else None
        if isinstance(slos, list) and index < len(slos) and isinstance(slos[index], dict):
            candidate = slos[index].get("name")
            if isinstance(candidate, str) and candidate:
                name = candidate
        where = f"slo {json.dumps(name)}" if name else f"slo #{index + 1}"
        loc = loc[2:]
    field = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
    if first["type"] == "extra_forbidden":
        message = f"unknown key {json.dumps(str(loc[-1]))}"
        field = ".".join(str(part) for part in loc[:-1])
    elif first["type"] == "missing":
        message = "required field is missing"
    else:
        message = first["msg"].removeprefix("Value error, ")
    parts = [str(path)]
    if where:
        parts.append(where)
    if field:
        parts.append(field)
    line = ": ".join(parts) + ": " + message
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return _one_line(line)


def parse_slo_text(
    text: str, path: Path, *, min_window: float = 30.0, channels: Collection[str] | None = None
) -> SLOConfig:
    """Validate SLO file contents; raise :class:`ConfigError` with a one-line message.

    ``channels`` are the names routes may use (the channel modules'); None leaves them unchecked.
    """
    try:
        loaded = yaml.load_all(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        documents = [document for document in loaded if document is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(_one_line(f"{path}: {where}invalid YAML: {exc.problem or exc}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_one_line(f"{path}: invalid YAML: {exc}")) from None
    source_format = "sloeval"
    raw: Any
    if is_openslo(documents):
        try:
            raw = translate(documents)
        except OpenSLOError as exc:
            raise ConfigError(_one_line(f"{path}: {exc}")) from None
        source_format = "OpenSLO v1"
    elif len(documents) > 1:
        raise ConfigError(f"{path}: holds {len(documents)} YAML documents; a sloeval SLO file is one document")
    else:
        raw = documents[0] if documents else None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the file must be a mapping with 'service', 'period' and 'slos'")
    try:
        spec = SLOFileSpec.model_validate(raw, context={CHANNELS_CONTEXT: channels})
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(path, raw, exc)) from None
    try:
        slos = tuple(_compile(s, spec, min_window) for s in spec.slos)
    except _CompileError as exc:
        raise ConfigError(f"{path}: slo {json.dumps(exc.slo)}: {exc.field}: {exc.message}") from None
    notify = compile_policy(spec.notify, spec.silences)
    return SLOConfig(path=path, service=spec.service, slos=slos, notify=notify, source_format=source_format)


def load_slo_file(path: Path, *, min_window: float = 30.0, channels: Collection[str] | None = None) -> SLOConfig:
    """Read and validate the SLO file at ``path``."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: file is {size} bytes; the limit is {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the SLO file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_slo_text(text, path, min_window=min_window, channels=channels)
