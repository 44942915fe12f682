"""A DSN that asks for TLS never gets a plaintext connection (issue 9, security).

The server provisioned for the tests has TLS disabled, so a DSN carrying ``ssl_ca`` must fail
to connect - the plain session and the replication stream alike - with the driver's "SSL is
required" error, instead of the driver's default "use TLS if offered, else plaintext" that
applied when the binlog source dropped the DSN's options.
"""

from __future__ import annotations

import pymysql
import pytest

from cdc.errors import SourceUnavailableError
from cdc.mysql import server
from cdc.mysql import stream as binlog

pytestmark = pytest.mark.integration

CA = "/etc/ssl/certs/ca-certificates.crt"


def _with_tls(dsn: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + f"ssl_ca={CA}"


@pytest.fixture
def plaintext_server(mysql_dsn: str) -> str:
    conn = server.connect(server.Settings.parse(mysql_dsn), mysql_dsn)
    try:
        have_ssl = server.scalar(conn, "SELECT @@GLOBAL.have_ssl")
        if have_ssl == "YES":
            pytest.fail("this test needs a server without TLS (the provisioned one has TLS disabled)")
        return str(server.current_gtids(conn, server.is_mariadb(conn)))
    finally:
        conn.close()


def test_a_session_never_falls_back_to_plaintext(mysql_dsn: str, plaintext_server: str) -> None:
    dsn = _with_tls(mysql_dsn)
    with pytest.raises(SourceUnavailableError, match="SSL is required") as raised:
        server.connect(server.Settings.parse(dsn), dsn)
    assert "***" in str(raised.value)  # the DSN's password masked


def test_the_replication_stream_never_falls_back_to_plaintext(mysql_dsn: str, plaintext_server: str) -> None:
    settings = server.Settings.parse(_with_tls(mysql_dsn))
    reader = binlog.open_reader(
        settings, server_id=987_654, start=plaintext_server, by_file=False, mariadb=True,
        heartbeat=1.0, schemas=["mysql"], tables=["nothing"],
    )  # fmt: skip
    try:
        with pytest.raises(pymysql.err.OperationalError, match="SSL is required"):
            binlog.fetch(reader, plaintext_server)
    finally:
        reader.close()
