"""A local JSON file, replaced atomically (write, fsync, rename, fsync the directory)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cdc.errors import ConfigError, LocalResourceError
from cdc.offsets import jsonvalues
from cdc.offsets.base import OffsetStore
from cdc.plugin import Offsets


class FileOffsetStore(OffsetStore):
    def __init__(self, connector: str, path: Path) -> None:
        super().__init__(connector)
        self.path = path

    def load(self) -> Offsets:
        self._check_writable()  # at start-up, not at the first commit after events were produced
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError([f"offsets file {self.path} is unreadable: {exc}"]) from None
        offsets = data.get("connectors", {}).get(self.connector, {})
        return dict(offsets)

    def _check_writable(self) -> None:
        probe = self.path.with_suffix(self.path.suffix + ".probe")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise LocalResourceError(
                f"offsets.path {self.path}: cannot write there: {exc.strerror}",
                hint="point offsets.path at a writable directory (a volume in a container)",
            ) from None

    def save(self, offsets: Offsets) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        data.setdefault("connectors", {})[self.connector] = offsets
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, default=jsonvalues.encode)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
