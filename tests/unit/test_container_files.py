"""Static checks of the container files: Dockerfile, .dockerignore, docker-compose.yml.

No Docker engine is needed (none runs here): the compose file is validated against the Compose
specification's JSON schema, its references are resolved against the repository, and the
connector config it mounts is loaded by the same loader `cdc validate` uses. Nothing connects
anywhere; the only I/O is reading files.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from cdc.config import load_config
from cdc.config.durations import parse_duration

REPO = Path(__file__).parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_SPEC = REPO / "tests" / "data" / "compose-spec" / "compose-spec.json"  # Apache-2.0: see its LICENSE
COMMON_SH = REPO / "scripts" / "services" / "common.sh"

# compose service -> the scripts/services/common.sh variable holding its host port
SERVICE_PORT_VARS = {
    "postgres": "CDC_PG_PORT",
    "mariadb": "CDC_MYSQL_PORT",
    "kafka": "CDC_KAFKA_PORT",
    "registry": "CDC_REGISTRY_PORT",
}
EXPECTED_DEFAULT_PORTS = {
    "CDC_PG_PORT": 55432,
    "CDC_MYSQL_PORT": 53306,
    "CDC_KAFKA_PORT": 59092,
    "CDC_REGISTRY_PORT": 58081,
}

# ${VAR} / ${VAR:-default} as the config loader reads them ($${ is a literal).
_CONFIG_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default} ($$ is a literal $).
_COMPOSE_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
_DSN_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"missing {COMPOSE_FILE}"
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), "docker-compose.yml: the top level must be a mapping"
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def connector(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert "connector" in services, "docker-compose.yml: no `connector` service"
    return services["connector"]


def interpolate(value: str) -> str:
    """Resolve compose interpolation with the defaults written in the file (no shell env)."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        assert m.group(2) is not None, f"compose variable {m.group(1)} has no default; the stack needs it set"
        return m.group(2)

    return _COMPOSE_VAR.sub(repl, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (both compose syntaxes), interpolated with defaults."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        env = dict(pairs)
    return {str(k): interpolate("" if v is None else str(v)) for k, v in env.items()}


def host_path(source: str) -> Path | None:
    """The repository path of a bind-mount source, or None for a named volume."""
    if source.startswith((".", "/", "~")):
        return (REPO / source).resolve() if not source.startswith("/") else Path(source)
    return None


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry, short or long syntax."""
    mounts = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            parts = item.split(":")
            assert len(parts) in (2, 3), f"unexpected volume syntax {item!r}"
            mode = parts[2] if len(parts) == 3 else ""
            mounts.append((parts[0], parts[1], "ro" in mode.split(",")))
        else:
            mounts.append((str(item.get("source", "")), str(item["target"]), bool(item.get("read_only"))))
    return mounts


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host_ip, published, target) of each port entry, short or long syntax."""
    out: list[tuple[str | None, int, int]] = []
    for item in service.get("ports") or []:
        if isinstance(item, dict):
            host_ip = item.get("host_ip")
            out.append((host_ip, int(item["published"]), int(item["target"])))
            continue
        spec = str(item).split("/", 1)[0]
        m = re.fullmatch(
            r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:]+\]):)?(?:(?P<pub>\d+):)?(?P<tgt>\d+)", spec
        )
        assert m, f"unexpected port syntax {item!r}"
        pub = m.group("pub")
        out.append((m.group("ip"), int(pub) if pub else 0, int(m.group("tgt"))))
    return out


def mounted_config(connector: dict[str, Any]) -> tuple[Path, str]:
    """The host file behind the config path in the connector's command, and that path."""
    command = connector["command"]
    assert isinstance(command, list), "connector.command: use the exec (list) form"
    assert command[0] == "run", f"connector.command should run a config, got {command}"
    in_container = PurePosixPath(command[1])
    for source, target, _ro in volume_mounts(connector):
        base = host_path(source)
        if base is not None and in_container.is_relative_to(target):
            return base / in_container.relative_to(target), str(in_container)
    pytest.fail(f"connector: {in_container} is not inside any bind-mounted volume")


