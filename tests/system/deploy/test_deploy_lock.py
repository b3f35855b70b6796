"""requirements.lock.txt: the image's runtime dependencies, each pinned with == and
with hashes, in step with pyproject.toml, and complete enough that pip in
--require-hashes mode installs the service's dependencies from it alone."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "requirements.lock.txt"
SHA256 = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass
class Pin:
    line: str  # the whole requirement, continuation lines joined
    name: str
    version: str
    hashes: list[str]


def read_lock(text: str) -> list[Pin]:
    """Every requirement of a pip requirements file, with its options."""
    pins = []
    joined = re.sub(r"\\\n", " ", text)
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        requirement, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", requirement)
        assert match, f"not pinned with ==: {line!r}"
        for option in options:
            assert SHA256.fullmatch(option), f"{requirement}: unexpected {option!r}"
        pins.append(Pin(line, canonicalize_name(match[1]), match[2], options))
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in project["dependencies"]]


@pytest.fixture(scope="module")
def pins() -> dict[str, Pin]:
    found = read_lock(LOCK.read_text(encoding="utf-8"))
    by_name = {pin.name: pin for pin in found}
    assert len(by_name) == len(found), "a package pinned twice"
    return by_name


def test_every_requirement_is_pinned_with_hashes(pins: dict[str, Pin]) -> None:
    # read_lock refuses anything but name==version followed by sha256 hashes:
    # no ranges, no URLs or paths, no -e, no other options.
    assert len(pins) >= 7
    for pin in pins.values():
        assert pin.hashes, f"{pin.name} has no hash"


def test_every_runtime_dependency_is_pinned_at_a_version_pyproject_allows(
    pins: dict[str, Pin],
) -> None:
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in the lock: run make lock"
        version = Version(pins[name].version)
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, pyproject.toml asks {requirement}: run make lock"
        )


def test_the_lock_names_the_python_and_the_platform_it_was_resolved_for() -> None:
    header = [line for line in LOCK.read_text(encoding="utf-8").splitlines() if line[:1] == "#"]
    text = "\n".join(header)
    assert "CPython 3.11" in text and "x86_64-manylinux_2_36" in text
    assert "make lock" in text
    # The image's Python is the lock's.
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_BASE=python:3\.11-", dockerfile, re.MULTILINE)


def closed_requirements(pins: dict[str, Pin]) -> str:
    """The lock, with the extras pyproject.toml asks for (kafka-python[crc32c])."""
    extras = {canonicalize_name(r.name): sorted(r.extras) for r in runtime_requirements()}
    lines = []
    for pin in pins.values():
        wanted = extras.get(pin.name)
        name = f"{pin.name}[{','.join(wanted)}]" if wanted else pin.name
        lines.append(" ".join([f"{name}=={pin.version}", *pin.hashes]))
    return "\n".join(lines) + "\n"


# glibc 2.36 (Debian bookworm) runs every manylinux wheel up to manylinux_2_36.
def manylinux(machine: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine == "x86_64":
        tags += [f"manylinux_2_{minor}_{machine}" for minor in range(16, 4, -1)]
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_pip_installs_the_dependencies_from_the_lock_alone(
    pins: dict[str, Pin], machine: str, tmp_path: Path
) -> None:
    """What the image's build does, resolved by pip against PyPI (a dry run):
    --require-hashes refuses any dependency the lock lacks, and wheels only,
    since the slim image has no compiler."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(closed_requirements(pins), encoding="utf-8")
    platforms = [arg for tag in manylinux(machine) for arg in ("--platform", tag)]
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--disable-pip-version-check", "--require-hashes", "--only-binary=:all:",
            "--implementation", "cp", "--python-version", "3.11", *platforms,
            "--target", str(tmp_path / "target"), "-r", str(requirements),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (would,) = [line for line in done.stdout.splitlines() if line.startswith("Would install")]
    installed = {canonicalize_name(item.rsplit("-", 1)[0]) for item in would.split()[2:]}
    assert installed == set(pins)
