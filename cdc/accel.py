"""Loading the optional C accelerators (``cdc._avroread`` ...), built by ``setup.py`` where a
C compiler is available.

Every accelerator has a pure-Python twin that gives the same results; the unit tests run both on
the same input. ``CDC_PURE_PYTHON=1`` in the environment selects the pure-Python paths, to
compare or to rule the accelerator out when diagnosing.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

#: set (to anything but "" or "0") to ignore the C accelerators
PURE_PYTHON_ENV = "CDC_PURE_PYTHON"


def pure_python() -> bool:
    """Whether the environment asks for the pure-Python paths."""
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


def load(name: str) -> ModuleType | None:
    """The accelerator ``cdc.<name>``, or None when it was not built or is switched off."""
    if pure_python():
        return None
    try:
        return importlib.import_module(f"cdc.{name}")
    except ImportError:
        return None
