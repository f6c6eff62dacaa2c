"""The deployment examples in deploy/ agree with the code, the image and each other.

Compose file, Prometheus and Grafana provisioning, Kubernetes manifests: they parse, every path
they name exists, every SLOEVAL_* variable is a real setting, ports and paths match the code's
defaults and the image contract, and the Kubernetes copy of the SLO file is identical to
config/slos.yaml. External checkers (check-jsonschema's compose-spec schema, promtool,
kubectl kustomize, git) are skipped when missing, except under CI, where a missing one fails.

``python -m tests.test_deploy_files`` rewrites the SLO file copy in
deploy/kubernetes/configmap.yaml from config/slos.yaml.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sloeval.alerting.channels import load_channel_settings, settings_types
from sloeval.alerting.channels.telegram import TelegramSettings
from sloeval.cli import build_parser
from sloeval.config.durations import parse_duration
from sloeval.config.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from sloeval.config.slo_file import parse_slo_text
from sloeval.serve.http import build_app
from tests.shipped_monitoring import LABELS_READ

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
SLO_FILE = REPO / "config" / "slos.yaml"
DOCKERFILE = REPO / "Dockerfile"
CONFIGMAP_FILE = K8S / "configmap.yaml"

# The image built from the Dockerfile, as the deployment files rely on it.
IMAGE_UID = 10001
IMAGE_SLO_FILE = PurePosixPath("/etc/sloeval/slos.yaml")
IMAGE_STATE_DIR = PurePosixPath("/var/lib/sloeval")
IMAGE_PORT = 9180
DASHBOARD_FILE = "sloeval-slo.json"
DASHBOARD_UID = "sloeval-slo"
DATASOURCE_UID = "prometheus"

SETTING_VARS = frozenset(ENV_PREFIX + name.upper() for model in settings_types() for name in model.model_fields)
SECRET_FILE_VARS = frozenset(
    f"{ENV_PREFIX}{name.upper()}_FILE"
    for name in (
        "telegram_bot_token",
        "smtp_password",
        "prometheus_password",
        "prometheus_bearer_token",
        "database_url",
    )
)
DATABASE_URL_FILE_VAR = f"{ENV_PREFIX}DATABASE_URL_FILE"
#: The compose services running sloeval: replicas sharing one PostgreSQL database.
SLOEVAL_REPLICAS = ("sloeval-a", "sloeval-b")
#: The password the committed example database URLs carry instead of a real one.
PLACEHOLDER_PASSWORD = "REPLACE-ME"
SLOEVAL_VAR = re.compile(r"\bSLOEVAL_[A-Z0-9_]*[A-Z0-9]\b")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
ENV_LINE = re.compile(r"^(#\s?)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


# --- helpers ----------------------------------------------------------------------------------


def need_tool(name: str, *, required_in_ci: bool = True) -> str:
    """The tool's path; a skip when it is missing, a failure when it is missing under CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI") and required_in_ci:
            pytest.fail(f"{message}, and CI must run this check")
        pytest.skip(message)
    return path


def need_module(name: str) -> None:
    """Like need_tool, for a Python package of the dev dependencies."""
    try:
        __import__(name)
    except ImportError:
        message = f"the Python package {name} is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI must run this check")
        pytest.skip(message)


def need_file(path: Path, why: str) -> Path:
    """The file, written by another change; skipped until it exists, but never missing under CI."""
    if not path.is_file():
        message = f"{path.relative_to(REPO)} does not exist yet ({why})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    assert name in services, f"no service {name!r} in {COMPOSE_FILE.name}"
    return services[name]


def sloeval_services() -> dict[str, dict[str, Any]]:
    """The compose services running the image built from this repository."""
    services: dict[str, dict[str, Any]] = compose()["services"]
    return {name: svc for name, svc in services.items() if svc.get("image") == "sloeval:latest"}


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(active assignments, commented-out example assignments) of deploy/.env.example."""
    active: dict[str, str] = {}
    examples: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            commented, name, value = match.groups()
            (examples if commented else active)[name] = value
    return active, examples


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and ${VAR:?error}, as compose resolves them."""

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} is unset: {arg or 'no default'}")

    return INTERPOLATION.sub(resolve, text)


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts(svc: dict[str, Any]) -> list[tuple[str, PurePosixPath, bool]]:
    """(source, target, read_only) of a service's volumes, short or long syntax."""
    result = []
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            assert len(parts) in (2, 3), f"unexpected volume {volume!r}"
            result.append((parts[0], PurePosixPath(parts[1]), len(parts) == 3 and "ro" in parts[2].split(",")))
        else:
            result.append((volume["source"], PurePosixPath(volume["target"]), bool(volume.get("read_only"))))
    return result


def is_host_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path_of(svc: dict[str, Any], container_path: PurePosixPath) -> Path | None:
    """The host file or directory behind ``container_path`` through the service's bind mounts."""
    for source, target, _ in mounts(svc):
        if is_host_path(source) and (container_path == target or target in container_path.parents):
            return (DEPLOY / source / container_path.relative_to(target)).resolve()
    return None


