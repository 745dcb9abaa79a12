"""Read docker-compose.yml and the Dockerfile as Docker would, where no Docker runs.

Only what the project's files use is implemented; anything else fails loudly
rather than being read wrongly.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The Compose Specification's JSON Schema, kept in the repository with its licence
# (tests/deploy/data/compose-spec/README.md says where it comes from).
COMPOSE_SCHEMA = ROOT / "tests" / "deploy" / "data" / "compose-spec" / "compose-spec.json"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class InterpolationError(ValueError):
    pass


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``$$``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", ":?"):
            unset = not current
        else:
            unset = current is None
        if not unset:
            return current  # type: ignore[return-value]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise InterpolationError(f"{name}: {arg}")
        return ""

    rest = _VARIABLE.sub("", value.replace("$$", ""))
    if "$" in rest:
        raise InterpolationError(f"unsupported interpolation in {value!r}")
    return _VARIABLE.sub(replace, value)


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as YAML (merge keys resolved), interpolated with ``env``."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate(raw, env or {})


def as_argv(command: str | list[str]) -> list[str]:
    """A compose ``command``/``entrypoint`` as an argument list (a string is shell-split)."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the project's own image (they have a ``build``)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


# --- Dockerfile -------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of ``CMD ["a", "b"]``, or None for the shell form."""
        import json

        text = self.arguments.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return None


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARG defaults declared before the first FROM
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def parse_dockerfile(text: str | None = None) -> Dockerfile:
    text = DOCKERFILE.read_text() if text is None else text
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    if pending:
        raise ValueError("the Dockerfile ends inside a continued line")

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = words[0]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=_substitute(base, args), alias=alias))
        elif not stages:
            if instruction.keyword == "ARG":
                name, _, default = instruction.arguments.partition("=")
                args[name.strip()] = default.strip()
            elif instruction.keyword != "#":
                raise ValueError(f"line {instruction.line}: {instruction.keyword} before FROM")
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(args=args, stages=stages)


def _substitute(text: str, args: Mapping[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text
    )


def env_of(stage: Stage) -> dict[str, str]:
    """The ``ENV`` of a stage (``ENV A=1 B=2`` form), in order."""
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.arguments):
            name, sep, value = word.partition("=")
            if not sep:
                raise ValueError(f"line {instruction.line}: use ENV NAME=value")
            env[name] = value
    return env


def shell_commands(script: str) -> list[tuple[dict[str, str], list[str]]]:
    """Split ``A=1 cmd x && B=2 cmd y`` into (leading assignments, argv) pairs."""
    commands = []
    for part in re.split(r"\s*&&\s*", script.strip()):
        words = shlex.split(part)
        assignments = {}
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            assignments[name] = value
        if words:
            commands.append((assignments, words))
    return commands
