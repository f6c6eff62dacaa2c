"""OpenSLO v1 documents, translated into the native SLO file.

A file whose YAML documents carry ``apiVersion: openslo/v1`` is read as OpenSLO
(https://github.com/OpenSLO/OpenSLO). :func:`translate` turns its objects into the
plain dict that :class:`sloeval.config.slo_file.SLOFileSpec` validates, so the native
validation, compilation and query building apply unchanged. Everything sloeval cannot
evaluate with the same meaning is rejected with :class:`OpenSLOError` (one line naming
the object, the field, why, and what to do); nothing is silently approximated.

Read:

* ``SLO`` with ``budgetingMethod: Occurrences``, one rolling ``timeWindow`` (m, h, d, w),
  ``objectives`` with ``target`` or ``targetPercent`` (one sloeval SLO per objective),
  ``indicator`` inline or ``indicatorRef`` to an ``SLI`` in the same file, ``alertPolicies``.
* ``SLI`` with ``ratioMetric`` (``counter: true``; ``good`` or ``bad`` plus ``total``) whose
  Prometheus queries are series selectors, optionally in ``rate``/``increase`` and
  ``sum``/``sum by``: the range is replaced by sloeval's windows, ``by`` becomes ``group_by``.
* ``DataSource`` of type Prometheus (its connection details are ignored: sloeval queries
  ``SLOEVAL_PROMETHEUS_URL``), ``Service`` (checked against ``spec.service``).
* ``AlertPolicy``/``AlertCondition`` with a ``burnrate`` condition: burn rate > k over W is
  exactly SLI < 1 - k * (1 - target) over W, so it becomes an ``sli_below`` alert, next to
  sloeval's default alerts. ``AlertNotificationTarget`` is accepted and ignored: sloeval
  routes by severity (``notify.routes``, ``SLOEVAL_TELEGRAM_*``/``SLOEVAL_SMTP_*``).
* ``metadata.labels`` become the SLO's ``labels`` (a list value is joined with ``,``; a
  key is made a Prometheus label name by replacing other characters with ``_``);
  annotations ``sloeval/slo-type``, ``sloeval/dashboard-url`` and ``sloeval/runbook-url``
  set those native fields, other annotations are ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sloeval.config.durations import format_duration, parse_duration
from sloeval.config.selectors import Selector, SelectorError, parse_selector
from sloeval.errors import SloevalError

API_VERSION = "openslo/v1"
KINDS = ("SLO", "SLI", "DataSource", "Service", "AlertPolicy", "AlertCondition", "AlertNotificationTarget")
#: Annotations read from an SLO's metadata, and the native field each one sets.
ANNOTATIONS = {
    "sloeval/slo-type": "slo_type",
    "sloeval/dashboard-url": "dashboard_url",
    "sloeval/runbook-url": "runbook_url",
}
#: OpenSLO's free-form alert severities that sloeval's routes understand.
SEVERITIES = {"critical": "critical", "page": "critical", "warning": "warning", "ticket": "warning", "info": "info"}
_SHORTHAND = re.compile(r"(0|[1-9][0-9]*)([mhdwMQY])")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_RANGE = re.compile(r"\s*(?:[0-9]+(?:ms|[smhdwy]))+\s*")
_COUNTER_FUNCTIONS = ("rate", "increase")
_SELECTOR_HINT = (
    "sloeval needs a series selector, optionally inside rate(...[5m]) or increase(...[5m]) "
    "and sum(...) or sum by (labels) (...)"
)


class OpenSLOError(SloevalError):
    """An OpenSLO object sloeval cannot read; ``str()`` is one line without the file name."""

    where: str
    field: str
    detail: str

    def __init__(self, where: str, field: str, detail: str) -> None:
        super().__init__(
            ": ".join(part for part in (where, field, detail) if part), where=where, field=field, detail=detail
        )


def _quote(value: object) -> str:
    """A value from the file for a one-line message: strings JSON-quoted, anything else by repr."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def is_openslo(documents: Sequence[object]) -> bool:
    """True when any document (or any item of a list document) has an ``apiVersion``."""
    for document in documents:
        items = document if isinstance(document, list) else [document]
        if any(isinstance(item, dict) and "apiVersion" in item for item in items):
            return True
    return False