def ports(svc: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) of the published ports."""
    result: list[tuple[str | None, int, int]] = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            result.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            result.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            result.append((None, int(parts[0]), int(parts[1])))
        else:
            result.append((None, int(parts[0]), int(parts[0])))
    return result


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                yield path, doc


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


def sidecar() -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, sloeval container) of the Deployment."""
    (deployment,) = k8s_objects("Deployment").values()
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert "sloeval" in containers, "the Deployment has no sloeval container"
    return pod, containers["sloeval"]


def http_status(path: str) -> int:
    """The status sloeval's HTTP app answers ``GET path`` with."""
    app = build_app(CollectorRegistry(), lambda: (True, "ready"))
    statuses: list[str] = []
    app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda status, headers: statuses.append(status))
    return int(statuses[0].split()[0])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = need_file(DOCKERFILE, "the image is built from it").read_text(encoding="utf-8")
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\") if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    return instructions


def slo_copy_in_configmap() -> str:
    docs = list(yaml.safe_load_all(CONFIGMAP_FILE.read_text(encoding="utf-8")))
    for doc in docs:
        if doc and doc["kind"] == "ConfigMap" and IMAGE_SLO_FILE.name in doc.get("data", {}):
            return str(doc["data"][IMAGE_SLO_FILE.name])
    raise AssertionError(f"no ConfigMap in {CONFIGMAP_FILE.name} has a {IMAGE_SLO_FILE.name} key")


def rewrite_configmap() -> None:
    """Replace the slos.yaml block scalar in configmap.yaml with config/slos.yaml."""
    lines = CONFIGMAP_FILE.read_text(encoding="utf-8").splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if line.strip() == f"{IMAGE_SLO_FILE.name}: |")
    indent = " " * (len(lines[header]) - len(lines[header].lstrip()) + 2)
    end = header + 1
    while end < len(lines) and (lines[end].startswith(indent) or not lines[end].strip()):
        end += 1
    body = [indent + line if line.strip() else "\n" for line in SLO_FILE.read_text(encoding="utf-8").splitlines(True)]
    CONFIGMAP_FILE.write_text("".join(lines[: header + 1] + body + lines[end:]), encoding="utf-8")


# --- every file -------------------------------------------------------------------------------


def deploy_text_files() -> list[Path]:
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix not in (".json",)]
    return sorted(p for p in files if p.stat().st_size and b"\0" not in p.read_bytes())


def test_the_settings_model_knows_the_secret_file_variables() -> None:
    # What the variable checks below rely on: *_FILE variants are settings fields of their own.
    assert SECRET_FILE_VARS <= SETTING_VARS
    assert "SLOEVAL_HTTP_PORT" in SETTING_VARS
    assert "SLOEVAL_HTTP_PORT_FILE" not in SETTING_VARS


@pytest.mark.parametrize("path", deploy_text_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_sloeval_variable_in_deploy_is_a_setting(path: Path) -> None:
    unknown = set(SLOEVAL_VAR.findall(path.read_text(encoding="utf-8"))) - SETTING_VARS
    assert not unknown, f"{path.relative_to(REPO)} names variables sloeval does not read: {sorted(unknown)}"


def test_the_variable_scan_sees_the_deployment_files() -> None:
    seen = {name for path in deploy_text_files() for name in SLOEVAL_VAR.findall(path.read_text(encoding="utf-8"))}
    # The compose file, .env.example and the manifests all set these; an empty scan checks nothing.
    assert {"SLOEVAL_PROMETHEUS_URL", "SLOEVAL_TELEGRAM_CHAT_IDS", "SLOEVAL_SMTP_HOST"} <= seen
    assert {"SLOEVAL_TELEGRAM_BOT_TOKEN_FILE", "SLOEVAL_SMTP_PASSWORD_FILE", DATABASE_URL_FILE_VAR} <= seen


def test_the_dockerfile_builds_the_image_the_deployment_files_expect() -> None:
    instructions = dockerfile_instructions()
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(rest))
        elif keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    unknown = {name for name in env if name.startswith(ENV_PREFIX)} - SETTING_VARS
    assert not unknown, f"the Dockerfile sets variables sloeval does not read: {sorted(unknown)}"
    assert env["SLOEVAL_SLO_FILE"] == str(IMAGE_SLO_FILE)
    assert env["SLOEVAL_STATE_DIR"] == str(IMAGE_STATE_DIR)
    assert int(env["SLOEVAL_HTTP_PORT"]) == IMAGE_PORT
    exposed = {word.split("/")[0] for keyword, rest in instructions if keyword == "EXPOSE" for word in rest.split()}
    assert str(IMAGE_PORT) in exposed
    volumes = [rest for keyword, rest in instructions if keyword == "VOLUME"]
    assert any(str(IMAGE_STATE_DIR) in volume for volume in volumes)
    uids = [m.group(1) for _, rest in instructions for m in re.finditer(r"--uid\s+(\S+)", rest)]
    assert uids, "the Dockerfile creates no user with --uid"
    uid = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), uids[-1])
    assert uid == str(IMAGE_UID)
    assert not [rest for keyword, rest in instructions if keyword == "USER" and rest.split(":")[0] in ("root", "0")]
    assert json.loads(dict(instructions)["ENTRYPOINT"]) == ["sloeval"]


