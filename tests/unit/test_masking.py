from __future__ import annotations

from cdc.masking import mask_dsn


def test_masks_url_passwords_and_key_value_pairs() -> None:
    assert mask_dsn("postgresql://app:pa:ss@db/x") == "postgresql://app:***@db/x"
    assert mask_dsn("host=db password=hunter2 user=x") == "host=db password=*** user=x"
    assert mask_dsn("sasl.password=abc") == "sasl.password=***"
    assert mask_dsn("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"


def test_masks_quoted_values_with_spaces() -> None:
    assert mask_dsn("host=db password='a secret b' user=x") == "host=db password=*** user=x"
    assert mask_dsn('password="two words" x=1') == "password=*** x=1"


def test_masks_secret_keys_in_dict_reprs_and_json() -> None:
    conf = {"bootstrap.servers": "k:9092", "sasl.password": "s3cret", "basic.auth.user.info": "u:pw x"}
    shown = mask_dsn(repr(conf))
    assert "s3cret" not in shown and "pw x" not in shown
    assert "'bootstrap.servers': 'k:9092'" in shown and "'sasl.password': '***'" in shown
    assert mask_dsn('{"basic.auth.user.info": "u:p"}') == "{\"basic.auth.user.info\": '***'}"