# --- queries ------------------------------------------------------------------------------


class QueryError(SloevalError, ValueError):
    """A query that is not a (summed, rated) series selector."""


@dataclass(frozen=True)
class CounterQuery:
    """What sloeval keeps of an OpenSLO counter query: the selector and the ``by`` labels."""

    selector: Selector
    group_by: tuple[str, ...] = ()


def parse_counter_query(text: str) -> CounterQuery:
    """Parse ``sum by (a) (rate(sel[5m]))``, ``sum(increase(sel[1h]))``, ``rate(sel[5m])`` or ``sel``.

    The selector itself is read by :func:`sloeval.selectors.parse_selector`; this only
    finds where it starts and ends (respecting quoted label values) and reads the
    ``sum``/``by``/``rate``/``increase`` around it. Anything else is a :class:`QueryError`.
    """
    return _QueryParser(text).parse()


class _QueryParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> QueryError:
        return QueryError(f"{message} at position {self.pos + 1}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek_word(self) -> str | None:
        found = _IDENT.match(self.text, self.pos)
        return None if found is None else found.group(0)

    def next_char_after(self, word: str) -> str:
        index = self.pos + len(word)
        while index < len(self.text) and self.text[index] in " \t\r\n":
            index += 1
        return self.text[index] if index < len(self.text) else ""

    def at(self, char: str) -> bool:
        self.skip()
        return self.text.startswith(char, self.pos)

    def expect(self, char: str) -> None:
        if not self.at(char):
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def parse(self) -> CounterQuery:
        self.skip()
        start = self.pos
        word = self.peek_word()
        if word is not None and word.lower() == "sum":
            following = self.next_char_after(word)
            self.pos += len(word)
            if following == "(" or self.peek_grouping_keyword():
                return self.finish(self.parse_sum())
            self.pos = start
        return self.finish(CounterQuery(self.parse_inner()))

    def finish(self, query: CounterQuery) -> CounterQuery:
        self.skip()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos : self.pos + 20]!r}")
        return query

    def peek_grouping_keyword(self) -> bool:
        self.skip()
        word = self.peek_word()
        return word is not None and word.lower() in ("by", "without")

    def parse_sum(self) -> CounterQuery:
        grouping = self.parse_grouping()
        self.expect("(")
        selector = self.parse_inner()
        self.expect(")")
        if grouping is None:
            grouping = self.parse_grouping()
        return CounterQuery(selector, grouping or ())

    def parse_grouping(self) -> tuple[str, ...] | None:
        self.skip()
        word = self.peek_word()
        if word is None or word.lower() not in ("by", "without"):
            return None
        if word.lower() == "without":
            raise self.fail("sum without (...) is not supported; name the labels to keep with sum by (...)")
        self.pos += len(word)
        self.expect("(")
        labels: list[str] = []
        while not self.at(")"):
            found = _LABEL_NAME.match(self.text, self.pos)
            if found is None:
                raise self.fail("expected a label name in by (...)")
            labels.append(found.group(0))
            self.pos = found.end()
            if self.at(","):
                self.pos += 1
            elif not self.at(")"):
                raise self.fail("expected ',' or ')' in by (...)")
        self.pos += 1
        return tuple(labels)

    def parse_inner(self) -> Selector:
        self.skip()
        word = self.peek_word()
        if word is not None and self.next_char_after(word) == "(":
            if word not in _COUNTER_FUNCTIONS:
                where = "inside sum()" if word.lower() == "sum" else "here"
                raise self.fail(f"{word}() is not supported {where}")
            self.pos += len(word)
            self.expect("(")
            selector = self.parse_selector()
            if not self.at("["):
                raise self.fail(f"{word}() needs a range such as [5m] after the selector")
            self.pos += 1
            found = _RANGE.match(self.text, self.pos)
            if found is None:
                raise self.fail("expected a duration such as 5m in [...]")
            self.pos = found.end()
            if self.at(":"):
                raise self.fail("subqueries are not supported")
            self.expect("]")
            self.reject_modifiers()
            self.expect(")")
            return selector
        selector = self.parse_selector()
        if self.at("["):
            raise self.fail("a range [...] is only accepted inside rate() or increase()")
        self.reject_modifiers()
        return selector

    def reject_modifiers(self) -> None:
        self.skip()
        if self.at("@") or (self.peek_word() or "").lower() == "offset":
            raise self.fail("offset and @ are not supported; sloeval pins every query to the evaluation time")

    def parse_selector(self) -> Selector:
        self.skip()
        start = self.pos
        name = _IDENT.match(self.text, self.pos)
        if name is not None:
            self.pos = name.end()
        if self.at("{"):
            self.skip_braces()
        if self.pos == start:
            raise self.fail("expected a series selector (a metric name or {...})")
        try:
            return parse_selector(self.text[start : self.pos])
        except SelectorError as exc:
            raise QueryError(str(exc)) from None

    def skip_braces(self) -> None:
        """Move past ``{...}``; quoted label values may hold ``}``. The selector parser checks the rest."""
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "}":
                return
            if char in "\"'`":
                while self.pos < len(self.text) and self.text[self.pos] != char:
                    self.pos += 2 if self.text[self.pos] == "\\" and char != "`" else 1
                self.pos += 1
        raise self.fail("unterminated '{'")


