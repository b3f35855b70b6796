"""The Dockerfile and the distributions: a pinned base, a non-root runtime that owns its
data directory, and no emulator or test code in the service's wheel or image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DATA_DIR = "/var/lib/rfmcube-cdc"


@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.steps if key == keyword]

    def index(self, keyword: str, pattern: str = "") -> int:
        for number, (key, rest) in enumerate(self.steps):
            if key == keyword and re.search(pattern, rest):
                return number
        raise AssertionError(f"no {keyword} matching {pattern!r} in stage {self.name}")


def parse_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs and the stages, in order, of the repository's Dockerfile."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(name.strip(), base.strip()))
        elif stages:
            stages[-1].steps.append((keyword, rest.strip()))
        elif keyword == "ARG":
            key, _, value = rest.partition("=")
            arguments[key] = value
    return arguments, stages


def stages_behind(target: str, stages: list[Stage]) -> list[Stage]:
    """``target`` and every stage it copies from or builds on."""
    by_name = {stage.name: stage for stage in stages}
    found, todo = [], [target]
    while todo:
        stage = by_name[todo.pop()]
        found.append(stage)
        sources = re.findall(r"--from=(\S+)", " ".join(stage.all("COPY")))
        todo += [s for s in [*sources, stage.base] if s in by_name]
    return found


def test_every_stage_starts_from_the_base_pinned_by_digest() -> None:
    arguments, stages = parse_dockerfile()
    pinned = r"python:3\.11-slim-bookworm@sha256:([0-9a-f]{64})"
    match = re.fullmatch(pinned, arguments["PYTHON_BASE"])
    assert match
    assert {stage.base for stage in stages} == {"${PYTHON_BASE}"}
    # The comment above the pin says where the digest was read, to the commit.
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    comment = " ".join(
        line.lstrip("# ") for line in text[: text.index("ARG PYTHON_BASE=")].splitlines()
    )
    assert re.search(
        r"Where the digest was read: .*github\.com/docker-library/repo-info, "
        r"repos/python/remote/3\.11-slim-bookworm\.md at commit [0-9a-f]{40}",
        comment,
    ), comment
    assert "docker buildx imagetools inspect python:3.11-slim-bookworm" in comment


def test_the_service_is_installed_from_the_lock_with_hashes() -> None:
    """The runtime dependencies come only from requirements.lock.txt, each file
    checked against its hash; the project itself adds none (--no-deps)."""
    _, stages = parse_dockerfile()
    (build,) = [stage for stage in stages if stage.name == "build"]
    copied = build.index("COPY", r"^requirements\.lock\.txt ")
    locked = build.index("RUN", r"--require-hashes --no-deps .*-r requirements\.lock\.txt")
    project = build.index("RUN", r"install --no-deps --no-index /tmp/wheels/")
    assert copied < locked < project
    # Every pip in the build either installs the lock with hashes or reaches no
    # index at all: nothing unchecked is downloaded.
    for rest in build.all("RUN"):
        for command in re.split(r"&&", rest):
            if re.match(r"\s*pip\s", command):
                assert ("--require-hashes" in command and "--no-deps" in command) or (
                    "--no-index" in command and "--no-deps" in command
                ), command
    # Built with the base image's setuptools, not one fetched for the build.
    assert "--no-build-isolation" in build.steps[project][1]


def test_the_runtime_image_runs_as_uid_10001_and_owns_its_data_directory() -> None:
    _, stages = parse_dockerfile()
    runtime = stages[-1]  # the last stage: what `docker build .` makes
    assert runtime.name == "runtime"
    assert runtime.all("USER") == ["10001:10001"]
    created = runtime.index("RUN", rf"install -d -o 10001 -g 10001 -m 0700 {DATA_DIR}")
    assert created < runtime.index("USER") < runtime.index("VOLUME", DATA_DIR)
    (check,) = runtime.all("HEALTHCHECK")
    assert "urllib.request.urlopen('http://127.0.0.1:8080/healthz'" in check
    assert "curl" not in check  # slim images have none
    assert json.loads(runtime.all("ENTRYPOINT")[0]) == ["rfmcube-cdc"]


def test_no_emulator_or_test_code_in_the_runtime_image() -> None:
    _, stages = parse_dockerfile()
    behind = stages_behind("runtime", stages)
    assert {stage.name for stage in behind} == {"runtime", "build"}
    for stage in behind:
        for keyword, rest in stage.steps:
            assert not re.search(r"emulator|tests|bench|e2e", rest), (stage.name, keyword, rest)
    (build,) = [stage for stage in behind if stage.name == "build"]
    copied = {part for rest in build.all("COPY") for part in rest.split()[:-1]}
    assert copied == {
        "requirements.lock.txt",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "consumer",
        "schemas",
    }


def test_the_emulator_is_a_target_of_its_own() -> None:
    _, stages = parse_dockerfile()
    emulator = next(stage for stage in stages if stage.name == "emulator")
    assert stages[-1] is not emulator
    assert emulator.all("USER") == ["10001:10001"]
    entrypoint = json.loads(emulator.all("ENTRYPOINT")[0])
    assert entrypoint[:3] == ["python", "-m", "emulator"] and "8081" in entrypoint
    assert "8081/_emulator/health" in emulator.all("HEALTHCHECK")[0]


def test_the_build_context_holds_only_what_the_images_install() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    included = {line[1:].removesuffix("/**") for line in lines if line.startswith("!")}
    assert included == {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "requirements.lock.txt",
        "consumer",
        "schemas",
        "emulator",
    }


def build_wheel(source: Path, out: Path) -> zipfile.ZipFile:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository without caches: builds write build/ and egg-info beside the source."""
    copy = tmp_path_factory.mktemp("source") / "rfmcube-cdc"
    shutil.copytree(
        REPO,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".cache", "build", "*.egg-info", "__pycache__", ".*_cache", "*.db*"
        ),
    )
    return copy


def test_the_service_wheel_holds_no_emulator(source_copy: Path, tmp_path: Path) -> None:
    with build_wheel(source_copy, tmp_path / "service") as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert {name.split("/")[0] for name in names if "/" in name} == {
        "consumer",
        "schemas",
        "rfmcube_cdc-0.1.0.dist-info",
    }
    assert "consumer/default_mapping.yaml" in names and "consumer/py.typed" in names
    assert "Requires-Dist: pydantic-settings" in metadata
    # The licence travels with the wheel (and so with the image).
    assert "License-Expression: Apache-2.0" in metadata
    assert "rfmcube_cdc-0.1.0.dist-info/licenses/LICENSE" in names


def test_the_emulator_is_its_own_distribution(source_copy: Path, tmp_path: Path) -> None:
    with build_wheel(source_copy / "emulator", tmp_path / "emulator") as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    packages = {name.split("/")[0] for name in names if "/" in name}
    assert packages == {"emulator", "rfmcube_emulator-0.1.0.dist-info"}
    assert "emulator/__main__.py" in names and "emulator/pyproject.toml" not in names
    assert "Name: rfmcube-emulator" in metadata
    assert "License-Expression: Apache-2.0" in metadata


def test_the_licence_is_apache_2_0() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("Copyright 2026 The rfmcube-cdc authors\n")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
