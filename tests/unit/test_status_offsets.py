"""cdc status shows PostgreSQL positions as PostgreSQL writes them (X/Y), not as integers."""

from __future__ import annotations

from cdc.plugin import StreamSpec
from connectors.sources.outbox.config import OutboxConfig
from connectors.sources.outbox.source import OutboxRelay
from connectors.sources.postgres_wal.config import WalConfig
from connectors.sources.postgres_wal.source import PostgresWalSource

URL = "postgresql://u:p@127.0.0.1:1/db"


def test_wal_offsets_show_commit_lsns_as_x_slash_y() -> None:
    spec = StreamSpec("s", ("id",), ("id",), {"table": "public.t"})
    source = PostgresWalSource(WalConfig(url=URL, slot="s", publication="p"), [spec])
    shown = source.show_offset({"phase": "stream", "commit": 0x16B374D848, "i": 3})
    assert shown == {"phase": "stream", "commit": "16/B374D848", "i": 3}
    snapshot = {"phase": "snapshot", "relation": "public.t", "after": [5], "done": []}
    assert source.show_offset(snapshot) == snapshot


def test_outbox_log_mode_offsets_show_commit_lsns_as_x_slash_y() -> None:
    spec = StreamSpec("s", ("aggregateid",), ("aggregateid",), {"aggregate_type": "a"})
    relay = OutboxRelay(OutboxConfig(url=URL, mode="log", slot="s", publication="p"), [spec])
    assert relay.show_offset({"commit": 4294967296, "i": 0}) == {"commit": "1/0", "i": 0}