# --- reading objects ------------------------------------------------------------------------


class _Node:
    """A mapping inside an OpenSLO object, with the path used in error messages."""

    def __init__(self, data: Mapping[str, Any], where: str, path: str = "") -> None:
        self.data = data
        self.where = where
        self.path = path

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> OpenSLOError:
        return OpenSLOError(self.where, self.path if key is None else self.field(key), message)

    def rebased(self, where: str) -> _Node:
        return _Node(self.data, where, self.path)

    def only(self, *allowed: str, what: str) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.error(str(key), f"unknown key in {what}; allowed: {', '.join(allowed)}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def child(self, key: str) -> _Node:
        value = self.data.get(key)
        if value is None:
            raise self.error(key, "required field is missing")
        if not isinstance(value, dict):
            raise self.error(key, "must be a mapping")
        return _Node(value, self.where, self.field(key))

    def items(self, key: str) -> list[_Node]:
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, "must be a non-empty list")
        nodes = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{key}[{index}]", "must be a mapping")
            nodes.append(_Node(item, self.where, f"{self.field(key)}[{index}]"))
        return nodes

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(key, "required field is missing")
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number")
        return float(value)


@dataclass(frozen=True)
class _Object:
    kind: str
    name: str
    node: _Node  # the whole document; where = 'Kind "name"'


def _collect(documents: Sequence[object]) -> dict[tuple[str, str], _Object]:
    objects: dict[tuple[str, str], _Object] = {}
    for number, document in enumerate(documents, 1):
        items = document if isinstance(document, list) else [document]
        for index, item in enumerate(items, 1):
            label = f"document {number}" + (f" item {index}" if isinstance(document, list) else "")
            obj = _read_object(item, label)
            if (obj.kind, obj.name) in objects:
                raise obj.node.error(
                    "metadata.name", f"two {obj.kind} objects are named {_quote(obj.name)}; names must be unique"
                )
            objects[(obj.kind, obj.name)] = obj
    return objects


def _read_object(item: object, label: str) -> _Object:
    if not isinstance(item, dict):
        raise OpenSLOError(label, "", "expected an OpenSLO object (a mapping with apiVersion, kind, metadata, spec)")
    if "apiVersion" not in item:
        if "slos" in item or "service" in item:
            raise OpenSLOError(
                label,
                "",
                "native sloeval content (service/slos) mixed with OpenSLO documents; "
                "put the native SLOs and the OpenSLO documents in separate files",
            )
        raise OpenSLOError(label, "apiVersion", f"required field is missing; every document must be {API_VERSION}")
    name = item.get("metadata", {}).get("name") if isinstance(item.get("metadata"), dict) else None
    if isinstance(name, str) and name:
        label += f" ({_quote(name)})"
    version = item["apiVersion"]
    if version != API_VERSION:
        raise OpenSLOError(
            label,
            "apiVersion",
            f"{_quote(version)} is not supported; sloeval reads OpenSLO {API_VERSION} only",
        )
    kind = item.get("kind")
    if kind not in KINDS:
        raise OpenSLOError(
            label, "kind", f"{_quote(kind)} is not an OpenSLO v1 kind; expected one of {', '.join(KINDS)}"
        )
    node = _Node(item, label)
    node.only("apiVersion", "kind", "metadata", "spec", what=f"the {kind} object")
    metadata = node.child("metadata")
    metadata.only("name", "displayName", "labels", "annotations", what="metadata")
    name = metadata.string("name", required=True)
    assert name is not None
    metadata.string("displayName")
    if kind == "Service" and item.get("spec") is None:
        item = {**item, "spec": {}}
    return _Object(kind, name, _Node(item, f"{kind} {_quote(name)}"))


