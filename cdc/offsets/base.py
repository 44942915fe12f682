"""The offset store contract."""

from __future__ import annotations

import abc
from collections.abc import Callable

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

    def save_async(self, offsets: Offsets, done: Callable[[], None]) -> None:
        """Start storing the full offsets map; ``done`` is called (from ``serve``/``flush``, in
        the order of the saves) once it is durable. Default: a synchronous save."""
        self.save(offsets)
        done()

    def serve(self) -> None:  # noqa: B027 - optional hook
        """Run the completions of finished saves; raise DeliveryError for a failed one."""

    def flush(self, timeout: float) -> bool:
        """Wait for outstanding saves (running their completions); False if some remain."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