def test_the_image_contract_matches_the_settings_defaults() -> None:
    assert Settings.model_fields["http_port"].default == IMAGE_PORT
    assert Settings.model_fields["http_host"].default == "0.0.0.0"


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_the_http_paths_the_deployment_files_use_are_served(path: str) -> None:
    assert http_status(path) != 404


def test_http_status_sees_unknown_paths() -> None:
    assert http_status("/healthzz") == 404


# --- docker compose ---------------------------------------------------------------------------


def test_compose_file_has_its_services_and_no_version_key() -> None:
    data = compose()
    assert "version" not in data, "the compose spec has no version key; compose warns about it"
    assert set(data["services"]) == {"api", *SLOEVAL_REPLICAS, "postgres", "prometheus", "grafana"}
    assert tuple(sloeval_services()) == SLOEVAL_REPLICAS


def test_compose_file_follows_the_compose_spec_schema() -> None:
    # The compose-spec JSON schema as vendored by check-jsonschema (an offline copy).
    need_module("check_jsonschema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose_host_paths() -> list[tuple[str, str, Path]]:
    """(service or section, what, path) of every host path the compose file names."""
    data = compose()
    found: list[tuple[str, str, Path]] = []
    for name, svc in data["services"].items():
        build = svc.get("build")
        if build is not None:
            context = DEPLOY / (build if isinstance(build, str) else build.get("context", "."))
            found.append((name, "build context", context))
            if isinstance(build, dict) and "dockerfile" in build:
                found.append((name, "dockerfile", context / build["dockerfile"]))
        env_files = svc.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            found.append((name, "env_file", DEPLOY / path))
        for source, _, _ in mounts(svc):
            if is_host_path(source):
                found.append((name, "volume", DEPLOY / source))
    for section in ("secrets", "configs"):
        for name, spec in (data.get(section) or {}).items():
            if "file" in spec:
                found.append((section, name, DEPLOY / spec["file"]))
    return found


def test_every_host_path_in_the_compose_file_exists() -> None:
    paths = compose_host_paths()
    assert len(paths) >= 10
    missing = []
    for owner, what, path in paths:
        templated = what == "env_file" or owner == "secrets"  # the user's copy of a committed example
        if not (path.exists() or (templated and path.with_name(path.name + ".example").is_file())):
            missing.append(f"{owner} {what}: {path}")
    assert not missing, "missing: " + ", ".join(missing)


def test_named_volumes_are_declared() -> None:
    data = compose()
    used = {source for svc in data["services"].values() for source, _, _ in mounts(svc) if not is_host_path(source)}
    assert used == set(data.get("volumes") or {})


def test_published_ports_bind_to_loopback() -> None:
    published = [(name, port) for name, svc in compose()["services"].items() for port in ports(svc)]
    assert published
    exposed = [f"{name}: {port}" for name, port in published if port[0] != "127.0.0.1"]
    assert not exposed, "published on every interface: " + ", ".join(exposed)


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_third_party_images_are_pinned_to_a_release(name: str) -> None:
    image = service(name)["image"]
    repository, _, tag = image.rpartition(":")
    assert repository in ("prom/prometheus", "grafana/grafana")
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{image}: pin a released version, not {tag!r}"


def test_postgres_image_is_pinned_to_a_major_version() -> None:
    # Minor releases of one major keep the data directory format (and bring the fixes); a new
    # major needs pg_upgrade, so it must never arrive through a pull.
    repository, _, tag = service("postgres")["image"].rpartition(":")
    assert repository == "postgres", "the official image"
    assert re.fullmatch(r"\d+(\.\d+)?", tag), f"pin a major version, not {tag!r}"


@pytest.mark.parametrize("name", SLOEVAL_REPLICAS)
def test_sloeval_service_builds_the_image_and_is_locked_down(name: str) -> None:
    svc = service(name)
    assert svc["image"] == "sloeval:latest"
    assert (DEPLOY / svc["build"]["context"]).resolve() == REPO
    assert svc["read_only"] is True
    assert "/tmp" in svc["tmpfs"]
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["restart"] in ("always", "unless-stopped")
    assert svc.get("user") in (None, str(IMAGE_UID), f"{IMAGE_UID}:{IMAGE_UID}")


@pytest.mark.parametrize("name", SLOEVAL_REPLICAS)
def test_sloeval_healthcheck_is_a_real_cli_command(name: str) -> None:
    test = service(name)["healthcheck"]["test"]
    assert test[:2] == ["CMD", "sloeval"], "exec form, running the image's sloeval entry point"
    build_parser().parse_args(test[2:])  # exits (SystemExit) on an unknown command or option


@pytest.mark.parametrize("name", SLOEVAL_REPLICAS)
def test_sloeval_mounts_follow_the_image_contract(name: str) -> None:
    svc = service(name)
    by_target = {target: (source, read_only) for source, target, read_only in mounts(svc)}
    config_source, config_read_only = by_target[IMAGE_SLO_FILE.parent]
    assert config_read_only, "the config directory is mounted read-only"
    assert (DEPLOY / config_source / IMAGE_SLO_FILE.name).resolve() == SLO_FILE
    env = environment(svc)
    if IMAGE_STATE_DIR in by_target:
        assert not is_host_path(by_target[IMAGE_STATE_DIR][0]), "the state lives in a named volume"
    else:
        assert DATABASE_URL_FILE_VAR in env, "without a state volume the state must be in the database"
    assert "SLOEVAL_SLO_FILE" not in env or env["SLOEVAL_SLO_FILE"] == str(IMAGE_SLO_FILE)
    assert "SLOEVAL_STATE_DIR" not in env or env["SLOEVAL_STATE_DIR"] == str(IMAGE_STATE_DIR)
    port = int(env.get("SLOEVAL_HTTP_PORT", IMAGE_PORT))
    assert port == IMAGE_PORT
    assert {container for _, _, container in ports(svc)} == {port}


@pytest.mark.parametrize("name", SLOEVAL_REPLICAS)
def test_sloeval_talks_to_the_bundled_prometheus(name: str) -> None:
    url = interpolate(environment(service(name))["SLOEVAL_PROMETHEUS_URL"], {})
    assert url == "http://prometheus:9090"
    assert any(container == 9090 for _, _, container in ports(service("prometheus")))


@pytest.mark.parametrize("name", SLOEVAL_REPLICAS)
def test_sloeval_secrets_are_files_under_run_secrets(name: str) -> None:
    data = compose()
    svc = service(name)
    given = {s if isinstance(s, str) else s["source"]: s for s in svc["secrets"]}
    assert set(given) <= set(data["secrets"]), "a service secret is not declared at the top level"
    targets = {
        name: PurePosixPath("/run/secrets") / (spec if isinstance(spec, str) else spec.get("target", name))
        for name, spec in given.items()
    }
    file_vars = {k: v for k, v in environment(svc).items() if k.endswith("_FILE")}
    assert set(file_vars) <= SECRET_FILE_VARS
    assert {PurePosixPath(v) for v in file_vars.values()} == set(targets.values()), (
        "every *_FILE variable points at a mounted secret, and every mounted secret is read"
    )
    assert len(file_vars) >= 2


def test_env_example_keeps_secrets_out() -> None:
    active, examples = env_example()
    secret_vars = {name.removesuffix("_FILE") for name in SECRET_FILE_VARS}
    leaked = (set(active) | set(examples)) & secret_vars
    assert not leaked, f".env.example must not set {sorted(leaked)}: secrets are files in secrets/"
    set_by_compose = {name for svc in sloeval_services().values() for name in environment(svc)} & SECRET_FILE_VARS
    assert not (set(active) | set(examples)) & set_by_compose


def test_env_example_sets_no_sloeval_variable_to_empty() -> None:
    active, _ = env_example()
    empty = [name for name, value in active.items() if name.startswith(ENV_PREFIX) and not value]
    assert not empty, f"an empty value is not 'unset' for sloeval: {empty}"


def test_every_variable_the_compose_file_interpolates_is_in_env_example() -> None:
    active, examples = env_example()
    missing, unset = [], []
    for name, op, _ in INTERPOLATION.findall(COMPOSE_FILE.read_text(encoding="utf-8")):
        has_default = op in ("-", ":-")
        if name not in active and name not in examples:
            missing.append(name)
        elif not has_default and name not in active:
            unset.append(name)
    assert not missing, f"document in .env.example: {missing}"
    assert not unset, f"required by the compose file, so set (uncommented) in .env.example: {unset}"


def test_grafana_has_no_default_admin_password() -> None:
    password = environment(service("grafana"))["GF_SECURITY_ADMIN_PASSWORD"]
    match = INTERPOLATION.fullmatch(password)
    assert match is not None, "the password must come from .env"
    assert match.group(2) == ":?", "the password must have no default"


@pytest.mark.parametrize("with_examples", [False, True], ids=["as-copied", "with-every-example"])
def test_env_example_gives_valid_settings(with_examples: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the sloeval container sees: .env.example, the compose environment, the image's ENV."""
    active, examples = env_example()
    dotenv = {**active, **(examples if with_examples else {})}
    container = {k: v for k, v in dotenv.items() if k.startswith(ENV_PREFIX)}
    for name, value in environment(service(SLOEVAL_REPLICAS[0])).items():
        container[name] = interpolate(value, dotenv)
    container |= {"SLOEVAL_SLO_FILE": str(IMAGE_SLO_FILE), "SLOEVAL_STATE_DIR": str(IMAGE_STATE_DIR)}
    for name in SECRET_FILE_VARS & set(container):
        secret = tmp_path / PurePosixPath(container[name]).name
        if name == DATABASE_URL_FILE_VAR:
            secret.write_text("postgresql://sloeval:s3cret@postgres:5432/sloeval\n", encoding="utf-8")
        else:
            secret.write_text("123456:secret-from-a-file\n", encoding="utf-8")
        container[name] = str(secret)
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in container.items():
        monkeypatch.setenv(name, value)
    try:
        settings = load_settings()
        channels = load_channel_settings()
    except SettingsError as exc:
        pytest.fail(f"sloeval would not start with this .env: {exc}")
    assert settings.database_url is not None, "the replicas share their state in PostgreSQL"
    telegram, email = channels["telegram"], channels["email"]
    assert isinstance(telegram, TelegramSettings)
    assert telegram.telegram_bot_token is not None
    if with_examples:
        assert telegram.enabled, "the examples turn Telegram on"
        assert email.enabled, "the examples turn email on"


def git_ignored(path: str) -> bool:
    git = need_tool("git")
    result = subprocess.run([git, "-C", str(REPO), "check-ignore", "-q", path], check=False)
    if result.returncode == 128:
        pytest.skip("not a git work tree")
    return result.returncode == 0


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("deploy/.env", True),
        ("deploy/secrets/telegram_bot_token", True),
        ("deploy/secrets/smtp_password", True),
        ("deploy/secrets/database_url", True),
        ("deploy/secrets/postgres_password", True),
        ("deploy/secrets/anything-else", True),
        ("deploy/.env.example", False),
        ("deploy/secrets/README.md", False),
        ("deploy/secrets/.gitignore", False),
        ("deploy/secrets/telegram_bot_token.example", False),
        ("deploy/secrets/database_url.example", False),
    ],
)
def test_filled_in_secrets_are_ignored_by_git(path: str, ignored: bool) -> None:
    assert git_ignored(path) is ignored


