"""uv.lock: one lock for every install (the test and run commands, the Docker image).

It must record exactly what pyproject.toml asks for, and the image and
scripts/bootstrap.sh must install from it, at its versions and hashes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.deploy.compose import ROOT, parse_dockerfile, shell_commands

LOCK = ROOT / "uv.lock"
PYPROJECT = ROOT / "pyproject.toml"
UV = Path(sys.executable).parent / "uv"
Entry = tuple[str, tuple[str, ...], SpecifierSet, str]


def _load_script(path: Path) -> ModuleType:
    # scripts/ is not a package: the script runs on its own, before any install.
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


uv_requirement = _load_script(ROOT / "scripts" / "uv_requirement.py").uv_requirement


def pyproject_requirements(project: dict[str, Any]) -> set[Entry]:
    """(name, extras, specifier, marker) of every requirement, the extras' marked as uv does."""
    found: set[Entry] = set()
    groups = [("", project.get("dependencies", []))]
    groups += sorted(project.get("optional-dependencies", {}).items())
    for extra, requirements in groups:
        for text in requirements:
            requirement = Requirement(text)
            marker = str(requirement.marker) if requirement.marker else ""
            if extra:
                extra_marker = f"extra == '{extra}'"
                marker = f"({marker}) and {extra_marker}" if marker else extra_marker
            found.add(
                (
                    canonicalize_name(requirement.name),
                    tuple(sorted(requirement.extras)),
                    requirement.specifier,
                    str(Marker(marker)) if marker else "",
                )
            )
    return found


def locked_requirements(lock: dict[str, Any], name: str) -> tuple[set[Entry], list[str]]:
    """What uv.lock recorded of the project's requirements and extras when it was made."""
    (package,) = [p for p in lock["package"] if p["name"] == canonicalize_name(name)]
    metadata = package["metadata"]
    found = {
        (
            canonicalize_name(item["name"]),
            tuple(sorted(item.get("extras", []))),
            SpecifierSet(item.get("specifier", "")),
            str(Marker(item["marker"])) if item.get("marker") else "",
        )
        for item in metadata.get("requires-dist", [])
    }
    return found, list(metadata.get("provides-extras", []))


def disagreements(pyproject: dict[str, Any], lock: dict[str, Any]) -> list[str]:
    project = pyproject["project"]
    wanted = pyproject_requirements(project)
    recorded, extras = locked_requirements(lock, project["name"])

    def show(entry: Entry) -> str:
        name, extra, specifier, marker = entry
        text = name + (f"[{','.join(extra)}]" if extra else "") + str(specifier)
        return text + (f"; {marker}" if marker else "")

    problems = [f"pyproject.toml asks for {show(e)}; uv.lock does not" for e in wanted - recorded]
    problems += [f"uv.lock records {show(e)}; pyproject.toml does not" for e in recorded - wanted]
    if sorted(extras) != sorted(project.get("optional-dependencies", {})):
        problems.append(f"uv.lock has the extras {extras}, pyproject.toml others")
    return sorted(problems)


def load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def test_lock_records_exactly_what_pyproject_asks_for() -> None:
    problems = disagreements(load(PYPROJECT), load(LOCK))
    assert not problems, "\n".join([*problems, "run: bash scripts/lock.sh"])


def test_lock_disagreement_is_caught_and_named() -> None:
    pyproject = load(PYPROJECT)
    pyproject["project"]["dependencies"] = [
        *pyproject["project"]["dependencies"],
        "hiredis>=3.0",
    ]
    pyproject["project"]["optional-dependencies"]["dev"].remove("pytest-randomly>=3.15")
    assert disagreements(pyproject, load(LOCK)) == [
        "pyproject.toml asks for hiredis>=3.0; uv.lock does not",
        'uv.lock records pytest-randomly>=3.15; extra == "dev"; pyproject.toml does not',
    ]


def uv_check(project_dir: Path) -> subprocess.CompletedProcess[str]:
    """uv's own check that the lock is up to date, without the network."""
    return subprocess.run(  # noqa: S603 - the locked uv
        [str(UV), "lock", "--check", "--offline", "--project", str(project_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "UV_PYTHON": sys.executable},
    )


def test_uv_agrees_that_the_lock_is_up_to_date(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = uv_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # and uv, too, refuses a pyproject.toml the lock was not made from
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('"nh3>=0.2.17",', '"nh3>=0.3.99",'))
    assert uv_check(tmp_path).returncode != 0


def test_lock_pins_uv_with_hashes_for_the_installs_that_start_with_it() -> None:
    requirement = uv_requirement(load(LOCK))
    version = requirement.split()[0].removeprefix("uv==")
    assert requirement.count("--hash=sha256:") >= 2, requirement
    result = subprocess.run(  # noqa: S603
        [str(UV), "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.split()[1] == version  # bootstrap.sh installed the locked uv


def test_uv_requirement_refuses_a_lock_without_uv() -> None:
    with pytest.raises(SystemExit, match="pins uv 0 times"):
        uv_requirement({"package": [{"name": "django", "version": "5.2"}]})


def test_bootstrap_installs_every_extra_from_the_lock_and_never_changes_it() -> None:
    text = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "scripts/uv_requirement.py" in text and "--require-hashes" in text
    assert "sync --quiet --locked --all-extras" in text
    assert "pip install --quiet -e" not in text


def test_dockerfile_installs_the_apps_part_of_the_same_lock() -> None:
    build = parse_dockerfile().stages[0]
    assert "COPY pyproject.toml uv.lock scripts/uv_requirement.py ./" in [
        f"COPY {i.arguments}" for i in build.all("COPY")
    ]
    steps = [argv for i in build.all("RUN") for _, argv in shell_commands(i.arguments)]
    assert steps[0][:3] == ["python", "uv_requirement.py", "uv.lock"]
    assert steps[1] == [
        "pip",
        "install",
        "--no-deps",
        "--require-hashes",
        "-r",
        "uv-requirement.txt",
    ]
    sync = steps[2]
    assert sync[:2] == ["uv", "sync"]
    # the lock as it is, the app's dependencies only, wheels only
    assert {"--locked", "--no-install-project", "--no-build"} <= set(sync)
    assert not {"--all-extras", "--extra", "--frozen"} & set(sync)


def test_dockerfile_install_step_run_here_gives_the_locked_app_dependencies(
    tmp_path: Path,
) -> None:
    # The image's uv sync, run with this machine's uv cache (offline): the same
    # command and lock give the app's pinned packages and nothing of the extras.
    build = parse_dockerfile().stages[0]
    (sync,) = [
        argv
        for i in build.all("RUN")
        for _, argv in shell_commands(i.arguments)
        if argv[:2] == ["uv", "sync"]
    ]
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    venv = tmp_path / "venv"
    argv = [str(UV), *sync[1:]]
    argv[argv.index("--python") + 1] = sys.executable
    result = subprocess.run(  # noqa: S603
        [*argv, "--offline", "--quiet"],
        cwd=tmp_path,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "copy"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listed = subprocess.run(  # noqa: S603
        [str(UV), "pip", "list", "--format", "freeze", "--python", str(venv / "bin" / "python")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    installed = dict(line.split("==") for line in listed.split())
    installed = {canonicalize_name(name): version for name, version in installed.items()}
    locked = {p["name"]: p["version"] for p in load(LOCK)["package"] if "version" in p}
    for name in ("django", "openai", "daphne", "celery", "psycopg"):
        assert installed[name] == locked[name]
    for name in ("pytest", "ruff", "playwright", "matplotlib", "mockllm", "uv"):
        assert name not in installed, f"the image would install the extra package {name}"
