"""SQLAlchemy engines with the session settings capture needs.

Sessions run in UTC so MySQL/MariaDB ``TIMESTAMP`` values come back as UTC wall clock (the
source then attaches the zone), and in READ COMMITTED where InnoDB's REPEATABLE READ would take
gap locks that block the application's inserts.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cdc.errors import AuthenticationError, SourceConfigError, SourceUnavailableError
from cdc.masking import mask_dsn


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``mysql://`` URLs and pick the drivers this project ships."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("mysql://", "mariadb://")):
        return "mysql+pymysql://" + url.split("://", 1)[1]
    return url


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    url = normalize_url(url)
    try:
        engine = sa.create_engine(url, pool_pre_ping=True, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise SourceConfigError(f"invalid database URL {mask_dsn(url)}: {exc}") from None

    @sa.event.listens_for(engine, "connect")
    def _session_setup(dbapi_conn: Any, _record: Any) -> None:
        name = engine.dialect.name
        cur = dbapi_conn.cursor()
        try:
            if name in ("mysql", "mariadb"):
                cur.execute("SET time_zone = '+00:00'")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            elif name == "postgresql":
                cur.execute("SET TIME ZONE 'UTC'")
                from cdc.pg.types import register_lenient_loaders

                register_lenient_loaders(dbapi_conn.adapters)
        finally:
            cur.close()
        if name != "sqlite":
            # In PostgreSQL a SET inside a transaction is undone by the pool's reset-on-return
            # rollback; commit so the session setting sticks (and the connection is idle).
            dbapi_conn.commit()

    return engine


# Credentials or rights refused: PostgreSQL SQLSTATE class 28, MySQL/MariaDB "access denied" codes.
_PG_AUTH_STATES = frozenset({"28000", "28P01"})
_MYSQL_AUTH_CODES = frozenset({1044, 1045, 1698, 1251})
_AUTH_WORDS = ("password authentication failed", "no pg_hba.conf entry", "access denied for user")


def is_auth_failure(exc: BaseException) -> bool:
    """True when a driver error (psycopg, pymysql, or SQLAlchemy wrapping them) says the server
    refused our credentials; a server that is down or restarting is not that."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in _PG_AUTH_STATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_AUTH_CODES:
        return True
    text = str(orig).lower()
    return any(w in text for w in _AUTH_WORDS)


def auth_error(what: str, exc: BaseException) -> AuthenticationError:
    return AuthenticationError(
        f"{what}: the server refused the credentials: {mask_dsn(str(getattr(exc, 'orig', exc))).strip()}",
        hint="fix the user/password (or the server's access rules); retrying would not help",
    )


def translate(exc: Exception, what: str) -> Exception:
    """Map driver errors to the service's tree: connection trouble is retriable, refused
    credentials are fatal."""
    if is_auth_failure(exc):
        return auth_error(what, exc)
    text = mask_dsn(str(getattr(exc, "orig", exc)))
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or getattr(
        exc, "connection_invalidated", False
    ):
        return SourceUnavailableError(f"{what}: {text}")
    if isinstance(exc, sa.exc.ProgrammingError | sa.exc.NoSuchTableError):
        return SourceConfigError(f"{what}: {text}")
    return SourceUnavailableError(f"{what}: {text}")