def config_vars(path: Path) -> dict[str, bool]:
    """Every ${VAR} in the config's string values -> whether it has a default."""
    found: dict[str, bool] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            for m in _CONFIG_VAR.finditer(value):
                if m.group(1):
                    found[m.group(1)] = found.get(m.group(1), True) and m.group(2) is not None

    walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    assert DOCKERFILE.is_file(), f"missing {DOCKERFILE}"
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def exec_form(args: str, what: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"{what} must be exec form (a JSON array), got: {args}")
    assert isinstance(value, list), f"{what} must be a JSON array"
    assert all(isinstance(v, str) for v in value), f"{what}: every element must be a string"
    return value


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """(resolved base image, instructions) per build stage; global ARG defaults substituted."""
    args: dict[str, str] = {}
    result: list[tuple[str, list[tuple[str, str]]]] = []
    names: set[str] = set()
    for word, rest in dockerfile_instructions():
        if word == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif word == "FROM":
            tokens = [t for t in rest.split() if not t.startswith("--")]
            image = re.sub(
                r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), tokens[0]
            )
            if len(tokens) >= 3 and tokens[1].upper() == "AS":
                names.add(tokens[2])
            result.append((image if image not in names else f"stage:{image}", []))
        elif result:
            result[-1][1].append((word, rest))
    assert result, "Dockerfile has no FROM"
    return result


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    # A missing spec is a failure, not a skip: this is the only validation without an engine.
    assert COMPOSE_SPEC.is_file(), f"Compose specification schema not found at {COMPOSE_SPEC.resolve()}"
    spec = json.loads(COMPOSE_SPEC.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(spec, default=jsonschema.Draft7Validator)
    validator_cls.check_schema(spec)
    validator = validator_cls(spec)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "docker-compose.yml does not follow the Compose specification:\n" + "\n".join(
        f"  {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors
    )
    # The schema is not vacuous: a misspelt service key is rejected.
    bad = {"services": {"x": {"image": "busybox", "stop_grace_perod": "1s"}}}
    assert not validator.is_valid(bad)


def test_every_referenced_file_and_directory_exists(services: dict[str, dict[str, Any]]) -> None:
    missing = []
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            ctx = (REPO / context).resolve()
            if not ctx.is_dir():
                missing.append(f"{name}.build context {context}")
            elif not (ctx / dockerfile).is_file():
                missing.append(f"{name}.build dockerfile {ctx / dockerfile}")
        for source, _target, _ro in volume_mounts(svc):
            path = host_path(source)
            if path is not None and not path.exists():
                missing.append(f"{name}.volumes {source}")
        for env_file in (
            [svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file") or []
        ):
            env_path = str(env_file if isinstance(env_file, str) else env_file["path"])
            if not (REPO / env_path).is_file():
                missing.append(f"{name}.env_file {env_path}")
    assert not missing, f"docker-compose.yml references paths that do not exist: {missing}"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        for source, _target, _ro in volume_mounts(svc):
            if source and host_path(source) is None:
                assert source in declared, f"{name}: named volume {source!r} is not declared under volumes:"


def test_every_published_port_binds_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for host_ip, published, target in published_ports(svc):
            assert host_ip == "127.0.0.1", (
                f"{name}: port {target} is published on {host_ip or 'all interfaces'}; bind 127.0.0.1"
            )
            assert published, f"{name}: port {target} gets a random host port; publish a fixed one"


def test_host_ports_agree_with_the_service_scripts(services: dict[str, dict[str, Any]]) -> None:
    text = COMMON_SH.read_text(encoding="utf-8")
    defaults = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r'^(CDC_[A-Z_]+_PORT)="\$\{\1:-(\d+)\}"', text, flags=re.MULTILINE)
    }
    for var, port in EXPECTED_DEFAULT_PORTS.items():
        assert defaults.get(var) == port, f"scripts/services/common.sh: {var} default is {defaults.get(var)}"
    for service, var in SERVICE_PORT_VARS.items():
        assert service in services, f"docker-compose.yml: no {service} service"
        published = [p for _ip, p, _t in published_ports(services[service])]
        assert defaults[var] in published, (
            f"{service}: publishes {published}, scripts/services uses {var}={defaults[var]}"
        )


