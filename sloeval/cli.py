"""Command line: ``sloeval run | check | eval | notify-test | healthcheck``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import anyio
import httpx
import structlog

from sloeval import __version__
from sloeval.alerting.channels import (
    DeliveryError,
    build_channels,
    channel_kinds,
    channel_names,
    load_channel_settings,
)
from sloeval.alerting.store import StateStoreError
from sloeval.config.settings import Settings, SettingsBase, SettingsError, load_settings
from sloeval.config.slo_file import ConfigError, SLOConfig, SLODefinition, load_slo_file
from sloeval.daemon import run_daemon
from sloeval.logs import configure_logging
from sloeval.prometheus.client import http_client_for, prometheus_client_for
from sloeval.slo.evaluator import Evaluator
from sloeval.slo.online_check import check_slo
from sloeval.slo.render import render_json, render_table

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def parse_time(text: str) -> float:
    """Unix seconds (``1700000000.5``) or RFC 3339 (``2026-11-27T07:00:00Z``)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a unix time or RFC 3339 timestamp: {text!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"RFC 3339 timestamp needs a time zone (e.g. Z): {text!r}")
    return parsed.timestamp()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sloeval", description="SLO evaluation daemon for Prometheus.")
    parser.add_argument("--version", action="version", version=f"sloeval {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-c", "--config", type=Path, help="SLO file (overrides SLOEVAL_SLO_FILE)")
        return sub

    add("run", "Run the daemon: evaluate on a fixed cadence and serve /metrics.")
    check = add("check", "Validate the SLO file (exit 0 valid, 1 invalid, 2 usage).")
    check.add_argument("--online", action="store_true", help="also query Prometheus for series and buckets")
    evaluate = add("eval", "Evaluate every SLO once and print the result.")
    evaluate.add_argument("--at", type=parse_time, help="unix time or RFC 3339 (default: now)")
    evaluate.add_argument("--format", choices=("table", "json"), default="table")
    notify = add("notify-test", "Send a test message to every configured recipient (exit 1 if any send fails).")
    notify.add_argument("--channel", choices=sorted(channel_names()), help="only this channel")
    health = commands.add_parser(
        "healthcheck",
        help="Ask the running daemon's /healthz (or /readyz); for container HEALTHCHECKs (exit 0 healthy, 1 not).",
    )
    health.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")
    return parser


def _healthcheck(settings: Settings, ready: bool) -> int:
    """One GET to the daemon's own endpoint on loopback when it listens on every address."""
    host = settings.http_host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - the wildcard is compared, not bound
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.http_port}/{'readyz' if ready else 'healthz'}"
    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        print(f"sloeval: {url}: {type(exc).__name__}", file=sys.stderr)
        return EXIT_INVALID
    if response.status_code != 200:
        print(f"sloeval: {url}: HTTP {response.status_code}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


async def _eval(settings: Settings, config: SLOConfig, at: float, fmt: str) -> int:
    async with http_client_for(settings) as http:
        evaluator = Evaluator(
            config.slos, prometheus_client_for(settings, http), concurrency=settings.query_concurrency
        )
        snapshot = await evaluator.evaluate(at)
    print(render_json(snapshot) if fmt == "json" else render_table(snapshot))
    return EXIT_OK if snapshot.succeeded else EXIT_INVALID


async def _check_online(settings: Settings, config: SLOConfig) -> int:
    at = time.time()
    problems = 0
    async with http_client_for(settings) as http:
        client = prometheus_client_for(settings, http)
        for slo in config.slos:
            findings = await check_slo(client, slo, at)
            for finding in findings:
                print(f"{config.path}: slo {finding.slo!r}: {finding.severity}: {finding.message}")
                problems += finding.severity == "error"
    return EXIT_INVALID if problems else EXIT_OK


async def _notify_test(settings: Settings, channel_settings: dict[str, SettingsBase], only: str | None) -> int:
    channels = build_channels(channel_settings, settings)
    if only is not None:
        channels = {name: c for name, c in channels.items() if name == only}
    if not channels:
        kinds = channel_kinds()
        wanted = [only] if only is not None else sorted(kinds)
        variables = ", ".join(pattern for name in wanted for pattern in kinds[name].variable_patterns())
        print(f"sloeval: no {' or '.join(wanted)} channel is configured (see {variables})", file=sys.stderr)
        return EXIT_INVALID
    failures = 0
    for name, channel in channels.items():
        message = channel.test_message()
        for recipient in channel.recipients:
            try:
                with anyio.fail_after(settings.notify_timeout + 5):
                    await channel.send(recipient, message)
            except DeliveryError as exc:
                failures += 1
                kind = "permanent" if exc.permanent else "temporary"
                print(f"{name} -> {recipient}: FAILED ({kind}): {exc.message}")
            except TimeoutError:
                failures += 1
                print(f"{name} -> {recipient}: FAILED: no answer within {settings.notify_timeout:g}s")
            else:
                print(f"{name} -> {recipient}: sent")
        await channel.aclose()
    return EXIT_INVALID if failures else EXIT_OK


def _describe_alerts(slo: SLODefinition) -> list[str]:
    lines = []
    if slo.default_alerts:
        scaled = "" if slo.period == 30 * 86400 else f", windows scaled from 30d to {slo.period_name}"
        lines.append(f"    default alerts{scaled}:")
    for rule in slo.alerts:
        lines.append(f"    - {rule.name} [{rule.severity}]: {rule.describe()}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(**({"slo_file": args.config} if getattr(args, "config", None) else {}))
        channel_settings = load_channel_settings()
    except SettingsError as exc:
        print(f"sloeval: invalid settings: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.command == "healthcheck":
        return _healthcheck(settings, args.ready)
    configure_logging(settings.log_level, settings.log_format)
    try:
        config = load_slo_file(settings.slo_file, min_window=settings.eval_interval, channels=channel_names())
    except ConfigError as exc:
        print(f"sloeval: invalid config: {exc}", file=sys.stderr)
        return EXIT_INVALID

    if args.command == "check":
        source = "" if config.source_format == "sloeval" else f" ({config.source_format})"
        print(f"{config.path}: ok{source}: {len(config.slos)} SLOs for service {config.service!r}")
        for slo in config.slos:
            print(f"  {slo.name}: {slo.kind}, objective {100 * slo.objective:g}% over {slo.period_name}")
            print("\n".join(_describe_alerts(slo)))
        if not args.online:
            return EXIT_OK
        return anyio.run(_check_online, settings, config)
    if args.command == "eval":
        at = args.at if args.at is not None else time.time()
        return anyio.run(_eval, settings, config, at, args.format)
    if args.command == "notify-test":
        return anyio.run(_notify_test, settings, channel_settings, args.channel)
    try:
        anyio.run(run_daemon, settings, config, channel_settings)
    except KeyboardInterrupt:
        pass
    except (OSError, StateStoreError) as exc:
        structlog.get_logger("sloeval").error("cannot_start", error=str(exc))
        print(f"sloeval: cannot start: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as exc:  # a bug: the JSON log keeps the details, the terminal gets one line
        structlog.get_logger("sloeval").exception("fatal_error")
        print(f"sloeval: stopped by an unexpected {type(exc).__name__}; see the fatal_error log event", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK
