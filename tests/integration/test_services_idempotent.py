"""`services.sh up` on a running stack is a fast no-op and `status` reports every service."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SERVICES_SH = Path(__file__).resolve().parents[2] / "scripts" / "services" / "services.sh"


def services(action: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SERVICES_SH), action],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def managed_stack(pg_dsn: str, mysql_dsn: str, kafka_bootstrap: str, registry_url: str) -> None:
    """All four services are up, and they are the ones scripts/services manages."""
    expected = services("env", timeout=10)
    assert expected.returncode == 0, expected.stderr
    for address in (pg_dsn, mysql_dsn, kafka_bootstrap, registry_url):
        if address not in expected.stdout:
            pytest.skip(f"{address} is not an instance provisioned by scripts/services (services.sh env)")


@pytest.mark.usefixtures("managed_stack")
def test_up_on_a_running_stack_is_fast_and_idempotent() -> None:
    t0 = time.monotonic()
    up = services("up", timeout=60)
    elapsed = time.monotonic() - t0
    assert up.returncode == 0, up.stderr
    assert elapsed < 10, f"services.sh up took {elapsed:.1f}s on a running stack:\n{up.stderr}"
    for name in ("postgres", "mariadb", "kafka", "registry"):
        assert f"services: {name}: already running" in up.stderr, up.stderr

    status = services("status", timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["postgres", "mariadb", "kafka", "registry"], lines
    assert all(line.split(":", 1)[1].strip().startswith("running") for line in lines), lines
