"""``cdc check`` for a binlog reader (the mysql_binlog source, the outbox relay's log mode):
server settings, replica identity, privileges, retention.

Every finding names the statement or setting that fixes it.
"""

from __future__ import annotations

import re
from typing import Any

import pymysql

from cdc.mysql import server
from cdc.plugin import CheckResult

_SETTINGS = (
    ("log_bin", "ON", "enable binary logging: log_bin (server option; restart)"),
    ("binlog_format", "ROW", "SET GLOBAL binlog_format = 'ROW' (and in the server's option file)"),
    ("binlog_row_image", "FULL", "SET GLOBAL binlog_row_image = 'FULL' (and in the server's option file)"),
    (
        "binlog_row_metadata",
        "FULL",
        "SET GLOBAL binlog_row_metadata = 'FULL' (MySQL 8.0.1+, MariaDB 10.5+; and in the option file): "
        "every TABLE_MAP then carries column names, signedness, charsets and enum/set labels",
    ),
)


def preflight(
    conn: Any, *, server_id: int, by_gtid: bool, mariadb: bool, signal_table: tuple[str, str] | None = None
) -> list[CheckResult]:
    """The findings for a reader registering as replica ``server_id`` and keeping positions by
    GTID (``by_gtid``) or by file, writing watermarks into ``signal_table`` (db, table) if
    given, in order; a failed one has ok=False, a risk has warning=True."""
    out: list[CheckResult] = []
    names = [n for n, _, _ in _SETTINGS] + [
        "server_id", "gtid_mode", "binlog_expire_logs_seconds", "expire_logs_days",
    ]  # fmt: skip
    values = server.variables(conn, *names)
    for name, wanted, fix in _SETTINGS:
        got = values.get(name, "")
        ok = got.upper() == wanted
        out.append(CheckResult(ok, f"{name} = {wanted}", f"is {got or 'unset'}; {fix}" if not ok else ""))
    if by_gtid and mariadb:
        pos = str(server.scalar(conn, "SELECT @@GLOBAL.gtid_binlog_pos") or "")
        out.append(
            CheckResult(bool(pos), "MariaDB GTID position (resume_by: gtid)",
                        f"@@gtid_binlog_pos = {pos}" if pos else "empty: write one transaction first, or resume_by: file")
        )  # fmt: skip
    if by_gtid and not mariadb:
        ok = values.get("gtid_mode", "").upper() == "ON"
        out.append(
            CheckResult(ok, "gtid_mode = ON (resume_by: gtid)",
                        "" if ok else "SET GLOBAL gtid_mode = ON (after enforce_gtid_consistency = ON), or resume_by: file")
        )  # fmt: skip
    out.append(_server_id(conn, server_id, values.get("server_id", "")))
    grants = [str(r[0]) for r in server.rows(conn, "SHOW GRANTS")]
    out.append(_privileges(grants, mariadb))
    out.append(_retention(values))
    if signal_table is not None:
        db, table = signal_table
        exists = server.scalar(
            conn,
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, table),
        )
        out.append(signal_table_privileges(grants, db, table, exists=bool(exists)))
    return out


def _server_id(conn: Any, server_id: int, own: str) -> CheckResult:
    taken = {own}
    for statement in ("SHOW REPLICA HOSTS", "SHOW SLAVE HOSTS"):
        try:
            taken |= {str(r[0]) for r in server.rows(conn, statement)}
            break
        except pymysql.MySQLError:
            continue
    ok = str(server_id) not in taken
    return CheckResult(
        ok,
        f"server_id {server_id} is distinct from the server's and other replicas'",
        "" if ok else f"in use ({', '.join(sorted(taken))}): set source.server_id to an unused value",
    )


def _privileges(grant_lines: list[str], mariadb: bool) -> CheckResult:
    grants = " ".join(line.upper() for line in grant_lines)
    needed = ["REPLICATION SLAVE", "REPLICATION CLIENT" if not mariadb else "BINLOG MONITOR", "SELECT"]
    if mariadb and "REPLICATION CLIENT" in grants:
        grants += " BINLOG MONITOR"  # the pre-10.5 name of the same privilege
    if "ALL PRIVILEGES ON *.*" in grants:
        missing: list[str] = []
    else:
        missing = [p for p in needed if p not in grants]
    return CheckResult(
        not missing,
        "privileges: " + ", ".join(needed),
        "" if not missing else f"GRANT {', '.join(missing)} ON *.* TO <connector user>",
    )


def _retention(values: dict[str, str]) -> CheckResult:
    seconds = int(values.get("binlog_expire_logs_seconds") or 0)
    if not seconds:
        seconds = int(float(values.get("expire_logs_days") or 0) * 86400)
    if not seconds:
        return CheckResult(True, "binlog retention", "binary logs are never expired automatically")
    ok = seconds >= 86400
    return CheckResult(
        ok,
        "binlog retention",
        f"binary logs expire after {seconds} s"
        + ("" if ok else "; a connector stopped longer than that loses its position: "
                         "SET GLOBAL binlog_expire_logs_seconds = 604800"),
        warning=not ok,
    )  # fmt: skip


_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<target>\S+) TO ", re.IGNORECASE)


def signal_table_privileges(grants: list[str], db: str, table: str, *, exists: bool) -> CheckResult:
    """The finding for the signal table from the connector user's ``SHOW GRANTS`` lines."""
    held = _privileges_on(grants, db, table)
    needed = ["INSERT"] if exists else ["CREATE", "INSERT"]
    missing = [p for p in needed if "ALL PRIVILEGES" not in held and p not in held]
    name = f"{server.quote(db)}.{server.quote(table)}"
    what = f"signal table {db}.{table}: " + (
        "INSERT" if exists else "missing; CREATE and INSERT to create it at start"
    )
    if not missing:
        return CheckResult(True, what)
    fix = f"GRANT {', '.join(missing)} ON {name if exists else server.quote(db) + '.*'} TO <connector user>"
    if not exists:
        fix += (
            f"; or create it yourself: CREATE TABLE {name} (id VARCHAR(100) PRIMARY KEY, "
            "type VARCHAR(64) NOT NULL, data TEXT), and GRANT INSERT ON it"
        )
    return CheckResult(False, what, fix + " (privileges through roles are not resolved here)")


def _privileges_on(grants: list[str], db: str, table: str) -> set[str]:
    """The privileges the GRANT lines give on ``db.table`` (global, database - with MySQL's
    wildcard patterns - and table grants; column grants are ignored)."""
    held: set[str] = set()
    for line in grants:
        found = _GRANT.match(line)
        if found is None:
            continue  # a role granted to the user: not resolved
        target_db, _, target_table = found["target"].partition(".")
        target_db, target_table = target_db.strip("`"), target_table.strip("`")
        if not (_db_matches(target_db, db) and target_table in ("*", table)):
            continue
        for privilege in found["privileges"].split(","):
            privilege = privilege.strip().upper()
            if "(" not in privilege:  # SELECT (col): a column grant
                held.add(privilege)
    return held


def _db_matches(pattern: str, db: str) -> bool:
    """A database grant's name against ``db``: ``*``, the name, or a pattern (``%``, ``_``, ``\\_``)."""
    if pattern in ("*", db):
        return True
    regex = "".join(
        ".*" if part == "%" else "." if part == "_" else re.escape(part[-1])
        for part in re.findall(r"\\.|%|_|[^\\%_]", pattern)
    )
    return re.fullmatch(regex, db) is not None
