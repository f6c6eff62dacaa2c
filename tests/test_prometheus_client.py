"""The Prometheus HTTP client (sloeval.prometheus.client) against httpx's mock transport: what it
counts, and what of an answer may reach a log line or a message."""

from __future__ import annotations

import base64
import json
import math

import anyio
import httpx
import pytest

from sloeval.config.settings import Settings
from sloeval.prometheus.client import PrometheusClient, prometheus_client_for, secrets_of
from sloeval.prometheus.results import PrometheusQueryError, scrub


async def _never_answer(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(math.inf)
    raise AssertionError("unreachable")


def hanging_client(outcomes: list[str]) -> PrometheusClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(_never_answer))
    return PrometheusClient(http, "http://prometheus.test", timeout=30, on_attempt=outcomes.append)


def test_a_query_cut_off_by_the_cycle_deadline_counts_as_a_timeout() -> None:
    outcomes: list[str] = []

    async def main() -> None:
        with anyio.move_on_after(0.1):
            await hanging_client(outcomes).query("up", 1.0)

    anyio.run(main)
    assert outcomes == ["timeout"]


def test_a_query_cancelled_at_shutdown_is_not_a_timeout() -> None:
    outcomes: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as daemon:  # the daemon's task group, cancelled by SIGTERM

            async def cycle() -> None:
                with anyio.move_on_after(10):  # the cycle deadline, far away
                    await hanging_client(outcomes).query("up", 1.0)

            daemon.start_soon(cycle)
            await anyio.sleep(0.1)
            daemon.cancel_scope.cancel()

    anyio.run(main)
    assert outcomes == []


USER, PASSWORD, TOKEN = "reader", "Pw-Kx7q/Vb+Zt", "Bearer.Rj4Wn8Hs2Tc6Yd0Fa"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def echo_headers(status: int, json_body: bool) -> httpx.MockTransport:
    """A gateway that shows the request's headers in its error page."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        if json_body:
            body = {"status": "error", "errorType": f"auth {headers}", "error": f"denied for {headers}"}
            return httpx.Response(status, json=body, headers={"Warning": headers})
        return httpx.Response(status, text=f"<html><pre>{headers.upper()}</pre> unauthorized</html>")

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("json_body", [False, True])
@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_error_texts_never_carry_the_credentials(auth: str, json_body: bool) -> None:
    env = (
        {"prometheus_bearer_token": TOKEN}
        if auth == "bearer"
        else {"prometheus_username": USER, "prometheus_password": PASSWORD}
    )
    settings = Settings(prometheus_url="http://prometheus.test", **env)  # type: ignore[arg-type]

    async def main() -> PrometheusQueryError:
        # The credentials go on the wire as make_http_client sends them; the gateway echoes them.
        auth = httpx.BasicAuth(USER, PASSWORD) if settings.prometheus_username else None
        headers = {"Authorization": f"Bearer {TOKEN}"} if settings.prometheus_bearer_token else {}
        http = httpx.AsyncClient(transport=echo_headers(401, json_body), auth=auth, headers=headers)
        client = prometheus_client_for(settings, http)
        with pytest.raises(PrometheusQueryError) as info:
            await client.query("up", 1.0)
        return info.value

    error = anyio.run(main)
    shown = json.dumps([error.message, error.error_type, str(error)])
    assert "401" in shown or "denied" in shown
    for secret in (TOKEN, PASSWORD, BASIC):
        for form in (secret, secret.lower(), secret.upper()):
            assert form not in shown


def test_scrub_replaces_every_spelling_of_a_secret() -> None:
    secrets = secrets_of(Settings(prometheus_username=USER, prometheus_password=PASSWORD))  # type: ignore[arg-type]
    text = f"Authorization: Basic {BASIC.lower()} pw={PASSWORD.upper()} raw={PASSWORD} url=Pw-Kx7q%2FVb%2BZt"
    cleaned = scrub(text, secrets)
    assert "Kx7q" not in cleaned.replace("<secret>", "")
    assert BASIC.lower() not in cleaned
    assert cleaned.startswith("Authorization: Basic <secret>")
    assert scrub("nothing to hide", ()) == "nothing to hide"


def test_scrub_sees_a_secret_an_html_page_wrote_with_entities() -> None:
    """Go's html/template writes ``+`` as ``&#43;``: the echoed token must still be found."""
    token = "tok+Secret+Bearer+Value9"
    page = "<pre>Authorization: Bearer tok&#43;Secret&#43;Bearer&#43;Value9</pre>"
    cleaned = scrub(page, [token])
    assert "Secret" not in cleaned
    assert "<secret>" in cleaned
