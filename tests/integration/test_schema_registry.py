"""The schema registry (Apicurio, Confluent-compatible API) and its provisioning script.

Compatibility, canonical lookup and id stability run through confluent-kafka's
SchemaRegistryClient against the shared registry; the restart test starts a private second
instance so the shared one is never touched. The provisioning tests check that every start
script refuses a port held by a foreign listener with a located message.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from cdc.schemas.subjects import SubjectSchema, make_client, register
from tests.conftest import delete_subjects, required, unique

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "services"

V1: dict[str, Any] = {
    "type": "record",
    "name": "Customer",
    "namespace": "cdc.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
    ],
}
V2_BREAKING: dict[str, Any] = {**V1, "fields": [*V1["fields"], {"name": "email", "type": "string"}]}
V2_COMPATIBLE: dict[str, Any] = {
    **V1,
    "fields": [*V1["fields"], {"name": "email", "type": ["null", "string"], "default": None}],
}


def avro(schema: Mapping[str, Any], indent: int | None = None) -> Schema:
    return Schema(json.dumps(schema, indent=indent), "AVRO")


def parsed(schema: Schema) -> Any:
    assert schema.schema_str is not None
    return json.loads(schema.schema_str)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_script(
    script: str, action: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / script), action],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def get_json(url: str) -> object:
    # Generous: under the full suite's load the registry once took more than 10 s to answer.
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - loopback test service
        return json.loads(resp.read())


@pytest.fixture
def subject(registry_url: str) -> Iterator[str]:
    """A unique subject on the shared registry; deleted (soft, then permanently) afterwards."""
    name = f"{unique('test')}-value"
    yield name
    delete_subjects(registry_url, [name])


# --- the shared registry ----------------------------------------------------------------


def test_backward_compatibility_is_enforced(registry_url: str, subject: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    assert client.get_compatibility() == "BACKWARD"

    v1_id = client.register_schema(subject, avro(V1))
    assert client.get_version(subject, "latest").schema_id == v1_id

    # A new field without a default cannot read v1 data: incompatible, and refused with 409.
    assert client.test_compatibility(subject, avro(V2_BREAKING)) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, avro(V2_BREAKING))
    assert refused.value.http_status_code == 409, refused.value
    assert get_json(f"{registry_url}/subjects/{subject}/versions") == [1]

    # With a default it can: compatible, registered as version 2 under a new id.
    assert client.test_compatibility(subject, avro(V2_COMPATIBLE)) is True
    v2_id = client.register_schema(subject, avro(V2_COMPATIBLE))
    assert v2_id != v1_id
    latest = client.get_version(subject, "latest")
    assert (latest.version, latest.schema_id) == (2, v2_id)
    assert parsed(latest.schema) == V2_COMPATIBLE


def test_lookup_ignores_whitespace(registry_url: str, subject: str) -> None:
    v1_id = SchemaRegistryClient({"url": registry_url}).register_schema(subject, avro(V1))

    # A fresh client: no cached answer from the registration above.
    reformatted = avro(V1, indent=4)
    assert reformatted.schema_str != json.dumps(V1)
    found = SchemaRegistryClient({"url": registry_url}).lookup_schema(subject, reformatted)
    assert found.schema_id == v1_id
    assert found.version == 1
    assert parsed(found.schema) == V1


def register_at_once(
    registry_url: str, subject: SubjectSchema, racers: int
) -> tuple[list[int], list[BaseException]]:
    """``racers`` threads, each with a client of its own (as each process would have), lined up
    by a barrier, register ``subject``; the ids they got and what they raised."""
    barrier = threading.Barrier(racers)
    ids: list[int] = []
    failures: list[BaseException] = []

    def race() -> None:
        client = make_client(registry_url, {})
        barrier.wait()
        try:
            ids.append(register(client, subject))
        except BaseException as exc:  # collected: the caller asserts on them
            failures.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return ids, failures


def test_connectors_creating_one_key_subject_at_once_all_get_its_id(registry_url: str) -> None:
    # Two connectors (separate processes) that start together and share a topic create its key
    # subject at the same moment: the registry refuses the second "FULL_TRANSITIVE" rule with
    # 409 (measured: 18 of 60 such registrations failed before the refusal was handled).
    racers = 3
    subjects = [f"{unique('race')}-key" for _ in range(15)]
    try:
        for name in subjects:
            ids, failures = register_at_once(
                registry_url, SubjectSchema(name, {"type": "long"}, True), racers
            )
            assert failures == [], (name, failures)
            assert len(ids) == racers and len(set(ids)) == 1, (name, ids)
            assert SchemaRegistryClient({"url": registry_url}).get_compatibility(name) == "FULL_TRANSITIVE"
    finally:
        delete_subjects(registry_url, subjects)


# --- a private second registry instance ---------------------------------------------------


class RegistryInstance:
    """A registry started by registry.sh under its own state dir, ports and database."""

    def __init__(self, services_dir: Path, env: dict[str, str]) -> None:
        self.state = services_dir / "registry"
        self.env = env
        self.url = f"http://127.0.0.1:{env['CDC_REGISTRY_PORT']}/apis/ccompat/v7"

    def _log_tail(self) -> str:
        log = self.state / "registry.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""

    def start(self) -> int:
        res = run_script("registry.sh", "start", self.env, timeout=180)
        assert res.returncode == 0, f"registry.sh start failed:\n{res.stderr}\n{self._log_tail()}"
        return self.pid()

    def stop(self) -> None:
        res = run_script("registry.sh", "stop", self.env, timeout=60)
        assert res.returncode == 0, f"registry.sh stop failed:\n{res.stderr}"

    def pid(self) -> int:
        return int((self.state / "registry.pid").read_text().strip())

    def kill_leftover(self) -> None:
        """Last resort when stop failed: end the instance's own pid (never anything else)."""
        pidfile = self.state / "registry.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().strip())
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"quarkus-run.jar" in cmdline:
            os.kill(pid, 9)


