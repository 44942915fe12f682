"""Configuration: pydantic models (unknown keys rejected) and YAML loading with ${VAR} substitution."""

from cdc.config.loader import load_config, validation_problems
from cdc.config.model import AppConfig, StreamConfig

__all__ = ["AppConfig", "StreamConfig", "load_config", "validation_problems"]
