"""librdkafka's authentication/authorization errors are fatal (exit 10), not an outage to wait out."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from cdc.config import load_config
from cdc.errors import AuthenticationError, DeliveryError
from cdc.runtime.acks import AckTracker
from cdc.runtime.outputs import KafkaRecordOutput

KEY = '{"type":"record","name":"K","fields":[{"name":"id","type":"long"}]}'
CONFIG = """
name: auth
source: {connector: polling, url: "sqlite:///x.db"}
streams: [{name: items, key_schema: k.avsc, value_schema: k.avsc,
           capture: {table: items, mode: incrementing, incrementing_column: id}}]
kafka: {bootstrap_servers: "127.0.0.1:1"}
schema_registry: {url: "http://127.0.0.1:1"}
"""


def output(tmp_path: Path) -> KafkaRecordOutput:
    (tmp_path / "k.avsc").write_text(KEY)
    (tmp_path / "c.yaml").write_text(CONFIG)
    return KafkaRecordOutput(load_config(tmp_path / "c.yaml"), {}, AckTracker())


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    ],
)
def test_auth_errors_stop_the_connector(tmp_path: Path, code: int) -> None:
    out = output(tmp_path)
    try:
        out._on_error(KafkaError(code, "refused"))
        with pytest.raises(AuthenticationError) as info:
            out.poll(0)
        assert info.value.exit_code == 10
    finally:
        out.close()


def test_a_transport_error_is_only_logged(tmp_path: Path) -> None:
    out = output(tmp_path)
    try:
        out._on_error(KafkaError(KafkaError._TRANSPORT, "broker down"))
        out.poll(0)  # no exception: librdkafka reconnects by itself
        out._on_error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
        with pytest.raises(DeliveryError):
            out.poll(0)
    finally:
        out.close()