def test_secret_examples_hold_no_secret() -> None:
    examples = {p.name.removesuffix(".example"): p for p in (DEPLOY / "secrets").glob("*.example")}
    assert set(examples) == set(compose()["secrets"])
    filled = {name for name, path in examples.items() if path.read_bytes() != b""}
    # The database URL is not empty even as an example: an empty URL means SQLite in every
    # replica, each leading and paging. Its placeholder password fails loudly instead.
    assert filled == {"database_url"}
    url = urlsplit(examples["database_url"].read_text(encoding="utf-8").strip())
    assert url.password == PLACEHOLDER_PASSWORD


def test_the_replicas_share_one_configuration() -> None:
    replicas = sloeval_services()
    assert len(replicas) >= 2
    first, *others = replicas.values()
    for other in others:
        assert {k: v for k, v in other.items() if k != "ports"} == {k: v for k, v in first.items() if k != "ports"}
    host_ports = [port for svc in replicas.values() for _, port, _ in ports(svc)]
    assert len(host_ports) == len(set(host_ports)), "each replica publishes a host port of its own"


def test_the_replicas_share_the_bundled_database() -> None:
    data = compose()
    postgres = service("postgres")
    postgres_env = environment(postgres)
    url = urlsplit((DEPLOY / "secrets" / "database_url.example").read_text(encoding="utf-8").strip())
    assert url.scheme in ("postgresql", "postgres")
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert url.username == postgres_env["POSTGRES_USER"]
    assert url.path == "/" + postgres_env["POSTGRES_DB"]
    assert not postgres.get("ports"), "the database is reached over the compose network only"
    assert "POSTGRES_PASSWORD" not in postgres_env, "the password comes from a secret file"
    password_secret = PurePosixPath(postgres_env["POSTGRES_PASSWORD_FILE"])
    assert password_secret.parent == PurePosixPath("/run/secrets")
    assert password_secret.name in postgres["secrets"]
    assert password_secret.name in data["secrets"]
    data_dir = {target: source for source, target, _ in mounts(postgres)}[PurePosixPath("/var/lib/postgresql/data")]
    assert not is_host_path(data_dir), "the database lives in a named volume"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for name, svc in sloeval_services().items():
        url_file = PurePosixPath(environment(svc)[DATABASE_URL_FILE_VAR])
        assert url_file == PurePosixPath("/run/secrets/database_url"), name
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name


