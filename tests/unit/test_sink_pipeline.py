"""Which decoded messages a batch applies once the batch written meanwhile is done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdc.sink.errors import BadMessageError, MessageRef
from cdc.sink.loader import load_sink_config
from cdc.sink.records import Change
from cdc.sink.runner import SinkRunner

CONFIG = """
name: s
topics: [{topic: t}]
target: {url: "postgresql://u:p@db/x"}
kafka: {bootstrap_servers: "localhost:9092"}
schema_registry: {url: "http://localhost:8081"}
"""


def change(partition: int, offset: int) -> Change:
    return Change(
        MessageRef("t", partition, offset, None), (None, "t"), (offset,), {"id": offset}, f"m{offset}"
    )


def test_a_batch_applies_owned_partitions_past_their_positions_and_skips_dropped_ones(tmp_path: Path) -> None:
    (tmp_path / "sink.yaml").write_text(CONFIG)
    runner = SinkRunner(load_sink_config(tmp_path / "sink.yaml"))
    runner.positions = {("t", 0): 5, ("t", 1): None, ("t", 2): 0}
    poison = BadMessageError(MessageRef("t", 1, 3, None), "cannot decode")
    decoded: list[Any] = [
        (("t", 0), 4, "m4", change(0, 4)),  # applied already
        (("t", 0), 5, "m5", change(0, 5)),
        (("t", 1), 3, "bad", poison),  # no stored position yet: everything applies
        (("t", 2), 9, "m9", change(2, 9)),  # its previous batch was fenced: fetched again
        (("t", 3), 1, "m1", change(3, 1)),  # revoked while in flight
    ]
    batch = runner._batch(decoded, {("t", 2)})
    assert batch.ends == {("t", 0): 6, ("t", 1): 4}
    assert [c.ref.offset for c in batch.changes] == [5]
    assert batch.poison == [("bad", poison)]