def _ref(objects: Mapping[tuple[str, str], _Object], node: _Node, key: str, kind: str, via: str) -> _Node:
    """The object ``node[key]`` names, as a node whose errors read ``<via> via <kind> "name"``."""
    name = node.string(key, required=True)
    assert name is not None
    target = objects.get((kind, name))
    if target is None:
        raise node.error(
            key,
            f"no {kind} named {_quote(name)} in this file; sloeval reads one file, "
            f"so add the {kind} document to it (or write it inline)",
        )
    return target.node.rebased(f"{via} via {kind} {_quote(name)}")


def _inline(node: _Node, kind: str) -> None:
    """An inline object: ``metadata`` and ``spec``, optionally with ``kind`` (and ``apiVersion``)."""
    node.only("apiVersion", "kind", "metadata", "spec", what=f"the inline {kind}")
    if node.has("kind") and node.data["kind"] != kind:
        raise node.error("kind", f"must be {kind}")
    if node.has("apiVersion") and node.data["apiVersion"] != API_VERSION:
        raise node.error("apiVersion", f"must be {API_VERSION}")


# --- translation ----------------------------------------------------------------------------


def translate(documents: Sequence[object]) -> dict[str, Any]:
    """OpenSLO v1 documents -> the native SLO file dict; raises :class:`OpenSLOError`."""
    objects = _collect(documents)
    slos = [obj for obj in objects.values() if obj.kind == "SLO"]
    if not slos:
        raise OpenSLOError("", "", "no kind: SLO document in this OpenSLO file; sloeval evaluates SLO objects")
    service: str | None = None
    first = ""
    native: list[dict[str, Any]] = []
    for slo in slos:
        slo_service, translated = _translate_slo(slo, objects)
        if service is None:
            service, first = slo_service, slo.name
        elif slo_service != service:
            raise slo.node.error(
                "spec.service",
                f"{_quote(slo_service)} differs from {_quote(service)} of SLO {_quote(first)}; "
                "sloeval evaluates one service per file, so put each service's SLOs in its own file",
            )
        native.extend(translated)
    for obj in objects.values():
        if obj.kind == "Service":
            _check_service(obj, service)
        elif obj.kind == "DataSource":
            obj.node.child("spec").only("description", "type", "connectionDetails", what="a DataSource spec")
        elif obj.kind == "AlertNotificationTarget":
            _check_target(obj.node.child("spec"))
    return {"service": service, "slos": native}


def _check_service(obj: _Object, service: str | None) -> None:
    obj.node.child("spec").only("description", what="a Service spec")
    if obj.name != service:
        raise obj.node.error(
            "metadata.name",
            f"no SLO in this file has spec.service {_quote(obj.name)} (they use {_quote(service)}); "
            "sloeval evaluates one service per file: fix spec.service or move this Service to its own file",
        )


def _check_target(spec: _Node) -> None:
    spec.only("description", "target", what="an AlertNotificationTarget spec")
    spec.string("target", required=True)