def readme_yaml_blocks() -> list[Any]:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)]


def test_readme_compose_override_follows_the_schema(tmp_path: Path) -> None:
    need_module("check_jsonschema")
    overrides = [block for block in readme_yaml_blocks() if isinstance(block, dict) and "services" in block]
    assert overrides
    for number, block in enumerate(overrides):
        path = tmp_path / f"override-{number}.yml"
        path.write_text(yaml.safe_dump(block), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for svc in block["services"].values():
            file_vars = {k for k in environment(svc) if k.endswith("_FILE")}
            assert file_vars <= SECRET_FILE_VARS


# --- Prometheus -------------------------------------------------------------------------------


def prometheus_config() -> dict[str, Any]:
    data = load_yaml(PROMETHEUS_FILE)
    assert isinstance(data, dict)
    return data


def scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}


def test_prometheus_runs_the_mounted_config() -> None:
    svc = service("prometheus")
    flags = dict(arg.split("=", 1) for arg in svc["command"] if "=" in arg)
    assert host_path_of(svc, PurePosixPath(flags["--config.file"])) == PROMETHEUS_FILE.resolve()


def test_prometheus_keeps_the_longest_slo_window() -> None:
    flags = dict(arg.split("=", 1) for arg in service("prometheus")["command"] if "=" in arg)
    retention = parse_duration(flags["--storage.tsdb.retention.time"])
    config = parse_slo_text(SLO_FILE.read_text(encoding="utf-8"), SLO_FILE)
    assert retention > max(max(slo.windows) for slo in config.slos)


