"""The live keys of entity topics handed to a source (see :mod:`cdc.runtime.keyset`, which
reads them): the part the capture process needs, without the Kafka and registry clients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cdc.plugin import SourceConnector
from cdc.schemas.eventify import StreamEventifier

#: per stream: the Avro body of each live key -> the key as source column values
LiveKeys = dict[str, dict[bytes, dict[str, Any]]]


def restore(source: SourceConnector, eventifiers: Mapping[str, StreamEventifier], live: LiveKeys) -> None:
    """Hand the live keys to the source (in the process the source runs in)."""
    for name, keys in live.items():
        encode: Callable[[dict[str, Any]], bytes] = eventifiers[name].key_body
        source.restore_keys(name, keys, encode)
