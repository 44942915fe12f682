"""Load a sink YAML config with the same substitution and error reporting as connector configs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from cdc.config.loader import _substitute, read_yaml, validation_problems
from cdc.errors import ConfigError
from cdc.sink.config import SinkConfig


def load_sink_config(path: Path | str, env: Mapping[str, str] | None = None) -> SinkConfig:
    """Parse, substitute ``${VAR}``, validate; raise ConfigError listing every problem at once."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            ["the top level must be a mapping (name:, topics:, target:, kafka:, ...)"], source=str(path)
        )
    problems: list[str] = []
    data = _substitute(raw, "", os.environ if env is None else env, problems)
    config: SinkConfig | None = None
    try:
        config = SinkConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, model=SinkConfig))
    if problems or config is None:
        raise ConfigError(problems, source=str(path))
    return config