def port_refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.fixture
def registry_db(pg_dsn: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for a private registry; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = unique("test_registry")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.destructive
def test_v1_still_resolves_by_the_same_id_after_a_registry_restart(
    pg_dsn: str, registry_db: str, tmp_path: Path
) -> None:
    # Share the distribution the shared instance already unpacked (160 MB) instead of fetching it.
    shared_dir = Path(os.environ.get("CDC_SERVICES_DIR", "/var/tmp/cdc-services"))
    app_dir = shared_dir / "registry" / "app"
    if not (app_dir / "quarkus-run.jar").is_file():
        reason = f"no unpacked registry distribution at {app_dir} (run scripts/services/registry.sh start)"
        pytest.fail(reason) if required("registry") else pytest.skip(reason)

    dsn = urlparse(pg_dsn)
    services_dir = tmp_path / "services"
    port = free_port()
    instance = RegistryInstance(
        services_dir,
        {
            "CDC_SERVICES_DIR": str(services_dir),
            "CDC_REGISTRY_PORT": str(port),
            "CDC_REGISTRY_MGMT_PORT": str(free_port()),
            "CDC_REGISTRY_DB": registry_db,
            "CDC_REGISTRY_APP_DIR": str(app_dir),
            "CDC_PG_PORT": str(dsn.port or 5432),
            "CDC_PG_PASSWORD": dsn.password or "",
        },
    )
    subject = f"{unique('test')}-value"
    try:
        first_pid = instance.start()
        assert not (services_dir / "registry" / "app").exists(), "the distribution was fetched again"
        v1_id = SchemaRegistryClient({"url": instance.url}).register_schema(subject, avro(V1))

        instance.stop()
        assert port_refuses(port), "the private registry still listens after registry.sh stop"
        second_pid = instance.start()
        assert second_pid != first_pid

        # Fresh clients and plain HTTP: nothing can come from a client-side cache.
        by_id = get_json(f"{instance.url}/schemas/ids/{v1_id}")
        assert isinstance(by_id, dict)
        assert json.loads(by_id["schema"]) == V1
        assert by_id.get("schemaType", "AVRO") == "AVRO"
        assert parsed(SchemaRegistryClient({"url": instance.url}).get_schema(v1_id)) == V1
        found = SchemaRegistryClient({"url": instance.url}).lookup_schema(subject, avro(V1, indent=4))
        assert (found.schema_id, found.version) == (v1_id, 1)
    finally:
        try:
            instance.stop()
        finally:
            instance.kill_leftover()


# --- provisioning: a foreign listener on the port ------------------------------------------


@pytest.fixture
def foreign_listener() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket that no service script owns."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("script", "service", "port_var", "other_port_vars", "never_created"),
    [
        ("registry.sh", "registry", "CDC_REGISTRY_PORT", ["CDC_REGISTRY_MGMT_PORT"], "registry/app"),
        ("postgres.sh", "postgres", "CDC_PG_PORT", [], "postgres/data"),
        ("kafka.sh", "kafka", "CDC_KAFKA_PORT", ["CDC_KAFKA_CONTROLLER_PORT"], "kafka/libs"),
    ],
)
def test_start_refuses_a_port_taken_by_a_foreign_listener(
    foreign_listener: int,
    tmp_path: Path,
    script: str,
    service: str,
    port_var: str,
    other_port_vars: list[str],
    never_created: str,
) -> None:
    env = {"CDC_SERVICES_DIR": str(tmp_path), port_var: str(foreign_listener)}
    env.update({var: str(free_port()) for var in other_port_vars})

    t0 = time.monotonic()
    res = run_script(script, "start", env, timeout=60)
    elapsed = time.monotonic() - t0

    assert res.returncode != 0, f"{script} start succeeded on a taken port:\n{res.stderr}"
    assert f"{service}:" in res.stderr, res.stderr
    assert f"port 127.0.0.1:{foreign_listener} is already taken" in res.stderr, res.stderr
    # The port check comes first: nothing was fetched, initialised or started.
    assert not (tmp_path / never_created).exists()
    assert elapsed < 30, f"{script} took {elapsed:.1f}s to notice the taken port"
