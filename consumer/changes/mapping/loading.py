"""Reading a mapping file: YAML → :class:`MappingFile`, every failure a :class:`ConfigError`.

A :class:`ConfigError` names the key path of the wrong key
(``entities.orders.columns.amount.type``) and says what is wrong. Problems of
the file itself (missing, unreadable, YAML syntax, duplicate keys) have the
path ``(file)`` and give the line.
"""

from __future__ import annotations

import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from consumer.changes.mapping.model import MappingFile
from consumer.errors import ConfigError

FILE = "(file)"
DEFAULT_MAPPING = "default_mapping.yaml"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would keep the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_mapping(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


def read_text(path: str | Path | None) -> tuple[str, str]:
    """The file's text and the name to report it by; None = the shipped default."""
    if path is None:
        resource = resources.files("consumer").joinpath(DEFAULT_MAPPING)
        return resource.read_text(encoding="utf-8"), f"<default {DEFAULT_MAPPING}>"
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8"), source
    except FileNotFoundError:
        raise ConfigError(FILE, "mapping file not found", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(FILE, f"cannot read the mapping file: {exc}", source=source) from None


def parse(text: str, source: str) -> MappingFile:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(FILE, f"YAML syntax error at {where}{problem}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(FILE, f"YAML syntax error: {exc}", source=source) from None
    if data is None:
        raise ConfigError(FILE, "the mapping file is empty", source=source)
    if not isinstance(data, dict):
        raise ConfigError(
            FILE,
            f"expected a mapping with an 'entities' key, got {type(data).__name__}",
            source=source,
        )
    try:
        return MappingFile.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source) from None


# -- pydantic's errors, said as a user would want to read them ---------------------------


def config_error(exc: ValidationError, source: str | None) -> ConfigError:
    """The first error as path + problem; the others, if any, appended to the problem."""
    errors = exc.errors(include_url=False)
    path, problem = _describe(errors[0])
    others = [": ".join(_describe(error)) for error in errors[1:]]
    if others:
        problem += f" (also {'; '.join(others)})"
    return ConfigError(path, problem, source=source)


def _describe(error: ErrorDetails) -> tuple[str, str]:
    loc = error["loc"]
    path = ".".join(str(part) for part in loc) or "(root)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        expected = f"; expected one of {', '.join(allowed)}" if allowed else ""
        return path, f"unknown key {str(loc[-1])!r}{expected}"
    if kind == "missing":
        return path, "required key is missing"
    if kind == "value_error":
        cause = (error.get("ctx") or {}).get("error")
        return path, str(cause) if cause is not None else error["msg"]
    return path, f"{error['msg'][0].lower()}{error['msg'][1:]}, got {error['input']!r}"


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts, walking the model's annotations."""
    target: Any = MappingFile
    for part in loc:
        target = _unwrap(target)
        if isinstance(target, type) and issubclass(target, BaseModel):
            field = next(
                (f for name, f in target.model_fields.items() if (f.alias or name) == part),
                None,
            )
            if field is None:
                return []
            target = field.annotation
        elif typing.get_origin(target) in (dict, tuple, list):
            target = typing.get_args(target)[-1 if typing.get_origin(target) is dict else 0]
        else:
            return []
    target = _unwrap(target)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return [f.alias or name for name, f in target.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation
