"""The offset store contract."""

from __future__ import annotations

import abc

from cdc.plugin import Offsets


class OffsetStore(abc.ABC):
    """Keeps the committed offsets of one connector, by source partition."""

    def __init__(self, connector: str) -> None:
        self.connector = connector

    @abc.abstractmethod
    def load(self) -> Offsets:
        """The last committed offsets ({} when the connector never committed)."""

    @abc.abstractmethod
    def save(self, offsets: Offsets) -> None:
        """Durably store the full offsets map; returns only once it is durable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
