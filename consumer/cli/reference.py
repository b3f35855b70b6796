"""The configuration reference, made from the settings model itself.

Every key of :class:`consumer.config.Settings` with its type, its default, the
environment variable that sets it and its description (the model's own
``description``), as Markdown (``docs/configuration.md``) and as a YAML sample
(README.md's, which the service accepts as it is). Nothing here is written by
hand, so the reference cannot drift from the model: ``rfmcube-cdc
config-reference`` prints it for the installed version, ``make docs`` writes
the files, and a test fails when they differ from what the model says.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from consumer import kafka_options
from consumer.config import (
    ANONYMIZE_KEY_ENV,
    API_KEY_ENV,
    CONFIG_ENV,
    ENV_PREFIX,
    NESTING,
    SECRETS_DIR_ENV,
    Settings,
)

__all__ = ["Key", "keys", "markdown", "with_sample", "yaml_sample"]

# Options of kafka.extra that hold credentials: a secret file, never the YAML.
_SECRET_HINT = "a credential: a secret file or a variable, not the YAML"


@dataclass(frozen=True, slots=True)
class Key:
    """One key of the configuration."""

    path: tuple[str, ...]
    type: str
    default: Any
    description: str

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def variable(self) -> str:
        name = ENV_PREFIX + NESTING.join(part.upper() for part in self.path)
        # A mapping (kafka.extra) is set one entry per variable.
        return name + NESTING + "<OPTION>" if self.type == "mapping" else name


def _is_section(field: FieldInfo) -> bool:
    annotation = field.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def keys(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> Iterator[Key]:
    """Every key, section by section, in the model's order."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        if _is_section(field):
            assert isinstance(field.annotation, type)
            yield from keys(field.annotation, path)
            continue
        if not field.description:
            raise ValueError(f"{'.'.join(path)} has no description: the reference needs one")
        yield Key(path, _type_of(field), _default_of(field), field.description)


def sections() -> Iterator[tuple[str, str]]:
    """(name, description) of each section, in order."""
    for name, field in Settings.model_fields.items():
        if _is_section(field):
            yield name, field.description or ""


def _default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        names = [_type_name(a) for a in parts]
        if len(parts) < len(get_args(annotation)):
            names.append("null")
        return " or ".join(names)
    simple: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
    }
    return simple.get(annotation, "mapping")  # kafka.extra: a TypedDict of options


def _type_of(field: FieldInfo) -> str:
    text = _type_name(field.annotation)
    bounds = []
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Gt):
            bounds.append(f"> {rule.gt}")
        elif isinstance(rule, annotated_types.Ge):
            bounds.append(f"≥ {rule.ge}")
        elif isinstance(rule, annotated_types.Lt):
            bounds.append(f"< {rule.lt}")
        elif isinstance(rule, annotated_types.Le):
            bounds.append(f"≤ {rule.le}")
    return text + (f", {', '.join(bounds)}" if bounds else "")


