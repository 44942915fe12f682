"""The signal table's privileges read from SHOW GRANTS lines (cdc check, binlog source)."""

from __future__ import annotations

import pytest

from cdc.mysql.preflight import signal_table_privileges

BASE = "GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO `cdc`@`%`"


@pytest.mark.parametrize(
    ("grant", "exists", "ok"),
    [
        (None, True, False),
        (None, False, False),
        ("GRANT INSERT ON `shop`.`cdc_signals` TO `cdc`@`%`", True, True),
        ("GRANT INSERT ON `shop`.`cdc_signals` TO `cdc`@`%`", False, False),  # creating needs CREATE
        ("GRANT CREATE, INSERT ON `shop`.* TO `cdc`@`%`", False, True),
        ("GRANT ALL PRIVILEGES ON *.* TO `cdc`@`%` WITH GRANT OPTION", False, True),
        ("GRANT ALL PRIVILEGES ON `shop`.* TO `cdc`@`%`", False, True),
        ("GRANT CREATE, INSERT ON `sh\\_p`.* TO `cdc`@`%`", False, False),  # \\_ is a literal underscore
        ("GRANT CREATE, INSERT ON `sh_p`.* TO `cdc`@`%`", False, True),  # _ matches one character
        ("GRANT CREATE, INSERT ON `sho%`.* TO `cdc`@`%`", False, True),
        ("GRANT INSERT ON `other`.`cdc_signals` TO `cdc`@`%`", True, False),
        ("GRANT INSERT ON `shop`.`other` TO `cdc`@`%`", True, False),
        ("GRANT SELECT, INSERT (id) ON `shop`.`cdc_signals` TO `cdc`@`%`", True, False),  # a column grant
        ("GRANT `cdc_role` TO `cdc`@`%`", True, False),  # roles are not resolved
    ],
)
def test_the_finding_follows_the_grants(grant: str | None, exists: bool, ok: bool) -> None:
    grants = [BASE] + ([grant] if grant else [])
    assert signal_table_privileges(grants, "shop", "cdc_signals", exists=exists).ok is ok


def test_a_missing_table_names_the_grant_and_the_create_statement() -> None:
    found = signal_table_privileges([BASE], "shop", "cdc_signals", exists=False)
    assert "GRANT CREATE, INSERT ON `shop`.* TO <connector user>" in found.detail
    assert "CREATE TABLE `shop`.`cdc_signals` (id VARCHAR(100) PRIMARY KEY" in found.detail


def test_an_existing_table_names_the_insert_grant_on_it() -> None:
    found = signal_table_privileges([BASE], "shop", "cdc_signals", exists=True)
    assert found.detail.startswith("GRANT INSERT ON `shop`.`cdc_signals` TO <connector user>")
