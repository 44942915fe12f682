"""Drive the built connector image with podman (through scripts/container/podman.sh, which
applies the project's containers.conf): run, kill, start, stop, exec, logs, health."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT

PODMAN = ROOT / "scripts" / "container" / "podman.sh"
IMAGE = os.environ.get("CDC_IMAGE", "localhost/liberator-cdc:local")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman to completion; ``check`` fails the test with podman's own message."""
    result = subprocess.run(
        ["bash", str(PODMAN), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def status_of(url: str) -> int:
    """The HTTP status ``url`` answers, or 0 while nothing listens (the container is starting)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def require_image() -> None:
    """Never a skip: make container-test builds the image first, so its absence is a failure."""
    if shutil.which("podman") is None:
        pytest.fail(
            "podman is not installed: run `make container-test` (it installs podman and builds the image)"
        )
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is missing: run `make image` (CDC_ENGINE=podman) first")


def config_dir() -> Path:
    """A directory the container's user (uid 10001) can read, for /etc/cdc (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cdc-ctr-", dir="/var/tmp"))
    path.chmod(0o755)
    return path


def publish(directory: Path) -> None:
    """Make every file in ``directory`` world-readable (the container runs as uid 10001)."""
    for f in directory.iterdir():
        f.chmod(0o644)


def image_healthcheck() -> tuple[list[str], int, int]:
    """The image's HEALTHCHECK: its command (CMD form), timeout (s) and retries."""
    check = json.loads(podman("image", "inspect", IMAGE, "--format", "{{json .HealthCheck}}").stdout)
    return check["Test"], int(check["Timeout"] // 10**9), int(check["Retries"])


class Container:
    """One `podman run -d` of the image with a config directory mounted at /etc/cdc."""

    def __init__(self, config: Path, *options: str, health: bool = False) -> None:
        self.name = f"cdc-test-{uuid.uuid4().hex[:10]}"
        publish(config.parent)
        # Host network: the services listen on 127.0.0.1. --no-healthcheck unless the test runs
        # checks itself: without systemd, podman's check timer cannot be set up (only warns).
        flags = [] if health else ["--no-healthcheck"]
        self.started = time.monotonic()
        podman(
            "run", "-d", "--name", self.name, "--network", "host", *flags,
            "-v", f"{config.parent}:/etc/cdc:ro", *options,
            IMAGE, "run", f"/etc/cdc/{config.name}",
        )  # fmt: skip

    def inspect(self, template: str) -> str:
        return podman("inspect", self.name, "--format", template).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))

    def exec(self, *cmd: str) -> str:
        return podman("exec", self.name, *cmd).stdout

    def kill9(self) -> None:
        podman("kill", "--signal", "KILL", self.name)
        podman("wait", self.name, timeout=60)

    def start(self) -> None:
        podman("start", self.name)

    def stop(self, grace: int) -> float:
        """`podman stop -t grace`; returns how long it took."""
        began = time.monotonic()
        podman("stop", "-t", str(grace), self.name, timeout=grace + 60)
        return time.monotonic() - began

    def logs(self) -> tuple[str, str]:
        """The container's (stdout, stderr), kept apart."""
        result = podman("logs", self.name)
        return result.stdout, result.stderr

    def log_records(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as one JSON object (fails on a line that is not)."""
        out, _ = self.logs()
        records = []
        for line in out.splitlines():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records

    def health(self) -> tuple[int, str]:
        """One `podman healthcheck run` (exit code, output), and the container's health status."""
        result = podman("healthcheck", "run", self.name, check=False)
        if result.returncode not in (0, 1):  # 125: podman could not run the check at all
            out, err = self.logs()
            pytest.fail(
                f"podman healthcheck run exited {result.returncode}: {result.stderr.strip()}\n{out[-3000:]}{err[-2000:]}"
            )
        return result.returncode, self.inspect("{{.State.Health.Status}}")

    def remove(self) -> None:
        """Remove the container, printing its log's tail first (shown by pytest when a test fails)."""
        out = podman("logs", self.name, check=False)
        print(f"--- log of {self.name} (tail) ---\n{(out.stdout + out.stderr)[-4000:]}")
        podman("rm", "-f", "-t", "0", self.name, check=False)