def _translate_slo(slo: _Object, objects: Mapping[tuple[str, str], _Object]) -> tuple[str, list[dict[str, Any]]]:
    spec = slo.node.child("spec")
    spec.only(
        "description",
        "service",
        "indicator",
        "indicatorRef",
        "timeWindow",
        "budgetingMethod",
        "objectives",
        "alertPolicies",
        what="an SLO spec",
    )
    service = spec.string("service", required=True)
    assert service is not None
    method = spec.string("budgetingMethod", required=True)
    if method != "Occurrences":
        known = method in ("Timeslices", "RatioTimeslices")
        raise spec.error(
            "budgetingMethod",
            f"{method} is {'not supported' if known else 'not an OpenSLO v1 budgeting method'}; sloeval counts "
            "good and bad events over rolling windows: use budgetingMethod: Occurrences",
        )
    period = _period(spec)
    objectives = spec.items("objectives")
    for objective in objectives:
        _check_objective(objective)
    ratio = _indicator(spec, objects, slo.node.where)
    conditions = _conditions(spec, objects, slo.node.where)
    base: dict[str, Any] = {"ratio": ratio}
    if period is not None:
        base["period"] = period
    metadata = slo.node.child("metadata")
    labels = _labels(metadata)
    if labels:
        base["labels"] = labels
    base.update(_annotations(metadata))
    description = spec.string("description") or metadata.string("displayName")
    names = _objective_names(slo.name, objectives)
    period_seconds = parse_duration(period or "30d")
    translated = []
    for objective, name in zip(objectives, names, strict=True):
        percent = _objective_percent(objective)
        entry = {"name": name, **base, "objective": percent}
        shown = description
        if len(objectives) > 1 and objective.has("displayName"):
            label = objective.string("displayName")
            shown = f"{description}: {label}" if description else label
        if shown:
            entry["description"] = shown
        alerts = [_alert(condition, percent, period_seconds) for condition in conditions]
        if alerts:
            entry["alerts"] = alerts
            entry["include_default_alerts"] = True
        translated.append(entry)
    return service, translated


def _shorthand(node: _Node, key: str, *, allow_zero: bool = False) -> int:
    """A duration-shorthand in seconds; months, quarters and years are refused (no fixed length)."""
    text = node.data.get(key)
    found = _SHORTHAND.fullmatch(text) if isinstance(text, str) else None
    if found is None or (found.group(1) == "0" and not allow_zero):
        raise node.error(key, f"{_quote(text)} is not a duration shorthand such as 5m, 1h, 30d or 4w")
    number, unit = found.groups()
    if unit in "MQY":
        raise node.error(
            key, f"{text} has no fixed length in seconds; give it in minutes, hours, days or weeks, e.g. 30d or 4w"
        )
    return 0 if number == "0" else parse_duration(f"{number}{unit}")


def _period(spec: _Node) -> str | None:
    if not spec.has("timeWindow"):
        return None  # the native default period (30d)
    windows = spec.items("timeWindow")
    if len(windows) != 1:
        raise spec.error("timeWindow", f"must hold exactly one window, not {len(windows)}")
    window = windows[0]
    window.only("duration", "isRolling", "calendar", what="a timeWindow")
    rolling = window.boolean("isRolling")
    if window.has("calendar") or rolling is False:
        raise window.error(
            "calendar" if window.has("calendar") else "isRolling",
            "calendar-aligned windows are not supported; sloeval evaluates rolling windows: "
            "use isRolling: true and no calendar (e.g. duration: 30d)",
        )
    if rolling is None:
        raise window.error("isRolling", "required field is missing; sloeval evaluates rolling windows: isRolling: true")
    return format_duration(_shorthand(window, "duration"))


def _check_objective(objective: _Node) -> None:
    composite = next((k for k in ("indicator", "indicatorRef", "compositeWeight") if k in objective.data), None)
    if composite is not None:
        raise objective.error(
            composite,
            "composite SLOs (an indicator per objective) are not supported; give one spec.indicator "
            "or spec.indicatorRef and write each indicator as its own SLO",
        )
    for key in ("timeSliceTarget", "timeSliceWindow"):
        if key in objective.data:
            raise objective.error(key, "belongs to Timeslices budgeting, which sloeval does not support; remove it")
    if "value" in objective.data:
        raise objective.error(
            "value", "is compared with a thresholdMetric, which sloeval does not support; give target or targetPercent"
        )
    objective.only("displayName", "op", "target", "targetPercent", what="an objective")
    objective.string("displayName")