@pytest.mark.parametrize(
    ("job", "service_names", "port"), [("samokoder-api", ("api",), 8000), ("sloeval", SLOEVAL_REPLICAS, 9180)]
)
def test_prometheus_scrapes_the_api_and_every_sloeval_replica(
    job: str, service_names: tuple[str, ...], port: int
) -> None:
    scrape = scrape_jobs()[job]
    targets = [t for group in scrape["static_configs"] for t in group["targets"]]
    assert targets == [f"{name}:{port}" for name in service_names]
    assert set(service_names) <= set(compose()["services"])
    if job == "sloeval":
        assert port == Settings.model_fields["http_port"].default
        assert http_status(scrape.get("metrics_path", "/metrics")) == 200


def test_job_labels_in_the_slo_and_rule_files_are_scraped() -> None:
    svc = service("prometheus")
    rule_files = [host_path_of(svc, PurePosixPath(rule)) for rule in prometheus_config()["rule_files"]]
    files = [SLO_FILE, *(path for path in rule_files if path is not None and path.is_file())]
    used = {job for path in files for job in re.findall(r'\bjob="([^"]+)"', path.read_text(encoding="utf-8"))}
    assert "samokoder-api" in used
    assert used <= set(scrape_jobs()), f"no scrape job for {sorted(used - set(scrape_jobs()))}"


def test_prometheus_rule_files_are_mounted_from_config_prometheus() -> None:
    svc = service("prometheus")
    rule_files = prometheus_config()["rule_files"]
    assert rule_files
    for rule_file in rule_files:
        host = host_path_of(svc, PurePosixPath(rule_file))
        assert host is not None, f"{rule_file} is not inside a mounted directory"
        assert host.parent == (REPO / "config" / "prometheus").resolve()
        need_file(host, "the alerting rules are written in another change")


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    config = prometheus_config()
    svc = service("prometheus")
    host_rules = [host_path_of(svc, PurePosixPath(rule)) for rule in config.get("rule_files", [])]
    config["rule_files"] = [str(path) for path in host_rules if path is not None and path.is_file()]
    if not config["rule_files"]:
        del config["rule_files"]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_scrape_jobs_pass_promtool(tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    jobs = [job for block in readme_yaml_blocks() if isinstance(block, list) for job in block]
    assert [job["job_name"] for job in jobs] == ["sloeval"]
    pod_labels = {
        "__meta_kubernetes_namespace",
        "__meta_kubernetes_pod_name",
        "__meta_kubernetes_pod_container_name",
        "__meta_kubernetes_pod_container_port_name",
        "__meta_kubernetes_pod_container_port_number",
    }
    for job in jobs:
        # Debian's promtool is built without Kubernetes discovery: check that part here, the
        # relabelling with promtool on a static target.
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["localhost:9180"]}]
        used = {label for rule in job["relabel_configs"] for label in rule.get("source_labels", [])}
        assert used <= pod_labels
        keep = [rule for rule in job["relabel_configs"] if rule.get("action") == "keep"]
        assert [rule["regex"] for rule in keep] == ["slo-metrics"]
    _, container = sidecar()
    assert "slo-metrics" in {port["name"] for port in container["ports"]}
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": jobs}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana ----------------------------------------------------------------------------------


def test_grafana_provisioning_directories_are_mounted() -> None:
    svc = service("grafana")
    files = sorted(GRAFANA_PROVISIONING.rglob("*.yml"))
    assert {p.parent.name for p in files} == {"datasources", "dashboards"}
    for path in files:
        target = PurePosixPath("/etc/grafana/provisioning") / path.parent.name / path.name
        assert host_path_of(svc, target) == path.resolve(), f"{path.relative_to(REPO)} is not at {target}"


def test_grafana_datasource_is_the_bundled_prometheus() -> None:
    data = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")
    assert data["apiVersion"] == 1
    (source,) = data["datasources"]
    assert (source["uid"], source["name"], source["type"]) == (DATASOURCE_UID, "Prometheus", "prometheus")
    assert source["url"] == interpolate(environment(service(SLOEVAL_REPLICAS[0]))["SLOEVAL_PROMETHEUS_URL"], {})
    assert source["jsonData"]["timeInterval"] == prometheus_config()["global"]["scrape_interval"]


