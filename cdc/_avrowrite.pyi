"""Types of the C accelerator cdc._avrowrite (cdc/_avrowrite.c), the twin of cdc.schemas.fastwrite."""

import datetime
from collections.abc import Callable, Sequence
from typing import Any

NULL: int
BOOLEAN: int
INT: int
LONG: int
FLOAT: int
DOUBLE: int
STRING: int
UUID: int
BYTES: int
BYTES_DECIMAL: int
FIXED: int
FIXED_DECIMAL: int
ENUM: int
DATE: int
TIME_MILLIS: int
TIME_MICROS: int
TIMESTAMP_MILLIS: int
TIMESTAMP_MICROS: int
LOCAL_TIMESTAMP_MILLIS: int
LOCAL_TIMESTAMP_MICROS: int

class Writer:
    def __call__(self, record: dict[str, Any], /) -> bytes: ...

def make_writer(
    fields: Sequence[tuple[str, int, int, int, Callable[[Any], bytes] | dict[str, int] | None]],
    prefix: bytes,
    unmodelled: type[BaseException],
    uuid_type: type,
    decimal_type: type,
    epoch: datetime.datetime,
    days_shift: int,
    /,
) -> Writer: ...
