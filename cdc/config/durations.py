"""Human durations in configs: ``500ms``, ``5s``, ``2m``, ``1h`` or a plain number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: Any) -> float:
    """Return seconds; raise ValueError with an example for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 5s, 2m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _PATTERN.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"{value!r} is not a duration; write e.g. 500ms, 5s, 2m or 1h")


Duration = Annotated[float, BeforeValidator(parse_duration)]