def dashboard_provider_dir() -> Path:
    data = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "sloeval.yml")
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    host = host_path_of(service("grafana"), PurePosixPath(provider["options"]["path"]))
    assert host is not None, "the dashboard provider's path is not mounted into the grafana service"
    return host


def test_grafana_loads_dashboards_from_config_grafana() -> None:
    assert dashboard_provider_dir() == (REPO / "config" / "grafana").resolve()
    home = environment(service("grafana"))["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path_of(service("grafana"), PurePosixPath(home)) == dashboard_provider_dir() / DASHBOARD_FILE


def test_the_provisioned_dashboard_fits_the_datasource() -> None:
    path = need_file(dashboard_provider_dir() / DASHBOARD_FILE, "the dashboard is written in another change")
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["uid"] == DASHBOARD_UID
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    default_job = variables.get("job", {}).get("current", {}).get("value")
    if isinstance(default_job, str) and "$" not in default_job:
        assert default_job in scrape_jobs(), f"the dashboard defaults to job {default_job!r}, which nothing scrapes"


# --- Kubernetes -------------------------------------------------------------------------------


def test_kubernetes_manifests_parse_and_name_their_objects() -> None:
    documents = list(k8s_documents())
    assert len(documents) >= 6
    for path, doc in documents:
        assert doc.get("apiVersion"), f"{path.name}: a document without apiVersion"
        assert doc.get("kind"), f"{path.name}: a document without kind"
        assert doc.get("metadata", {}).get("name"), f"{path.name}: a {doc['kind']} without metadata.name"
    kinds = sorted(doc["kind"] for _, doc in documents)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Secret", "Secret", "Service", "ServiceMonitor"]


def kustomization() -> dict[str, Any]:
    data = load_yaml(K8S / "kustomization.yaml")
    assert data["kind"] == "Kustomization"
    return data


def test_kustomization_covers_every_manifest() -> None:
    resources = kustomization()["resources"]
    assert all((K8S / name).is_file() for name in resources)
    text = (K8S / "kustomization.yaml").read_text(encoding="utf-8")
    unmentioned = [p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml" and p.name not in text]
    assert not unmentioned, f"kustomization.yaml neither lists nor mentions {unmentioned}"


def test_kubectl_kustomize_builds_the_directory() -> None:
    kubectl = need_tool("kubectl", required_in_ci=False)  # not a Debian package; the manifests are checked above
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    built = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d)
    assert built == [
        ("ConfigMap", "sloeval-env"),
        ("ConfigMap", "sloeval-slos"),
        ("Deployment", "samokoder-api"),
        ("Secret", "sloeval-database"),
        ("Secret", "sloeval-secrets"),
        ("Service", "sloeval"),
    ]


def test_configmap_holds_config_slos_yaml_byte_for_byte() -> None:
    copy = slo_copy_in_configmap()
    assert copy == SLO_FILE.read_text(encoding="utf-8"), (
        "deploy/kubernetes/configmap.yaml drifted from config/slos.yaml; "
        "run: .venv/bin/python -m tests.test_deploy_files"
    )
    parse_slo_text(copy, CONFIGMAP_FILE)


def test_sidecar_references_resolve_within_the_directory() -> None:
    pod, container = sidecar()
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_maps = k8s_objects("ConfigMap")
    secrets = k8s_objects("Secret")
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, f"volumeMount {mount['name']} has no volume"
    for volume in volumes.values():
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in config_maps
        if "secretRef" in source:
            assert source["secretRef"]["name"] in secrets
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["key"] in config_maps[ref["configMapKeyRef"]["name"]]["data"]
        if "secretKeyRef" in ref:
            secret = secrets[ref["secretKeyRef"]["name"]]
            assert ref["secretKeyRef"]["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}


def test_sidecar_secret_files_are_keys_of_the_mounted_secret() -> None:
    pod, container = sidecar()
    volumes = {v["name"]: v for v in pod["volumes"]}
    secrets = k8s_objects("Secret")
    secret_dirs = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            secret = secrets[volume["secret"]["secretName"]]
            secret_dirs[PurePosixPath(mount["mountPath"])] = {**secret.get("data", {}), **secret.get("stringData", {})}
    file_vars = {v["name"]: PurePosixPath(v["value"]) for v in container["env"] if v["name"].endswith("_FILE")}
    assert set(file_vars) <= SECRET_FILE_VARS
    assert len(file_vars) >= 2
    for name, path in file_vars.items():
        assert path.parent in secret_dirs, f"{name}={path} is not in a mounted Secret"
        assert path.name in secret_dirs[path.parent], f"{name}: the Secret has no key {path.name!r}"


def test_sidecar_follows_the_image_contract() -> None:
    pod, container = sidecar()
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_path = {PurePosixPath(m["mountPath"]): m for m in container["volumeMounts"]}
    config_mount = by_path[IMAGE_SLO_FILE.parent]
    assert config_mount.get("readOnly") is True
    assert "subPath" not in config_mount, "a subPath mount never sees ConfigMap updates"
    config_map = k8s_objects("ConfigMap")[volumes[config_mount["name"]]["configMap"]["name"]]
    assert IMAGE_SLO_FILE.name in config_map["data"]
    assert PurePosixPath("/tmp") in by_path, "a writable /tmp under readOnlyRootFilesystem"
    env = {v["name"]: v.get("value") for v in container.get("env", [])}
    assert DATABASE_URL_FILE_VAR in env or IMAGE_STATE_DIR in by_path, "state needs the database or a volume"
    for config_map_ref in container.get("envFrom", []):
        env |= k8s_objects("ConfigMap")[config_map_ref["configMapRef"]["name"]]["data"]
    assert env.get("SLOEVAL_SLO_FILE", str(IMAGE_SLO_FILE)) == str(IMAGE_SLO_FILE)
    assert env.get("SLOEVAL_STATE_DIR", str(IMAGE_STATE_DIR)) == str(IMAGE_STATE_DIR)
    assert int(env.get("SLOEVAL_HTTP_PORT", IMAGE_PORT)) == IMAGE_PORT
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"slo-metrics": IMAGE_PORT}


def test_sidecar_is_locked_down_and_bounded() -> None:
    _, container = sidecar()
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == IMAGE_UID
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_sidecar_probes_use_sloeval_endpoints() -> None:
    _, container = sidecar()
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in container:
            get = container[probe]["httpGet"]
            assert get["port"] in ("slo-metrics", IMAGE_PORT)
            assert http_status(get["path"]) != 404
    # Commented-out alternatives too: a path in a comment is copied into real manifests.
    for path in sorted(K8S.glob("*.yaml")):
        for route in re.findall(r"\bpath:\s*(/[\w/-]*)", path.read_text(encoding="utf-8")):
            assert http_status(route) != 404, f"{path.name}: sloeval does not serve {route}"


def test_the_sidecars_of_every_replica_share_one_database() -> None:
    (deployment,) = k8s_objects("Deployment").values()
    assert deployment["spec"]["replicas"] >= 2
    pod, container = sidecar()
    env = {v["name"]: v.get("value") for v in container["env"]}
    url_file = PurePosixPath(env[DATABASE_URL_FILE_VAR])
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == url_file.parent]
    secret = k8s_objects("Secret")[volumes[mount["name"]]["secret"]["secretName"]]
    url = urlsplit(secret["stringData"][url_file.name])
    assert url.scheme in ("postgresql", "postgres")
    # One sidecar per pod: a readiness probe on it would be the API's readiness.
    assert "readinessProbe" not in container
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Strategy Recreate was only needed while each pod had its own SQLite state.
    assert deployment["spec"].get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate"


