"""A source may ask for commits at least every N seconds (the outbox relay: its replay window)."""

from __future__ import annotations

from pathlib import Path

from cdc.config import load_config
from cdc.runtime.runner import _commit_at_least
from connectors.sources.outbox.source import OutboxRelay
from connectors.sources.polling.source import PollingSource
from tests.unit.test_config import BASE, write


def test_the_shorter_interval_wins_and_the_config_is_otherwise_unchanged(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), env={"DB_URL": "sqlite:///x.db"})
    assert cfg.offsets.commit_interval == 1.0
    assert _commit_at_least(cfg, None) is cfg
    assert _commit_at_least(cfg, 5.0) is cfg
    faster = _commit_at_least(cfg, OutboxRelay.max_commit_interval)
    assert faster.offsets.commit_interval == 0.1
    assert faster.offsets.store == cfg.offsets.store and faster.name == cfg.name
    assert PollingSource.max_commit_interval is None
