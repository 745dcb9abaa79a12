"""The README and docs/architecture.md describe the code as it is.

Every name they quote in backticks is checked against the repository: a path
must exist, a dotted module or attribute must import, a setting must be read by
the code, and a snake_case identifier (a service, a field, an error code) must
occur in the code. Nothing in the repository may refer to files outside it.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/architecture.md"]
# Where the code lives whose names the docs may quote.
CODE_DIRS = ("messages_app", "worker", "chatsite", "bench", "scripts", "deploy", "tests")
CODE_FILES = ("docker-compose.yml", "Dockerfile", ".env.example", "pyproject.toml", "manage.py")
PACKAGES = ("messages_app", "worker", "chatsite", "bench", "tests")
SETTING = re.compile(
    r"^(?:CHAT|GPT|DJANGO|OPENAI|DATABASE|REDIS|CELERY|WORKER|WEB|POSTGRES|DEMO|STOP|STATIC)"
    r"_[A-Z0-9_]+$|^(?:PORT|HOST|DEMO_PORT)$"
)
PATH_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".sh", ".js", ".css", ".json", ".toml", ".conf")
# Paths the docs name that the code makes at run time, not files of the repository.
GENERATED = {"staticfiles/", "static/", "bench/results/", ".env", ".venv/"}
# What the docs quote of other packages' APIs.
FOREIGN_NAMES = {"save()", "websockets.broadcast", "ssl.create_default_context"}


@cache
def tracked_files() -> tuple[str, ...]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    files = set(out.split())
    # Files added in this working tree but not committed yet count too.
    files |= {str(p.relative_to(ROOT)) for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")}
    return tuple(sorted(f for f in files if (ROOT / f).exists()))


@cache
def code_text() -> str:
    parts = []
    for name in tracked_files():
        if name.startswith(CODE_DIRS) or name in CODE_FILES:
            if "/vendor/" in name or name.endswith((".png", ".map", ".min.js")):
                continue
            if name.startswith("tests/test_docs.py"):
                continue
            parts.append((ROOT / name).read_text(errors="replace"))
    return "\n".join(parts)


def quoted(doc: str) -> list[str]:
    """The names a doc quotes: in backticks, and the dotted names of its diagrams."""
    text = (ROOT / doc).read_text()
    names = set()
    for block in re.findall(r"```.*?```", text, flags=re.S):
        names |= {m.group(0) for m in re.finditer(rf"\b(?:{'|'.join(PACKAGES)})(?:\.\w+)+", block)}
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return sorted(names | set(re.findall(r"`([^`\n]+)`", text)))


def path_problem(token: str) -> str | None:
    if token in GENERATED:
        return None
    files = tracked_files()
    folder = token.rstrip("/")
    if token.endswith("/"):
        if any(f.startswith(folder + "/") or f"/{folder}/" in f"/{f}" for f in files):
            return None
        return f"no folder {token}"
    if token in files or any(f.endswith("/" + token) for f in files):
        return None
    return f"no file {token}"


def python_name_problem(token: str) -> str | None:
    dotted = re.sub(r"\(.*\)$", "", token)
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            target: object = importlib.import_module(module_name)
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return f"{module_name} has no {'.'.join(parts[cut:])}"
            target = getattr(target, attribute)
        return None
    return f"no module {dotted}"


def problem(token: str) -> str | None:
    """Why ``token``, quoted by a doc, does not match the code (None when it does)."""
    token = token.strip()
    if token in FOREIGN_NAMES:
        return None
    words = token.split()
    if len(words) > 1:
        # A command line: check what it runs when it is one of ours.
        if words[:2] == ["python", "-m"] and words[2].split(".")[0] in PACKAGES:
            return python_name_problem(words[2])
        if words[0] == "bash" and len(words) > 1 and words[1].endswith(".sh"):
            return path_problem(words[1])
        return None
    assignment = re.match(r"^([A-Z][A-Z0-9_]+)=", token)
    if assignment:
        token = assignment.group(1)
    if SETTING.match(token):
        found = re.search(rf"(?<![A-Z0-9_]){re.escape(token)}(?![A-Z0-9_])", code_text())
        return None if found else f"no code reads the setting {token}"
    if re.match(r"^[\w.-]+(/[\w.-]*)*$", token) and ("/" in token or token.endswith(PATH_SUFFIXES)):
        if re.match(r"^[\w.-]+$", token) and token.split(".")[0] in PACKAGES:
            return python_name_problem(token)  # messages_app.events, not a file
        return path_problem(token)
    if re.match(rf"^(?:{'|'.join(PACKAGES)})(\.\w+)+(\(.*\))?$", token):
        return python_name_problem(token)
    name = re.sub(r"\(.*\)$", "", token)
    if re.match(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$", name):
        found = re.search(rf"\b{re.escape(name)}\b", code_text())
        return None if found else f"nothing in the code is named {name}"
    return None


@pytest.mark.parametrize("doc", DOCS)
def test_docs_name_only_what_exists(doc: str) -> None:
    problems = [f"`{token}`: {why}" for token in quoted(doc) if (why := problem(token))]
    assert not problems, f"{doc} names what the code does not have:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("messages_app/no_such_module.py", "no file"),
        ("docs/gone/", "no folder"),
        ("messages_app.services.post_message", "has no post_message"),
        ("messages_app.services.replies.post_message", "replies has no post_message"),
        ("messages_app.no_such_module", "has no no_such_module"),
        ("nosuchpackage.module", None),
        ("CHAT_NO_SUCH_SETTING", "no code reads"),
        ("post_message", "nothing in the code is named"),
        ("python -m worker.no_such_module", "has no no_such_module"),
        ("bash scripts/no_such.sh", "no file"),
    ],
)
def test_docs_check_catches_what_does_not_exist(token: str, why: str | None) -> None:
    found = problem(token)
    if why is None:  # not a name of this project: not checked
        assert found is None
    else:
        assert found is not None and why in found


@pytest.mark.parametrize(
    "token",
    [
        "messages_app/protocol.py",
        "js/room.js",
        "tests/deploy/",
        "messages_app.protocol.parse_client_frame",
        "messages_app.services.message_post",
        "messages_app.services.replies.reply_finish",
        "messages_app/services/replies.py",
        "GPT_STALE_AFTER",
        "python -m chatsite.healthcheck web",
        "reply_append",
    ],
)
def test_docs_check_accepts_what_exists(token: str) -> None:
    assert problem(token) is None


# Words that would point outside the repository: the files a development
# machine keeps beside the clone, and absolute paths of such a machine.
OUTSIDE = re.compile(r"CONVENTIONS\.md|DESIGN\.md|\.\./shared|shared/data|/work/")


def test_nothing_in_the_repository_refers_to_files_outside_it() -> None:
    offenders = []
    for name in tracked_files():
        if name == "uv.lock" or "/vendor/" in name or name == "tests/test_docs.py":
            continue
        path = ROOT / name
        if path.suffix in {".png", ".map", ".ico"}:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)
