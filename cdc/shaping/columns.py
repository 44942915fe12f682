"""Source columns as a stream's policies reshape them, for the start-up schema check."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from cdc.config.model import StreamConfig
from cdc.plugin import ColumnInfo
from cdc.shaping.policies import output_type


def shaped_columns(stream: StreamConfig, columns: Mapping[str, ColumnInfo]) -> dict[str, ColumnInfo]:
    """The columns with each policied column's value type replaced by the policy's output type
    (a hashed integer id is a string by the time it meets its Avro field; the policy check
    itself, output against Avro type, is :func:`cdc.shaping.policies.check_policies`)."""
    out = dict(columns)
    for name, policy in stream.policies.items():
        column = stream.fields.get(name, name)
        info = out.get(column)
        if info is not None:
            out[column] = dataclasses.replace(
                info,
                python_type=output_type(policy),
                value_range=None,
                length=None,
                charset=None,
                data_type=None,
            )
    return out
