"""Load a YAML config: parse, substitute ``${VAR}`` in string values, validate, report all problems.

Substitution happens on parsed string leaves, never on raw text, so a value can never inject
YAML structure. ``${VAR:-default}`` supplies a default; ``$${`` is a literal ``${``.
``${file:/run/secrets/name}`` is replaced by the content of that file (one trailing newline
removed), the way Docker and Kubernetes mount secrets. A key given twice in one mapping is an
error naming both lines (YAML parsers silently keep the last one).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cdc.config.model import AppConfig
from cdc.errors import ConfigError
from cdc.masking import mask_dsn

_VAR = re.compile(r"\$\$\{|\$\{file:([^}]+)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _substitute(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        if m.group(1) is not None:
            return _read_secret_file(m.group(1).strip(), path, problems)
        name, default = m.group(2), m.group(3)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{path}: environment variable {name} is not set (hint: export it, or write ${{{name}:-default}})"
        )
        return ""

    return _VAR.sub(repl, value)


def _read_secret_file(name: str, path: str, problems: list[str]) -> str:
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        problems.append(f"{path}: secret file {name} cannot be read: {reason}")
        return ""
    return text[:-1] if text.endswith("\n") else text


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: let the base class report it
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {first} and {line})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _loc(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_coherent()]",) or part.startswith(("function-", "tagged-union")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_problems(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> list[str]:
    """Turn pydantic errors into ``dotted.path: message (hint)`` lines."""
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        where = _loc(tuple(err["loc"]), prefix)
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            known = _known_fields(model, err["loc"][:-1]) if model else []
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}" if known else ""
            )
            problems.append(f"{where}: unknown key" + (f" (hint: {hint})" if hint else ""))
        elif kind == "missing":
            problems.append(f"{where}: required key is missing")
        elif kind == "value_error" and not err["loc"]:
            msg = str(err["msg"]).removeprefix("Value error, ")
            lead = f"{prefix}: " if prefix else ""
            problems.extend(f"{lead}{p.strip()}" for p in msg.split("\n") if p.strip())
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {mask_dsn(repr(got))})"
            problems.append(f"{where}: {msg}{shown}")
    return problems


def _known_fields(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> list[str]:
    """Walk the model along loc to list the keys that are allowed there."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    return sorted(getattr(current, "model_fields", {}).keys()) if current else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error becomes a ConfigError naming line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                f"the file is not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r}); "
                "save it as UTF-8"
            ],
            source=str(path),
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], source=str(path)) from None


def read_config_mapping(
    path: Path, env: Mapping[str, str] | None, problems: list[str], expected_keys: str
) -> dict[str, Any]:
    """Parse a config file and substitute ``${VAR}`` in its string values (problems appended)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([f"the top level must be a mapping ({expected_keys})"], source=str(path))
    data: dict[str, Any] = _substitute(raw, "", os.environ if env is None else env, problems)
    return data


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> AppConfig:
    """Load and validate a config file, including the chosen connector's own options.

    Raises ConfigError listing every problem found, each with its dotted path: the generic
    model, the connector's ``source:`` options and every stream's ``capture:`` are all checked
    even when an earlier part failed, so one run shows everything to fix.
    """
    path = Path(path)
    problems: list[str] = []
    data = read_config_mapping(path, env, problems, "name:, source:, streams:, ...")
    data["base_dir"] = str(path.resolve().parent)
    config: AppConfig | None = None
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, model=AppConfig))
    problems.extend(_connector_problems(data))
    if config is not None and config.schema_registry is not None:
        from cdc.schemas.subjects import make_client  # late: only configs with a registry need it

        try:
            make_client(config.schema_registry.url, config.schema_registry.config)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if config is not None:
        for i, stream in enumerate(config.streams):
            for attr in ("key_schema", "value_schema"):
                schema_path = config.resolve(getattr(stream, attr))
                if not schema_path.is_file():
                    problems.append(f"streams[{i}].{attr}: file not found: {schema_path}")
    if problems or config is None:
        raise ConfigError(problems, source=str(path))
    return config


def _connector_problems(data: dict[str, Any]) -> list[str]:
    """Validate the connector-specific blocks with the chosen connector's own models."""
    from cdc.registry import load_source_class  # late: only the chosen connector is imported

    source = data.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("connector"), str):
        return []
    try:
        cls = load_source_class(source["connector"])
    except ConfigError as exc:
        return [f"source.connector: {p}" for p in exc.problems]
    problems: list[str] = []
    options = {k: v for k, v in source.items() if k != "connector"}
    try:
        cls.config_model.model_validate(options)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, "source", cls.config_model))
    streams = data.get("streams")
    for i, stream in enumerate(streams if isinstance(streams, list) else []):
        capture = stream.get("capture", {}) if isinstance(stream, dict) else {}
        try:
            cls.stream_model.model_validate(capture)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, f"streams[{i}].capture", cls.stream_model))
    return problems