def _objective_percent(objective: _Node) -> float:
    target, percent = objective.number("target"), objective.number("targetPercent")
    if (target is None) == (percent is None):
        raise objective.error(None, "give exactly one of target (e.g. 0.999) or targetPercent (e.g. 99.9)")
    if target is not None:
        if not 0 < target < 1:
            raise objective.error("target", f"{target:g} is not between 0 and 1 (exclusive), e.g. 0.999")
        return float(Decimal(repr(target)) * 100)  # 0.999 -> 99.9 exactly as written
    assert percent is not None
    if not 0 < percent < 100:
        raise objective.error("targetPercent", f"{percent:g} is not between 0 and 100 (exclusive), e.g. 99.9")
    return percent


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _objective_names(slo: str, objectives: list[_Node]) -> list[str]:
    """The SLO's name for one objective; ``<slo>-<displayName slug or number>`` for several."""
    if len(objectives) == 1:
        return [slo]
    names: list[str] = []
    for index, objective in enumerate(objectives):
        suffix = _slug(objective.string("displayName") or "") or str(index + 1)
        name = f"{slo}-{suffix}"
        if name in names:
            raise objective.error(
                "displayName",
                f"gives the SLO name {_quote(name)} a previous objective has; give each objective its own displayName",
            )
        names.append(name)
    return names


def _labels(metadata: _Node) -> dict[str, str]:
    if not metadata.has("labels"):
        return {}
    raw = metadata.data["labels"]
    if not isinstance(raw, dict):
        raise metadata.error("labels", "must be a mapping of label names to strings or lists of strings")
    labels: dict[str, str] = {}
    for key, value in raw.items():
        field = f"labels.{key}"
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            text = ",".join(value)
        elif isinstance(value, str):
            text = value
        else:
            raise metadata.error(field, 'must be a string or a non-empty list of strings (quote numbers: "1")')
        name = re.sub(r"[^a-zA-Z0-9_]", "_", str(key))
        if name[:1].isdigit():
            name = "_" + name
        if name in labels:
            raise metadata.error(field, f"becomes the label name {name!r} like another label; rename one of them")
        labels[name] = text
    return labels


def _annotations(metadata: _Node) -> dict[str, str]:
    if not metadata.has("annotations"):
        return {}
    raw = metadata.data["annotations"]
    if not isinstance(raw, dict):
        raise metadata.error("annotations", "must be a mapping of strings")
    fields: dict[str, str] = {}
    for key, value in raw.items():
        if not str(key).startswith("sloeval/"):
            continue  # other implementations' annotations
        if key not in ANNOTATIONS:
            raise metadata.error(f"annotations.{key}", f"unknown sloeval annotation; known: {', '.join(ANNOTATIONS)}")
        if not isinstance(value, str) or not value:
            raise metadata.error(f"annotations.{key}", "must be a non-empty string")
        fields[ANNOTATIONS[key]] = value
    return fields


# --- indicator ------------------------------------------------------------------------------


def _indicator(spec: _Node, objects: Mapping[tuple[str, str], _Object], where: str) -> dict[str, Any]:
    if spec.has("indicator") and spec.has("indicatorRef"):
        raise spec.error("indicatorRef", "give either indicator or indicatorRef, not both")
    if spec.has("indicatorRef"):
        sli = _ref(objects, spec, "indicatorRef", "SLI", where)
        return _ratio(sli.child("spec"), objects, where)
    if not spec.has("indicator"):
        raise spec.error("indicator", "required field is missing; give indicator (inline SLI) or indicatorRef")
    inline = spec.child("indicator")
    _inline(inline, "SLI")
    return _ratio(inline.child("spec"), objects, where)


