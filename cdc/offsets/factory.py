"""Build the offset store a config asks for."""

from __future__ import annotations

from cdc.config.model import AppConfig
from cdc.offsets.base import OffsetStore


def make_offset_store(app: AppConfig) -> OffsetStore:
    store = app.offsets.store
    if store == "file":
        from cdc.offsets.file import FileOffsetStore

        assert app.offsets.path is not None
        return FileOffsetStore(app.name, app.resolve(app.offsets.path))
    if store == "database":
        from cdc.offsets.database import DatabaseOffsetStore

        assert app.offsets.url is not None
        return DatabaseOffsetStore(app.name, app.offsets.url.secret, app.offsets.table)
    from cdc.offsets.kafka import KafkaOffsetStore

    assert app.kafka is not None
    return KafkaOffsetStore(app.name, app.kafka, app.offsets.topic)