def _yaml_value(value: Any) -> str:
    """A default as YAML writes it (JSON is YAML)."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and value.replace("_", "").isalnum() and value not in _YAML_WORDS:
        return value
    return json.dumps(value)


# Words YAML 1.1 would read as something other than a string.
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n"})


def yaml_sample() -> str:
    """Every key at its default, each with its meaning: a file the service accepts."""
    lines = [
        "# Every key of rfmcube-cdc's configuration, at its default (made by",
        "# `rfmcube-cdc config-reference --yaml`). Keep only what you change.",
    ]
    by_section: dict[str, list[Key]] = {}
    top: list[Key] = []
    for key in keys():
        if len(key.path) == 1:
            top.append(key)
        else:
            by_section.setdefault(key.path[0], []).append(key)
    for section, about in sections():
        lines += ["", f"# {about}", f"{section}:"]
        opened: tuple[str, ...] = ()
        for key in by_section[section]:
            # A nested section (kafka.schema_registry) opens once, before its keys.
            parents = key.path[1:-1]
            for depth in range(len(parents)):
                if opened[: depth + 1] != parents[: depth + 1]:
                    lines.append(f"{'  ' * (depth + 1)}{parents[depth]}:")
            opened = parents
            indent = "  " * len(key.path[:-1])
            lines += [
                f"{indent}# {key.description}",
                f"{indent}{key.path[-1]}: {_yaml_value(key.default)}",
            ]
    for key in top:
        lines += ["", f"# {key.description}", f"{key.name}: {_yaml_value(key.default)}"]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return f"`{_yaml_value(value)}`"


def markdown() -> str:
    """docs/configuration.md."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Made from the settings model (consumer/config/) by `make docs`;",
        "     tests/unit/cli/test_reference.py fails when it differs. -->",
        "",
        "Every key of rfmcube-cdc's configuration. Each can be set in the YAML file",
        "(`--config`), by an environment variable, or by a file named like that",
        "variable in the secrets directory (`--secrets-dir`, a mounted Secret):",
        "the environment wins over secret files, which win over the YAML, which wins",
        "over the defaults. `rfmcube-cdc check-config` says what is wrong, and where",
        "it was set. The same keys, as a YAML file at their defaults, are in",
        "[README.md](../README.md#running-it) (`rfmcube-cdc config-reference --yaml`).",
        "",
    ]
    by_section: dict[str, list[Key]] = {}
    for key in keys():
        by_section.setdefault(key.path[0] if len(key.path) > 1 else "", []).append(key)
    for section, about in [*sections(), ("", "")]:
        if not by_section.get(section):
            continue
        out += [f"## `{section}`: {about}" if section else "## Top level", ""]
        out += [
            "| key | type | default | environment variable | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key in by_section[section]:
            out.append(
                f"| `{key.name}` | {key.type} | {_cell(key.default)} | `{key.variable}` |"
                f" {key.description} |"
            )
        out.append("")
    out += _kafka_options()
    out += _outside_the_file()
    return "\n".join(out)


def _kafka_options() -> list[str]:
    out = [
        "## `kafka.extra`: kafka-python's consumer options",
        "",
        "Passed to kafka-python's `KafkaConsumer` (and, where a producer takes them,",
        "to the dead-letter producer); any other name is refused with its path.",
        "Each is also `RFMCUBE_CDC__KAFKA__EXTRA__<OPTION>`. What the service sets",
        "itself (`bootstrap_servers`, `group_id`, `client_id`, offsets and commits,",
        "deserializers, the assignor) is not among them.",
        "",
        "| option | kafka-python's default |",
        "| --- | --- |",
    ]
    for name in sorted(kafka_options.settable()):
        default = kafka_options.CONSUMER_DEFAULTS[name]
        shown = _SECRET_HINT if name in kafka_options.SECRET_OPTIONS else _cell(default)
        out.append(f"| `{name}` | {shown} |")
    return [*out, ""]


def _outside_the_file() -> list[str]:
    return [
        "## Outside the file",
        "",
        "| variable | meaning |",
        "| --- | --- |",
        f"| `{API_KEY_ENV}` | the API key (else the file `api.key_file`); never in the YAML |",
        f"| `{ANONYMIZE_KEY_ENV}` | the key of `customer_delete: anonymize`"
        " (else `privacy.anonymize_key_file`) |",
        f"| `{CONFIG_ENV}` | the YAML file, when a command has no `--config` |",
        f"| `{SECRETS_DIR_ENV}` | the secrets directory, when a command has no `--secrets-dir` |",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m consumer.cli.reference")
    parser.add_argument("--write", action="store_true", help="write docs/ and README.md")
    args = parser.parse_args(argv)
    if not args.write:
        print(markdown())
        return 0
    repo = Path(__file__).resolve().parents[2]
    (repo / "docs" / "configuration.md").write_text(markdown(), encoding="utf-8")
    readme = repo / "README.md"
    readme.write_text(with_sample(readme.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


SAMPLE_BEGIN = "<!-- configuration sample: made by `make docs`, do not edit -->"
SAMPLE_END = "<!-- end of the configuration sample -->"


def with_sample(readme: str) -> str:
    """README.md with its configuration sample made again."""
    head, rest = readme.split(SAMPLE_BEGIN, 1)
    _, tail = rest.split(SAMPLE_END, 1)
    return f"{head}{SAMPLE_BEGIN}\n```yaml\n{yaml_sample()}```\n{SAMPLE_END}{tail}"


if __name__ == "__main__":
    raise SystemExit(main())