def _ratio(sli: _Node, objects: Mapping[tuple[str, str], _Object], where: str) -> dict[str, Any]:
    if "thresholdMetric" in sli.data:
        raise sli.error(
            "thresholdMetric",
            "is not supported; sloeval computes SLIs from event counters: use ratioMetric with good or bad plus total",
        )
    sli.only("description", "ratioMetric", what="an SLI spec")
    ratio = sli.child("ratioMetric")
    for key in ("raw", "rawType"):
        if key in ratio.data:
            raise ratio.error(
                key, "precomputed ratios are not supported; give the good or bad and the total counters instead"
            )
    ratio.only("counter", "good", "bad", "total", what="a ratioMetric")
    counter = ratio.boolean("counter")
    if counter is not True:
        state = "is missing" if counter is None else "is false"
        raise ratio.error(
            "counter",
            f"{state}; sloeval reads monotonic counters (it takes increase() over each window): set counter: true",
        )
    if ratio.has("good") == ratio.has("bad"):
        raise ratio.error(None, "give exactly one of good or bad next to total")
    numerator = "good" if ratio.has("good") else "bad"
    parts = {key: _query(ratio.child(key), objects, where) for key in (numerator, "total")}
    grouping = {key: query.group_by for key, query in parts.items()}
    if set(grouping[numerator]) != set(grouping["total"]):
        raise ratio.error(
            "total",
            f"is summed by ({', '.join(grouping['total'])}) but {numerator} by ({', '.join(grouping[numerator])}); "
            "both must keep the same labels",
        )
    native: dict[str, Any] = {key: query.selector.render() for key, query in parts.items()}
    if grouping[numerator]:
        native["group_by"] = list(grouping[numerator])
    return native


def _query(part: _Node, objects: Mapping[tuple[str, str], _Object], where: str) -> CounterQuery:
    part.only("metricSource", what="a ratioMetric part")
    source = part.child("metricSource")
    source.only("metricSourceRef", "type", "spec", what="a metricSource")
    types = []
    if source.has("metricSourceRef"):
        data_source = _ref(objects, source, "metricSourceRef", "DataSource", where).child("spec")
        data_source.only("description", "type", "connectionDetails", what="a DataSource spec")
        types.append((data_source, data_source.string("type", required=True)))
    if source.has("type") or not types:
        types.append((source, source.string("type", required=True)))
    for node, kind in types:
        if (kind or "").lower() != "prometheus":
            raise node.error(
                "type",
                f"{kind} is not supported; sloeval queries Prometheus (SLOEVAL_PROMETHEUS_URL) with PromQL only",
            )
    query_spec = source.child("spec")
    query_spec.only("query", what="a Prometheus metricSource spec")
    text = query_spec.string("query", required=True)
    assert text is not None
    try:
        return parse_counter_query(text)
    except QueryError as exc:
        raise query_spec.error("query", f"{_quote(text)} is not usable ({exc}); {_SELECTOR_HINT}") from None


# --- alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BurnRate:
    node: _Node  # the condition, for errors
    name: str
    severity: str
    threshold: float
    window: int
    alert_after: int


def _conditions(spec: _Node, objects: Mapping[tuple[str, str], _Object], where: str) -> list[_BurnRate]:
    if not spec.has("alertPolicies"):
        return []
    raw = spec.data["alertPolicies"]
    if not isinstance(raw, list):
        raise spec.error("alertPolicies", "must be a list")
    conditions: dict[str, _BurnRate] = {}
    for index, item in enumerate(raw):
        field = f"alertPolicies[{index}]"
        if isinstance(item, str):  # early v1 tooling wrote plain names
            item = {"alertPolicyRef": item}
        if not isinstance(item, dict):
            raise spec.error(field, "must be a mapping (alertPolicyRef or an inline AlertPolicy)")
        entry = _Node(item, spec.where, spec.field(field))
        if "alertPolicyRef" in item:
            entry.only("alertPolicyRef", what="an alert policy reference")
            policy = _ref(objects, entry, "alertPolicyRef", "AlertPolicy", where).child("spec")
        else:
            _inline(entry, "AlertPolicy")
            policy = entry.child("spec")
        for condition in _policy_conditions(policy, objects, where):
            known = conditions.get(condition.name)
            if known is not None and known.node.data is not condition.node.data:
                raise condition.node.error(
                    None, f"another alert condition also becomes the sloeval alert {condition.name}; rename one"
                )
            conditions[condition.name] = condition
    return list(conditions.values())


