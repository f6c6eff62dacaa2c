"""The container image, built by ``scripts/build-image.sh``, run with ``buildah run --isolation chroot``.

``make image-test`` builds the real Dockerfile on a local debootstrap'd bookworm base, then runs
these tests against it: the image's metadata against the code's defaults, ``--version``, the user,
``check`` on the shipped config, ``eval`` against a Prometheus on the host compared with the same
command outside the image, and a sidecar run: config mounted read-only at ``/etc/sloeval``, state
on a mounted volume, the Telegram token from a ``*_FILE`` secret, ``/metrics``,
``/healthz``, ``/readyz``, the ``HEALTHCHECK`` command, a page delivered, and a clean SIGTERM stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.servers import PrometheusServer, free_port
from devtools.telegram_stub import BotApiStub
from sloeval import __version__
from sloeval.config.settings import ENV_PREFIX, Settings
from tests.e2e.conftest import REPO, samples, wait_until

pytestmark = pytest.mark.image

IMAGE = os.environ.get("SLOEVAL_TEST_IMAGE", "localhost/sloeval:test")
IMAGE_UID = 10001
STATE_MOUNT = "/srv/sloeval-state"
TOKEN = "730099999:AAImageTestTokenFromSecretFile"
CHAT_ID = "-100777"

SIDECAR_SLO_FILE = """\
service: samokoder-api
period: 30d
notify:
  routes:
    - {severity: [critical], channels: [telegram]}
  group_wait: 0s
slos:
  - name: api-errors
    slo_type: errors
    objective: 99
    ratio:
      bad: samokoder_http_requests_total{status=~"5.."}
      total: samokoder_http_requests_total
    alerts:
      - name: BudgetAlwaysLow      # at most 100 % of a budget is left: fires in the first cycle
        severity: critical
        budget_remaining_below: 101
"""


def buildah(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image_config() -> dict[str, object]:
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed; run `make image-test`")
    inspected = buildah("inspect", "--type", "image", IMAGE)
    if inspected.returncode != 0:
        pytest.fail(f"image {IMAGE} not found; build it with scripts/build-image.sh: {inspected.stderr.strip()}")
    config: dict[str, object] = json.loads(inspected.stdout)["Docker"]["config"]
    return config


def _new_container() -> Iterator[str]:
    created = buildah("from", "--pull-never", IMAGE)
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip().splitlines()[-1]
    yield name
    buildah("rm", name)


@pytest.fixture(scope="module")
def container(image_config: dict[str, object]) -> Iterator[str]:
    yield from _new_container()


@pytest.fixture
def fresh_container(image_config: dict[str, object]) -> Iterator[str]:
    """A container no earlier run used: buildah 1.28 may keep a run's volume for the image's VOLUME."""
    yield from _new_container()


def in_image(
    container: str,
    *command: str,
    env: dict[str, str] | None = None,
    volumes: tuple[str, ...] = (),
    state_volume: Path | None = None,
) -> list[str]:
    args = ["buildah", "run", "--isolation", "chroot"]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes:
        args += ["--volume", volume]
    if state_volume is not None:
        # buildah 1.28 mounts a volume of its own at the image's VOLUME on every run, and of two
        # mounts at one path either may end on top; the state volume goes elsewhere instead
        # (the image's own /var/lib/sloeval is checked by test_version_and_non_root_user).
        args += ["--mount", f"type=bind,src={state_volume},target={STATE_MOUNT},rw"]
        args += ["--env", f"SLOEVAL_STATE_DIR={STATE_MOUNT}"]
    return [*args, container, "--", *command]


BUILDAH_EXIT_LINES = ("subprocess exited ", "Error: exit status ")


def run_in_image(container: str, *command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the image; stderr without buildah's own lines about the exit status."""
    result = subprocess.run(
        in_image(container, *command, **kwargs),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines(keepends=True) if not line.startswith(BUILDAH_EXIT_LINES)]
    result.stderr = "".join(lines)
    return result


def host_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def readable_dir(path: Path) -> Path:
    """A directory the image's user can read, as a mounted config directory is."""
    path.mkdir()
    path.chmod(0o755)
    path.parent.chmod(0o755)
    return path