def test_pod_annotations_point_at_sloeval_metrics() -> None:
    (deployment,) = k8s_objects("Deployment").values()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(IMAGE_PORT)
    assert http_status(annotations["prometheus.io/path"]) == 200


def test_service_and_servicemonitor_reach_the_sidecar_as_job_sloeval() -> None:
    (deployment,) = k8s_objects("Deployment").values()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    _, container = sidecar()
    (svc,) = k8s_objects("Service").values()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] in {p["name"] for p in container["ports"]}
    (monitor,) = k8s_objects("ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [svc_port["name"]]
    assert http_status(monitor["spec"]["endpoints"][0].get("path", "/metrics")) == 200
    # The job label Prometheus gives these series: the rules in config/prometheus expect "sloeval".
    assert svc["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "sloeval"
    assert "sloeval" in scrape_jobs()
    # The operator's `service` target label would rename sloeval's own `service` label, which the
    # dashboard and the rules read, to exported_service.
    assert "service" in LABELS_READ["samokoder_error_budget_remaining_percent"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert {"action": "labeldrop", "regex": "service"} in endpoint["relabelings"]


def test_secret_manifest_holds_only_placeholders() -> None:
    secrets = k8s_objects("Secret")
    assert set(secrets) == {"sloeval-secrets", "sloeval-database"}
    for secret in secrets.values():
        assert "data" not in secret
        assert secret["stringData"], "keep the keys: the Deployment points sloeval at them"
    filled = [key for key, value in secrets["sloeval-secrets"]["stringData"].items() if value != ""]
    assert not filled, f"real secret values do not belong in git: {filled}"
    # The database URL is an example, never empty (that would be SQLite in every pod, each
    # leading); its password is a placeholder.
    (url,) = secrets["sloeval-database"]["stringData"].values()
    assert urlsplit(url).password == PLACEHOLDER_PASSWORD


if __name__ == "__main__":
    rewrite_configmap()
    print(f"rewrote the {IMAGE_SLO_FILE.name} copy in {CONFIGMAP_FILE.relative_to(REPO)} from config/slos.yaml")
