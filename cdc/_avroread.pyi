"""Types of the C accelerator cdc._avroread (cdc/_avroread.c), the twin of cdc.sink.fastread."""

from collections.abc import Callable, Sequence
from typing import Any

BOOLEAN: int
LONG: int
FLOAT: int
DOUBLE: int
BYTES: int
STRING: int
TIMESTAMP_MILLIS: int
TIMESTAMP_MICROS: int
LOCAL_TIMESTAMP_MILLIS: int
LOCAL_TIMESTAMP_MICROS: int
DATE: int
DECIMAL: int

class Reader:
    def __call__(self, data: bytes, pos: int, /) -> tuple[dict[str, Any], int]: ...

def make_reader(
    fields: Sequence[tuple[str, int, int, Callable[[Any], Any] | None, int, int]],
    fromordinal: Callable[[int], Any],
    days_shift: int,
    decimal: type,
    /,
) -> Reader: ...