def test_kafka_advertises_the_published_host_listener(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["kafka"])
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    published = {p: t for _ip, p, t in published_ports(services["kafka"])}
    host_listener = [a for a in advertised if "//127.0.0.1:" in a]
    assert host_listener, f"no listener advertised to host clients (127.0.0.1) in {advertised}"
    port = int(host_listener[0].rsplit(":", 1)[1])
    assert published.get(port) == port, "the host listener must be published on the same port it advertises"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "CLUSTER_ID: 16 bytes in URL-safe base64"


def test_dependencies_wait_for_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if name != "connector":
            assert "healthcheck" in svc, f"{name}: no healthcheck"
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {dep: {} for dep in deps}
        for dep, cond in deps.items():
            assert dep in services, f"{name}.depends_on: unknown service {dep}"
            assert cond.get("condition") == "service_healthy", f"{name}.depends_on.{dep}: use service_healthy"
            assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_connector_is_built_from_the_dockerfile(connector: dict[str, Any]) -> None:
    build = connector.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    assert context is not None and (REPO / context).resolve() == REPO.resolve()
    cmd = exec_form(next(a for w, a in reversed(stages()[-1][1]) if w == "CMD"), "CMD")
    assert connector["command"] == cmd, "connector.command and the Dockerfile's CMD run different configs"


def test_connector_config_is_the_mounted_one_and_mounted_read_only(connector: dict[str, Any]) -> None:
    path, in_container = mounted_config(connector)
    assert path.is_file(), f"connector: {in_container} maps to {path}, which does not exist"
    assert path.is_relative_to(REPO.resolve()), "the mounted config must live in the repository"
    ro = [
        ro
        for source, target, ro in volume_mounts(connector)
        if PurePosixPath(in_container).is_relative_to(target)
    ]
    assert ro == [True], "mount the connector's config directory read-only"


def test_connector_environment_provides_every_config_variable(connector: dict[str, Any]) -> None:
    path, _ = mounted_config(connector)
    wanted = config_vars(path)
    assert wanted, (
        f"{path} references no ${{VAR}}; expected the DSN and addresses to come from the environment"
    )
    env = environment(connector)
    missing = sorted(var for var, has_default in wanted.items() if not has_default and var not in env)
    assert not missing, f"connector.environment lacks {missing}, which {path.name} references"