def test_image_metadata_matches_the_code(image_config: dict[str, object]) -> None:
    defaults = Settings.model_fields
    assert image_config["User"] == "sloeval:sloeval"
    assert image_config["Entrypoint"] == ["sloeval"]
    assert image_config["Cmd"] == ["run"]
    assert image_config["ExposedPorts"] == {f"{defaults['http_port'].default}/tcp": {}}
    assert image_config["Volumes"] == {"/var/lib/sloeval": {}}
    assert image_config["Healthcheck"]["Test"] == ["CMD", "sloeval", "healthcheck"]  # type: ignore[index]
    env = dict(item.split("=", 1) for item in image_config["Env"])  # type: ignore[attr-defined]
    assert env["SLOEVAL_SLO_FILE"] == "/etc/sloeval/slos.yaml"
    assert env["SLOEVAL_STATE_DIR"] == "/var/lib/sloeval"
    assert env["SLOEVAL_HTTP_PORT"] == str(defaults["http_port"].default)
    unknown = [k for k in env if k.startswith(ENV_PREFIX) and k.removeprefix(ENV_PREFIX).lower() not in defaults]
    assert unknown == [], f"the image sets variables sloeval does not read: {unknown}"


def test_version_and_non_root_user(container: str) -> None:
    version = run_in_image(container, "sloeval", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"sloeval {__version__}"
    ids = run_in_image(container, "sh", "-c", "id -u; id -g; id -un")
    assert ids.stdout.split() == [str(IMAGE_UID), str(IMAGE_UID), "sloeval"]
    python_uid = run_in_image(container, "python3", "-c", "import os; print(os.geteuid())")
    assert python_uid.stdout.strip() == str(IMAGE_UID)
    state = run_in_image(container, "stat", "-c", "%u:%g:%a", "/var/lib/sloeval")
    assert state.stdout.strip() == f"{IMAGE_UID}:{IMAGE_UID}:750"  # the state volume: the user's alone
    writable = run_in_image(container, "sh", "-c", "touch /var/lib/sloeval/probe && echo ok")
    assert writable.stdout.strip() == "ok", writable.stderr


def test_check_on_the_shipped_config(container: str) -> None:
    inside = run_in_image(container, "sloeval", "check")
    assert inside.returncode == 0, inside.stderr
    outside = subprocess.run(
        [sys.executable, "-m", "sloeval", "check", "-c", "config/slos.yaml"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=host_env(),
        check=True,
    )
    assert inside.stdout == outside.stdout.replace("config/slos.yaml", "/etc/sloeval/slos.yaml")
    assert "5 SLOs for service 'samokoder-api'" in inside.stdout


def test_bad_mounted_config_is_one_line(container: str, tmp_path: Path) -> None:
    config_dir = readable_dir(tmp_path / "config")
    (config_dir / "slos.yaml").write_text("service: x\nslos:\n  - name: a\n    objective: 120\n    raw: {}\n")
    result = run_in_image(container, "sloeval", "check", volumes=(f"{config_dir}:/etc/sloeval:ro",))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('sloeval: invalid config: /etc/sloeval/slos.yaml: slo "a"')
    assert "Traceback" not in result.stderr


def test_eval_in_the_image_equals_eval_outside(
    container: str, samokoder_prometheus: PrometheusServer, data_end: int
) -> None:
    env = {"SLOEVAL_PROMETHEUS_URL": samokoder_prometheus.url}
    inside = run_in_image(container, "sloeval", "eval", "--at", str(data_end), "--format", "json", env=env)
    assert inside.returncode == 0, inside.stderr
    outside = subprocess.run(
        [sys.executable, "-m", "sloeval", "eval", "-c", "config/slos.yaml", "--at", str(data_end), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**host_env(), **env},
        check=True,
    )
    result = json.loads(inside.stdout)
    assert result == json.loads(outside.stdout)
    assert {r["slo"] for r in result["results"]} >= {"api-availability", "api-latency", "api-errors"}
    assert all(r["error_budget_remaining_percent"] is not None for r in result["results"])


def _descendants(pid: int) -> list[int]:
    """Processes below ``pid`` (chroot isolation shares the host's PID namespace)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _sloeval_process(pid: int) -> int:
    for child in _descendants(pid):
        try:
            cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[0].endswith(b"python3") and b"run" in cmdline:
            return child
    raise AssertionError(f"no sloeval process below {pid}")


def test_sidecar_run(fresh_container: str, samokoder_prometheus: PrometheusServer, tmp_path: Path) -> None:
    config_dir = readable_dir(tmp_path / "config")
    (config_dir / "slos.yaml").write_text(SIDECAR_SLO_FILE)
    secrets_dir = readable_dir(tmp_path / "secrets")
    token_file = secrets_dir / "telegram_bot_token"
    token_file.write_text(TOKEN + "\n")
    os.chown(token_file, IMAGE_UID, IMAGE_UID)  # like a secret mounted for the container's user
    token_file.chmod(0o400)
    state_dir = tmp_path / "state"  # what a named volume is: a directory the image's user owns
    state_dir.mkdir()
    os.chown(state_dir, IMAGE_UID, IMAGE_UID)
    port = free_port()
    container = fresh_container
    with BotApiStub(token=TOKEN) as bot:
        env = {
            "SLOEVAL_PROMETHEUS_URL": samokoder_prometheus.url,
            "SLOEVAL_HTTP_PORT": str(port),
            "SLOEVAL_EVAL_INTERVAL": "2",
            "SLOEVAL_TELEGRAM_BOT_TOKEN_FILE": "/run/secrets/telegram_bot_token",
            "SLOEVAL_TELEGRAM_CHAT_IDS": CHAT_ID,
            "SLOEVAL_TELEGRAM_API_URL": bot.url,
        }
        volumes = (f"{config_dir}:/etc/sloeval:ro", f"{secrets_dir}:/run/secrets:ro")
        log_path = tmp_path / "sloeval.log"
        with log_path.open("wb") as log:
            runner = subprocess.Popen(
                in_image(container, "sloeval", "run", env=env, volumes=volumes, state_volume=state_dir),
                stdout=log,
                stderr=log,
            )
        try:
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                assert runner.poll() is None, log_path.read_text()
                try:
                    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(ready, 60, "/readyz of the daemon in the image")
            assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            metrics = samples(httpx.get(f"{url}/metrics", timeout=5).text)
            budget = metrics["samokoder_error_budget_remaining_percent"]
            assert [labels["slo"] for labels, _ in budget] == ["api-errors"]
            # The same number as `sloeval eval` outside the image at the daemon's pinned time.
            pinned = metrics["sloeval_last_evaluation_timestamp_seconds"][0][1]
            eval_args = ["eval", "-c", str(config_dir / "slos.yaml"), "--at", repr(pinned), "--format", "json"]
            outside = subprocess.run(
                [sys.executable, "-m", "sloeval", *eval_args],
                capture_output=True,
                text=True,
                env={**host_env(), "SLOEVAL_PROMETHEUS_URL": samokoder_prometheus.url},
                check=True,
            )
            expected = json.loads(outside.stdout)["results"][0]["error_budget_remaining_percent"]
            assert budget[0][1] == pytest.approx(expected, rel=1e-9, abs=1e-9)
            assert metrics["sloeval_build_info"][0][0]["version"] == __version__

            for args in (("sloeval", "healthcheck"), ("sloeval", "healthcheck", "--ready")):
                probe = run_in_image(container, *args, env={"SLOEVAL_HTTP_PORT": str(port)})
                assert probe.returncode == 0, probe.stderr
            wrong_port = run_in_image(container, "sloeval", "healthcheck", env={"SLOEVAL_HTTP_PORT": str(free_port())})
            assert wrong_port.returncode == 1

            sent = bot.wait_for_messages(1, timeout=30)
            assert sent[0].token == TOKEN
            assert sent[0].chat_id == CHAT_ID
            assert "BudgetAlwaysLow" in sent[0].text

            daemon = _sloeval_process(runner.pid)
            status = (Path("/proc") / str(daemon) / "status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uid_line.split()[1:] == [str(IMAGE_UID)] * 4
            state_files = list(state_dir.iterdir())
            assert state_files, f"no state written to the volume {state_dir}"
            assert {f.stat().st_uid for f in state_files} == {IMAGE_UID}

            os.kill(daemon, signal.SIGTERM)  # what a container engine sends to PID 1
            assert runner.wait(timeout=20) == 0, log_path.read_text()
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names[0] == "started"
    assert "stopped" in names
    assert TOKEN not in log_path.read_text()
