"""The MySQL/MariaDB DSN's driver options (TLS above all) reach every connection the binlog
source and the outbox relay's log mode open: the plain sessions and the replication stream."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.mysql import server
from cdc.mysql.server import Settings

TLS_DSN = (
    "mysql+pymysql://cdc:s%40cret@db.example:3307/shop"
    "?ssl_ca=/etc/cdc/ca.pem&ssl_cert=/etc/cdc/client.pem&ssl_key=/etc/cdc/client.key&ssl_check_hostname=true"
)
TLS = {
    "ca": "/etc/cdc/ca.pem",
    "cert": "/etc/cdc/client.pem",
    "key": "/etc/cdc/client.key",
    "check_hostname": True,
}


def test_the_dsn_query_becomes_pymysql_tls_options() -> None:
    settings = Settings.parse(TLS_DSN)
    assert (settings.host, settings.port, settings.user, settings.password, settings.database) == (
        "db.example", 3307, "cdc", "s@cret", "shop",
    )  # fmt: skip
    assert settings.options == {"ssl": TLS}


def test_a_dsn_without_options_has_none() -> None:
    assert Settings.parse("mysql://cdc:pw@127.0.0.1/shop").options == {}


def test_the_replication_stream_gets_the_tls_options() -> None:
    assert Settings.parse(TLS_DSN).replication() == {
        "ssl": TLS, "host": "db.example", "port": 3307, "user": "cdc", "passwd": "s@cret",
    }  # fmt: skip


def test_sessions_get_the_tls_options_but_keep_their_own_session_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(server.pymysql, "connect", lambda **kwargs: seen.update(kwargs))
    dsn = TLS_DSN + "&charset=latin1&connect_timeout=3"
    server.connect(Settings.parse(dsn), dsn)
    assert seen["ssl"] == TLS
    assert seen["connect_timeout"] == 3
    # every value read depends on these, whatever the DSN says
    assert (seen["autocommit"], seen["charset"], seen["init_command"]) == (
        True,
        "utf8mb4",
        "SET time_zone = '+00:00'",
    )
