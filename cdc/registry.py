"""Find connectors: entry points (groups ``cdc.sources`` / ``cdc.sinks``) or ``package.module:Class``.

Only the chosen connector is imported, so its database driver loads only when it is used.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from cdc.errors import ConfigError
from cdc.plugin import SourceConnector

SOURCE_GROUP = "cdc.sources"
SINK_GROUP = "cdc.sinks"


def available(group: str = SOURCE_GROUP) -> dict[str, EntryPoint]:
    """Registered connectors of a group by name, not imported."""
    return {ep.name: ep for ep in entry_points(group=group)}


def _import(target: str) -> object:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError([f"cannot import {target!r}: {exc}"]) from None
    except Exception as exc:  # the module itself failed: report it, never a traceback
        raise ConfigError(
            [
                f"connector module {module_name!r} raised while importing: {type(exc).__name__}: {exc} "
                "(fix or reinstall that package)"
            ]
        ) from None


def load_source_class(name: str) -> type[SourceConnector]:
    """Resolve a source connector by registered name or ``package.module:Class``."""
    if ":" in name:
        obj = _import(name)
    else:
        eps = available(SOURCE_GROUP)
        if name not in eps:
            known = ", ".join(sorted(eps)) or "none installed"
            raise ConfigError(
                [f"unknown source connector {name!r} (known: {known}; or write package.module:Class)"]
            )
        try:
            obj = eps[name].load()
        except Exception as exc:  # ImportError, or the module raised: never a traceback
            raise ConfigError(
                [
                    f"source connector {name!r} failed to import: {type(exc).__name__}: {exc} "
                    "(fix or reinstall its package)"
                ]
            ) from None
    if not (isinstance(obj, type) and issubclass(obj, SourceConnector)):
        raise ConfigError([f"{name!r} is not a SourceConnector subclass"])
    return obj
