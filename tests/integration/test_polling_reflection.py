"""Reflection of a captured table must not depend on the tables its foreign keys point to."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdc.errors import SourceConfigError
from cdc.plugin import StreamSpec
from cdc.sql.engines import normalize_url
from connectors.sources.polling.config import PollingConfig
from connectors.sources.polling.source import PollingSource

pytestmark = pytest.mark.integration


def test_a_dangling_foreign_key_does_not_hide_the_captured_table(mysql_database: str) -> None:
    engine = sa.create_engine(normalize_url(mysql_database))
    with engine.begin() as conn:
        conn.exec_driver_sql("SET foreign_key_checks = 0")
        conn.exec_driver_sql(
            "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, "
            "CONSTRAINT fk_parent FOREIGN KEY (parent_id) REFERENCES parent (id))"
        )
    engine.dispose()
    spec = StreamSpec("child", ("id",), ("id", "parent_id"), {"table": "child", "mode": "bulk"})
    source = PollingSource(PollingConfig.model_validate({"url": mysql_database}), [spec])
    try:
        columns = source.describe()["child"]
        assert set(columns) == {"id", "parent_id"}
    finally:
        source.close()
    missing = StreamSpec("ghost", ("id",), ("id",), {"table": "ghost", "mode": "bulk"})
    source = PollingSource(PollingConfig.model_validate({"url": mysql_database}), [missing])
    try:
        with pytest.raises(SourceConfigError, match="'ghost' does not exist"):
            source.describe()
    finally:
        source.close()
