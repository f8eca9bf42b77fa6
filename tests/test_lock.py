"""The lock (constraints.txt) against pyproject.toml, the environment and the demo Space."""

from __future__ import annotations

import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]


def read_lock(path: Path = ROOT / "constraints.txt") -> dict[str, Version]:
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"{path.name}:{number}: {line!r} is not an exact NAME==VERSION pin"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{path.name}:{number}: {match[1]} is pinned twice"
        pins[name] = Version(match[2])
    return pins


def project_requirements() -> dict[str, list[Requirement]]:
    """{"": dependencies, extra: its dependencies} from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project.get("optional-dependencies", {})}
    return {group: [Requirement(r) for r in reqs] for group, reqs in groups.items()}


def test_lock_pins_every_dependency_within_its_specifier():
    lock = read_lock()
    problems = []
    for group, requirements in project_requirements().items():
        where = f"extra {group!r}" if group else "dependencies"
        for req in requirements:
            pinned = lock.get(canonicalize_name(req.name))
            if pinned is None:
                problems.append(f"{req.name} ({where}) is not pinned in constraints.txt")
            elif not req.specifier.contains(pinned, prereleases=True):
                problems.append(f"{req.name} ({where}) wants {req.specifier}, constraints.txt pins {pinned}")
    assert not problems, "pyproject.toml and constraints.txt disagree (python scripts/update_lock.py):\n" \
        + "\n".join(problems)


def test_lock_does_not_pin_the_project_itself():
    assert "stt-hf" not in read_lock()


def test_lock_pins_the_torch_that_setup_env_installs():
    setup = (ROOT / "scripts" / "setup_env.sh").read_text()
    pins = dict(re.findall(r"\b(torch|torchvision)==([0-9][^\s)]*)", setup))
    lock = read_lock()
    assert pins and {name: Version(v) for name, v in pins.items()} == \
        {name: lock[name] for name in pins}
    assert "-c constraints.txt" in setup


@pytest.mark.skipif(bool(os.environ.get("STT_HF_UNLOCKED")),
                    reason="STT_HF_UNLOCKED: newer releases than the lock on purpose (try_latest.sh)")
def test_installed_dependencies_are_the_locked_versions():
    """The suite runs with what the lock says (a stale lock after an upgrade fails here)."""
    lock = read_lock()
    stale = []
    for requirements in project_requirements().values():
        for req in requirements:
            try:
                installed = Version(version(req.name))
            except PackageNotFoundError:
                continue  # an extra that is not installed here
            locked = lock.get(canonicalize_name(req.name))
            if installed != locked:
                stale.append(f"{req.name}: installed {installed}, locked {locked}")
    assert not stale, "regenerate the lock (python scripts/update_lock.py):\n" + "\n".join(stale)


def test_space_requirements_are_pinned_as_locked():
    lock = read_lock()
    space = read_lock(ROOT / "spaces" / "stt-demo" / "requirements.txt")
    assert {name: lock.get(name) for name in space} == space
    # The Space runs the package from source, so it needs all of stt-hf's own dependencies and Gradio.
    needed = {canonicalize_name(r.name) for r in project_requirements()[""]} | {"gradio", "scikit-image"}
    assert needed <= set(space), f"missing from the Space's requirements: {sorted(needed - set(space))}"
    card = (ROOT / "spaces" / "stt-demo" / "README.md").read_text()
    assert f"\nsdk_version: {lock['gradio']}\n" in card
