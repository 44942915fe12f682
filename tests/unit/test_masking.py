from __future__ import annotations

from cdc.masking import mask_dsn


def test_masks_url_passwords_and_key_value_pairs() -> None:
    assert mask_dsn("postgresql://app:pa:ss@db/x") == "postgresql://app:***@db/x"
    assert mask_dsn("host=db password=hunter2 user=x") == "host=db password=*** user=x"
    assert mask_dsn("sasl.password=abc") == "sasl.password=***"
    assert mask_dsn("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
