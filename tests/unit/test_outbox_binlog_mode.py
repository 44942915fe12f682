"""The outbox relay's MySQL/MariaDB log mode without a server: its configuration rules and which
rows an acknowledgement releases."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cdc.errors import PositionLostError
from cdc.plugin import ChangeEvent, Op
from connectors.sources.outbox.binlogmode import BinlogReader
from connectors.sources.outbox.config import OutboxConfig


def test_log_mode_on_mysql_needs_server_id_not_a_slot() -> None:
    with pytest.raises(ValidationError, match="needs server_id"):
        OutboxConfig.model_validate({"url": "mysql://u:p@h/app", "mode": "log"})
    cfg = OutboxConfig.model_validate({"url": "mariadb+pymysql://u:p@h/app", "mode": "log", "server_id": 77})
    assert cfg.mysql and cfg.server_id == 77 and cfg.resume_by == "gtid"
    with pytest.raises(ValidationError, match="needs slot and publication"):
        OutboxConfig.model_validate({"url": "postgresql://u:p@h/app", "mode": "log", "server_id": 77})
    with pytest.raises(ValidationError, match="server_id is a MySQL/MariaDB setting"):
        OutboxConfig.model_validate(
            {"url": "postgresql://u@h/app", "mode": "log", "slot": "s", "publication": "p", "server_id": 7}
        )
    with pytest.raises(ValidationError, match="slot and publication are PostgreSQL settings"):
        OutboxConfig.model_validate({"url": "mysql://u@h/app", "mode": "log", "server_id": 7, "slot": "s"})
    assert not OutboxConfig.model_validate({"url": "postgresql://u@h/app"}).mysql


class _Deletes:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []

    def delete(self, ids: list[str], why: str) -> None:
        self.calls.append((ids, why))


def _event(row: dict[str, Any], partition: str, offset: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent("s", Op.CREATE, {"id": row["id"]}, None, partition, offset)


def test_acknowledge_deletes_exactly_the_rows_published_up_to_the_offset() -> None:
    reader = BinlogReader("mysql://u:p@h/app", "cdc_outbox", 77, False, 1.0, _event)
    deletes = _Deletes()
    reader._deleter = deletes  # type: ignore[assignment]
    reader.pending.extend([(1, "a"), (2, "b"), (3, "c"), (4, "d")])
    reader.acknowledge({"phase": "stream", "start": "0-1-5", "txn": "0-1-6", "i": 1, "n": 2})
    assert deletes.calls == [(["a", "b"], "relayed")]
    assert list(reader.pending) == [(3, "c"), (4, "d")]
    reader.acknowledge({"phase": "stream", "n": 2})  # nothing new acknowledged
    assert deletes.calls[-1] == ([], "relayed")
    reader.acknowledge({"phase": "snapshot", "start": "0-1-5", "n": 4})
    assert deletes.calls[-1] == (["c", "d"], "relayed") and not reader.pending


def test_a_purged_stored_position_is_fatal_with_the_outbox_recovery() -> None:
    reader = BinlogReader("mysql://u:p@h/app", "cdc_outbox", 77, False, 1.0, _event)

    def purged(*_: Any) -> None:
        raise PositionLostError("the binlog position '0-1-5' is no longer on the server (purged)")

    reader._stream = purged  # type: ignore[method-assign]
    reader._leftovers = lambda: None  # type: ignore[assignment, method-assign, return-value]
    reader._run({"phase": "stream", "start": "0-1-5", "txn": "0-1-6", "i": 0, "n": 1})
    with pytest.raises(PositionLostError) as caught:
        reader.poll(0.1)
    assert caught.value.exit_code == 5 and "0-1-5" in caught.value.message
    assert caught.value.hint and "still in the outbox table" in caught.value.hint
