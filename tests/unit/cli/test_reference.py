"""The configuration reference (docs/configuration.md) and README.md's sample: made
from the settings model, and checked against it independently of what makes them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from consumer.cli import reference
from consumer.cli.main import main
from consumer.config import API_KEY_ENV, Settings, load_settings
from consumer.kafka_options import settable

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / "docs" / "configuration.md"
README = REPO / "README.md"
STALE = "stale: run `make docs` and commit the result"


@pytest.fixture(autouse=True)
def only_the_api_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("RFMCUBE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(API_KEY_ENV, "k")
    yield


def leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every key of the model with its default, walked here, not by the generator."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaves(annotation, f"{prefix}{name}.")
        elif field.default_factory is not None:
            yield f"{prefix}{name}", field.default_factory()  # type: ignore[call-arg]
        else:
            assert field.default is not PydanticUndefined, f"{prefix}{name} has no default"
            yield f"{prefix}{name}", field.default


def rows(text: str) -> dict[str, list[str]]:
    """The rows of the reference's key tables, by key."""
    found = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            found[cells[0].strip("`")] = cells
    return found


def test_the_reference_lists_every_key_with_its_default_and_variable() -> None:
    table = rows(DOCS.read_text(encoding="utf-8"))
    expected = dict(leaves(Settings))
    assert set(table) == set(expected), "keys missing from (or unknown to) the reference"
    for key, default in expected.items():
        _, kind, shown, variable, meaning = table[key]
        value = yaml.safe_load(shown.strip("`"))
        assert value == (str(default) if isinstance(default, Path) else default), key
        name = "RFMCUBE_CDC__" + key.upper().replace(".", "__")
        assert variable.strip("`").startswith(name), key
        assert kind and meaning, key


def test_the_reference_is_what_the_model_says() -> None:
    assert DOCS.read_text(encoding="utf-8") == reference.markdown(), STALE


def test_readme_sample_is_what_the_model_says_and_the_service_takes_it(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    assert reference.with_sample(text) == text, STALE
    sample = text.split(reference.SAMPLE_BEGIN, 1)[1].split("```yaml\n", 1)[1].split("```")[0]
    config = tmp_path / "rfmcube-cdc.yaml"
    config.write_text(sample, encoding="utf-8")
    assert load_settings(config).model_dump() == load_settings(None).model_dump()
    written = yaml.safe_load(sample)
    expected = set(dict(leaves(Settings)))

    def keys_of(value: Any, path: str) -> set[str]:
        """The sample's keys, down to the model's leaves (kafka.extra is one)."""
        if path in expected or not isinstance(value, dict):
            return {path}
        return {k for name, v in value.items() for k in keys_of(v, f"{path}.{name}".lstrip("."))}

    assert keys_of(written, "") == expected


def test_every_kafka_option_the_service_takes_is_listed() -> None:
    text = DOCS.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(\w+)` \| ", text, flags=re.MULTILINE))
    assert set(settable()) <= listed
    assert "sasl_plain_password" in listed and "group_id" not in listed


def test_a_key_without_a_meaning_cannot_be_documented() -> None:
    class Section(BaseModel):
        plain: int = 1

    class Model(BaseModel):
        section: Section = Section()

    with pytest.raises(ValueError, match=r"section\.plain has no description"):
        list(reference.keys(Model))


def test_the_command_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-reference", "--yaml"]) == 0
    assert capsys.readouterr().out == reference.yaml_sample()
    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out == reference.markdown()