def _policy_conditions(policy: _Node, objects: Mapping[tuple[str, str], _Object], where: str) -> list[_BurnRate]:
    policy.only(
        "description",
        "alertWhenNoData",
        "alertWhenResolved",
        "alertWhenBreaching",
        "conditions",
        "notificationTargets",
        what="an AlertPolicy spec",
    )
    if policy.boolean("alertWhenBreaching") is False:
        raise policy.error(
            "alertWhenBreaching", "false is not supported; sloeval alerts while a condition breaches: remove the policy"
        )
    if policy.boolean("alertWhenNoData"):
        raise policy.error(
            "alertWhenNoData",
            "true is not supported; sloeval never alerts on a window without data (failing queries raise its own "
            "SLODataMissing alert): set false",
        )
    policy.boolean("alertWhenResolved")  # RESOLVED messages follow notify.send_resolved (default on)
    for target in policy.items("notificationTargets") if policy.has("notificationTargets") else []:
        if "targetRef" in target.data:
            target.only("targetRef", what="a notification target reference")
            target.string("targetRef", required=True)  # ignored: routing is by severity
        else:
            _inline(target, "AlertNotificationTarget")
            _check_target(target.child("spec"))
    result = []
    for entry in policy.items("conditions"):
        if "conditionRef" in entry.data:
            entry.only("conditionRef", what="a condition reference")
            ref_name = entry.string("conditionRef", required=True)
            node = _ref(objects, entry, "conditionRef", "AlertCondition", where)
        else:
            _inline(entry, "AlertCondition")
            ref_name = entry.child("metadata").string("name", required=True)
            node = entry
        assert ref_name is not None
        result.append(_burn_rate(node, ref_name))
    return result


def _alert_name(condition: str) -> str:
    """``samokoder-fast-burn`` -> ``SamokoderFastBurn`` (sloeval alert names are identifiers)."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", condition) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words)
    return name if name[:1].isalpha() else "Alert" + name


def _burn_rate(node: _Node, name: str) -> _BurnRate:
    spec = node.child("spec")
    spec.only("description", "severity", "condition", what="an AlertCondition spec")
    severity = spec.string("severity", required=True)
    assert severity is not None
    if severity.lower() not in SEVERITIES:
        raise spec.error(
            "severity",
            f"{_quote(severity)} is not one of critical (or page), warning (or ticket), info; "
            "sloeval routes alerts by these severities",
        )
    condition = spec.child("condition")
    condition.only("kind", "op", "threshold", "lookbackWindow", "alertAfter", what="a condition")
    kind = condition.string("kind") or "burnrate"
    if kind != "burnrate":
        raise condition.error("kind", f"{kind} is not supported; OpenSLO v1 conditions are burnrate")
    op = condition.string("op") or "gt"
    if op not in ("gt", "gte"):
        raise condition.error(
            "op", f"{op} is not supported; sloeval alerts when the burn rate rises above the threshold: use gt or gte"
        )
    threshold = condition.number("threshold")
    if threshold is None or not math.isfinite(threshold) or threshold <= 0:
        raise condition.error("threshold", "must be a burn rate above 0, e.g. 14.4")
    window = _shorthand(condition, "lookbackWindow")
    alert_after = _shorthand(condition, "alertAfter", allow_zero=True) if condition.has("alertAfter") else 0
    return _BurnRate(node, _alert_name(name), SEVERITIES[severity.lower()], threshold, window, alert_after)


def _alert(condition: _BurnRate, percent: float, period: int) -> dict[str, Any]:
    """Burn rate > k over W  <=>  SLI < 1 - k * (1 - target) over W: a native sli_below alert."""
    spec = condition.node.child("spec").child("condition")
    for key, seconds in (("lookbackWindow", condition.window), ("alertAfter", condition.alert_after)):
        if seconds > period:
            raise spec.error(
                key, f"{format_duration(seconds)} is longer than the SLO's {format_duration(period)} time window"
            )
    below = Decimal(100) - Decimal(repr(condition.threshold)) * (Decimal(100) - Decimal(repr(percent)))
    if below <= 0:
        highest = Decimal(100) / (Decimal(100) - Decimal(repr(percent)))
        raise spec.error(
            "threshold",
            f"a burn rate of {condition.threshold:g} can never be reached with a {percent:g}% target "
            f"(the highest is {float(highest):g}, when every event is bad); lower it",
        )
    alert: dict[str, Any] = {
        "name": condition.name,
        "severity": condition.severity,
        "sli_below": {"window": format_duration(condition.window), "threshold": float(below)},
    }
    if condition.alert_after:
        alert["for"] = format_duration(condition.alert_after)
    return alert
