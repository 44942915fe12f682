"""Offset stores: where a connector's committed source positions live."""

from cdc.offsets.base import OffsetStore
from cdc.offsets.factory import make_offset_store

__all__ = ["OffsetStore", "make_offset_store"]
