"""The capture process stays lean: building a source, reading, routing and encoding there
never imports the Kafka or registry clients (about 30 MB of its interpreter, issue #15's RSS
goal); only the connector process produces and talks to the registry."""

from __future__ import annotations

import subprocess
import sys

#: what a capture process imports: its main module (the ``cdc`` console script's), the capture
#: loop, the source builder, routing and encoding, and each source connector
CHILD_MODULES = [
    "cdc.cli", "cdc.runtime.capture", "cdc.runtime.sources", "cdc.runtime.routing", "cdc.runtime.encoding",
    "cdc.runtime.livekeys", "connectors.sources.postgres_wal.source", "connectors.sources.mysql_binlog.source",
    "connectors.sources.polling.source", "connectors.sources.audit.source", "connectors.sources.outbox.source",
]  # fmt: skip


def test_the_capture_process_imports_no_kafka_client() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CHILD_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('confluent_kafka', 'httpx', 'authlib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the capture process would import: {out}"
