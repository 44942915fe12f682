"""Load a sink YAML config with the same substitution and error reporting as connector configs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from cdc.config.loader import read_config_mapping, validation_problems
from cdc.errors import ConfigError
from cdc.sink.config import SinkConfig


def load_sink_config(path: Path | str, env: Mapping[str, str] | None = None) -> SinkConfig:
    """Parse, substitute ``${VAR}``, validate; raise ConfigError listing every problem at once."""
    path = Path(path)
    problems: list[str] = []
    data = read_config_mapping(path, env, problems, "name:, topics:, target:, kafka:, ...")
    config: SinkConfig | None = None
    try:
        config = SinkConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, model=SinkConfig))
    if problems or config is None:
        raise ConfigError(problems, source=str(path))
    return config
