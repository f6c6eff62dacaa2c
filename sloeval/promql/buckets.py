"""Histogram bucket bounds: the ``le`` strings exporters write for a threshold, and the matcher on them (pure)."""

from __future__ import annotations

from decimal import Decimal

from sloeval.config.selectors import Matcher


def le_values(threshold: float) -> list[str]:
    """Ways exporters write a bucket bound: Go ("2", "1e+06") and Python ("2.0")."""
    value = float(threshold)
    shortest = repr(value)  # Python: "2.0", "0.005", "1e-05", "1000000.0"
    forms = {shortest, _go_format(value), _python_client_format(value)}
    if shortest.endswith(".0"):
        forms.add(shortest[:-2])
    return sorted(forms)


def _go_format(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'g', -1, 64)``, used by client_golang for ``le``."""
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + exponent  # position of the decimal point from the left
    lead = "-" if sign else ""
    decimal_exponent = point - 1
    if value == 0:
        return "0"
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_sign = "+" if decimal_exponent >= 0 else "-"
        return f"{lead}{mantissa}e{exp_sign}{abs(decimal_exponent):02d}"
    if point <= 0:
        return f"{lead}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return lead + digits + "0" * (point - len(digits))
    return f"{lead}{digits[:point]}.{digits[point:]}"


def _python_client_format(value: float) -> str:
    """How prometheus_client writes ``le``: repr(), switching to an exponent above 1e6."""
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def le_matcher(threshold: float) -> Matcher:
    alternatives = "|".join(v.replace(".", "\\.").replace("+", "\\+") for v in le_values(threshold))
    return Matcher("le", "=~", alternatives)