def test_mounted_config_passes_the_loader_with_the_compose_environment(
    connector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    path, _ = mounted_config(connector)
    cfg = load_config(path, env=environment(connector))  # what `cdc validate` runs, env = compose's only
    assert cfg.kafka is not None and cfg.schema_registry is not None
    assert cfg.offsets.store == "kafka"
    # The addresses name services of this compose file, on their in-network ports.
    bootstrap_hosts = {hp.rsplit(":", 1)[0] for hp in cfg.kafka.bootstrap_servers.split(",")}
    assert bootstrap_hosts <= set(services), (
        f"kafka.bootstrap_servers {bootstrap_hosts} are not compose services"
    )
    assert urlsplit(cfg.schema_registry.url).hostname in services
    assert urlsplit(str(cfg.source.options()["url"])).hostname in services
    # Health endpoint: reachable from outside the container, on the port the image checks.
    assert cfg.runtime.http_host == "0.0.0.0"  # noqa: S104 - inside the container, published on loopback
    assert cfg.runtime.http_port is not None, "runtime.http_port: the image's HEALTHCHECK needs it"
    assert any(t == cfg.runtime.http_port for _ip, _p, t in published_ports(connector))
    expose = [a for w, a in stages()[-1][1] if w == "EXPOSE"]
    assert str(cfg.runtime.http_port) in " ".join(expose).replace("/tcp", "").split()
    # Docker's SIGKILL must not cut the connector's own flush-and-commit short.
    grace = parse_duration(connector["stop_grace_period"])
    assert grace > cfg.runtime.shutdown_timeout, (
        f"stop_grace_period {grace}s must exceed runtime.shutdown_timeout {cfg.runtime.shutdown_timeout}s"
    )


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "build the wheel in a builder stage, install it in a runtime stage"
    for image, _ in all_stages:
        if image.startswith("stage:"):
            continue
        assert re.fullmatch(
            r"(docker\.io/(library/)?)?python:3\.11[.\d]*-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image
        ), f"base image {image!r} is not a slim Python 3.11 image"
    runtime_image, runtime = all_stages[-1]
    assert re.search(r"slim-bookworm", runtime_image), (
        f"runtime base {runtime_image!r}: use python:3.11-slim-bookworm"
    )
    runs = " ".join(a for w, a in runtime if w == "RUN")
    for tool in ("gcc", "g++", "build-essential", "make ", "clang"):
        assert tool not in runs, f"the runtime stage installs a compiler/build tool ({tool.strip()})"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [a.split()[0] for w, a in stages()[-1][1] if w == "USER"]
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the last USER is {users[-1]!r}; run as a non-root user"


def test_dockerfile_entrypoint_is_exec_form_cdc() -> None:
    runtime = stages()[-1][1]
    entry = [a for w, a in runtime if w == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    argv = exec_form(entry[-1], "ENTRYPOINT")  # shell form would make /bin/sh PID 1 and eat SIGTERM
    assert argv and argv[0] == "cdc", f"ENTRYPOINT should start with cdc, got {argv}"
    cmd = [a for w, a in runtime if w == "CMD"]
    assert cmd, "no CMD"
    argv = exec_form(cmd[-1], "CMD")
    assert argv[0] == "run" and argv[1].startswith("/etc/cdc/"), (
        f"CMD should run a config under /etc/cdc, got {argv}"
    )
    assert any(w == "WORKDIR" and a == "/app" for w, a in runtime), "WORKDIR /app"


def test_dockerfile_healthcheck_asks_the_announced_healthz() -> None:
    checks = [a for w, a in stages()[-1][1] if w == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    check = checks[-1]
    assert not check.upper().startswith("NONE"), "HEALTHCHECK NONE"
    assert "CMD" in check.split(), "HEALTHCHECK needs a CMD"
    argv_text = check[check.index("CMD") + 3 :].strip()
    argv = exec_form(argv_text, "HEALTHCHECK CMD") if argv_text.startswith("[") else shlex.split(argv_text)
    # Slim images have no curl; `cdc health` asks the URL the connector announced in the file
    # named by CDC_HEALTH_FILE, so the check follows the config's runtime.http_port.
    assert argv[:2] == ["cdc", "health"], argv
    assert "--url" not in argv, "a fixed URL would ignore the config's port"
    env = [a for w, a in stages()[-1][1] if w == "ENV"]
    assert any(a.startswith("CDC_HEALTH_FILE=/tmp/") for a in env), env


def test_dockerfile_environment_and_ports() -> None:
    runtime = stages()[-1][1]
    env: dict[str, str] = {}
    for word, rest in runtime:
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    assert env.get("CDC_LOG_FORMAT") == "json"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert any(w == "EXPOSE" and "8080" in a.split() for w, a in runtime), "EXPOSE 8080 (health/metrics)"


def test_dockerfile_bakes_in_no_secrets() -> None:
    offending = []
    for word, rest in dockerfile_instructions():
        if word not in ("ENV", "ARG"):
            continue
        for token in shlex.split(rest):
            key, sep, value = token.partition("=")
            if (sep and _SECRET_NAME.search(key)) or _DSN_WITH_PASSWORD.search(value):
                offending.append(f"{word} {token}")
    assert not offending, f"secrets belong in the run-time environment, not the image: {offending}"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    assert DOCKERIGNORE.is_file(), "missing .dockerignore"
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", ".run", "dist", "build"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    assert any("__pycache__" in p for p in patterns), ".dockerignore should exclude __pycache__"
