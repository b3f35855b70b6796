"""Loading the configuration: the YAML file, the environment and the secret files
merged and validated, and every problem reported at once, with what was probably
meant and where the value came from."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from consumer import kafka_options
from consumer.config.api_sections import API_KEY_ENV
from consumer.config.settings import ENV_PREFIX, NESTING, Settings
from consumer.errors import ConfigError

# What every command reads when it has no --config / --secrets-dir (a second command
# in a pod reads what `run` does: deploy/ sets them).
CONFIG_ENV = "RFMCUBE_CDC_CONFIG"
SECRETS_DIR_ENV = "RFMCUBE_CDC_SECRETS_DIR"
_API_KEY_HINT = f"the API key is never part of the configuration: set {API_KEY_ENV} or api.key_file"


def _problems(error: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One pydantic error as (path, problem) pairs, explained where pydantic's words are not."""
    loc = tuple(str(part) for part in error["loc"])
    kind, message = error["type"], error["msg"]
    if kind == "kafka_options":
        return [(".".join((*loc, name)), problem) for name, problem in error["ctx"]["problems"]]
    if kind == "api_key":
        loc = (*loc, "key_file")
    elif loc == ("api", "key"):
        message = _API_KEY_HINT
    elif kind == "extra_forbidden" and len(loc) == 3 and loc[:2] == ("kafka", "extra"):
        message = kafka_options.why_not_settable(loc[2])
    elif kind == "extra_forbidden":
        message += _did_you_mean(loc[-1], _keys_at(loc[:-1]))
    return [(".".join(loc) or "(top level)", message)]


def _keys_at(section: tuple[str, ...]) -> list[str]:
    """The keys a section of the configuration takes (none where it is no section)."""
    model: type[BaseModel] = Settings
    for name in section:
        field = model.model_fields.get(name)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _prefixed(name: str) -> bool:
    return name.upper().startswith(ENV_PREFIX)


def _unknown_names(names: Iterable[str], where: str) -> list[tuple[str, str]]:
    """Variables or secret files with our prefix that name no section: pydantic
    would skip them silently, and a typo would go unnoticed."""
    sections = set(Settings.model_fields)
    problems = []
    for name in names:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        head = name[len(ENV_PREFIX) :].split(NESTING, 1)[0].lower()
        if head == "api_key":
            problems.append((name, _API_KEY_HINT))
        elif head not in sections:
            hint = _did_you_mean(head, sections)
            problems.append(
                (name, f"{where} names no section ({', '.join(sorted(sections))}){hint}")
            )
    return problems


class _Origins:
    """Where each value came from, to say it beside a problem: the environment
    variable, the secret file or the YAML file that set it, in the order the
    configuration's precedence takes them."""

    def __init__(self) -> None:
        self._set: list[tuple[tuple[str, ...], str]] = []  # (path, where), highest first

    def add(self, entries: Iterable[tuple[tuple[str, ...], str]]) -> None:
        self._set.extend(entries)

    def of(self, path: str) -> str | None:
        loc = tuple(path.split("."))
        for where_set, where in self._set:
            common = min(len(where_set), len(loc))
            # The value itself, a whole section it is in (a variable holding JSON),
            # or a value inside the section the problem is about.
            if where_set[:common] == loc[:common]:
                return where
        return None


def _named(names: Iterable[str], where: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """The paths that variables (or secret files) named RFMCUBE_CDC__... set."""
    for name in names:
        if name.upper().startswith(ENV_PREFIX):
            path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(NESTING))
            yield path, where.format(name=name)


def _yaml_values(
    raw: Mapping[Any, Any], source: str, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str]]:
    """The paths of the values (not the sections) the YAML file sets."""
    for key, value in raw.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from _yaml_values(value, source, path)
        else:
            yield path, source


def _read_yaml(path: Path, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError("(file)", "no such file", source=source) from None
    except OSError as exc:
        raise ConfigError("(file)", f"cannot be read: {exc.strerror}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError("(file)", f"not valid YAML: {exc}", source=source) from None
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", "expected a mapping of sections", source=source)
    return raw


def load_settings(path: str | Path | None, *, secrets_dir: str | Path | None = None) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError listing every fault.

    ``path`` is the YAML file (None: defaults only); ``secrets_dir`` holds one
    file per key, named like its environment variable.
    """
    source = str(path) if path is not None else None
    raw = _read_yaml(Path(path), str(path)) if path is not None else {}
    in_file = list(_yaml_values(raw, source)) if source is not None else []
    origins = _Origins()
    problems: list[tuple[str, str]] = []
    # Top-level names pydantic-settings would take as its own init options.
    for name in [name for name in raw if name not in Settings.model_fields]:
        hint = _did_you_mean(str(name), Settings.model_fields)
        problems.append(
            (str(name), _API_KEY_HINT if name == "api_key" else f"no such section{hint}")
        )
        del raw[name]
    problems += _unknown_names(os.environ, "the environment variable")
    # Highest precedence first: a value set in two places came from the first.
    origins.add(_named(os.environ, "environment variable {name}"))
    options: dict[str, Any] = {}
    if secrets_dir is not None:
        folder = Path(secrets_dir)
        if not folder.is_dir():
            raise ConfigError("(secrets directory)", f"{folder} is not a directory")
        options["_secrets_dir"] = folder
        files = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        problems += _unknown_names(files, "the secret file")
        origins.add(_named(files, f"secret file {folder}/{{name}}"))
    origins.add(in_file)
    settings: Settings | None = None
    try:
        settings = Settings(**options, **raw)
    except ValidationError as exc:
        problems += [p for error in exc.errors() for p in _problems(error)]
    except SettingsError as exc:
        problems.append(("(environment or secrets)", str(exc)))
    if problems or settings is None:
        first, *more = problems or [("(top level)", "invalid")]
        # A variable or secret file naming no section says so itself.
        found = {name: origins.of(name) for name, _ in problems if not _prefixed(name)}
        raise ConfigError(
            *first, more=more, origins={name: o for name, o in found.items() if o is not None}
        )
    if settings.mapping is not None and path is not None and not settings.mapping.is_absolute():
        settings = settings.model_copy(update={"mapping": Path(path).parent / settings.mapping})
    return settings
