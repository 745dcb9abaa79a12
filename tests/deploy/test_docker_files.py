"""docker-compose.yml, the Dockerfile, .dockerignore, .env.example and the proxy
configuration, checked where no Docker engine runs: against the Compose
Specification's schema, and against the project (every command they name must
exist in it). tests/deploy/test_compose_processes.py runs the same commands."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import crossplane
import jsonschema
import pytest
from django.core.management import CommandError, get_commands, load_command_class

from chatsite.celery import app as celery_app
from tests.deploy.compose import (
    COMPOSE_FILE,
    COMPOSE_SCHEMA,
    ROOT,
    InterpolationError,
    app_services,
    as_argv,
    env_of,
    interpolate,
    load_compose,
    parse_dockerfile,
    shell_commands,
)

BIN = Path(sys.executable).parent
REQUIRED_SERVICES = {"postgres", "redis", "web", "worker", "migrate", "demo-model"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


# --- the schema ------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    assert COMPOSE_SCHEMA.is_file(), f"{COMPOSE_SCHEMA} is missing from the repository"
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # Its "$schema" names draft-07 by a URL jsonschema does not map; say it plainly.
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_schema_travels_with_its_licence_and_origin() -> None:
    # Apache License 2.0, section 4: a copy of the licence and the NOTICE go with it.
    folder = COMPOSE_SCHEMA.parent
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "Version 2.0" in (folder / "LICENSE").read_text()
    assert "The Compose Specification" in (folder / "NOTICE").read_text()
    origin = (folder / "README.md").read_text()
    assert "github.com/compose-spec/compose-spec" in origin
    assert re.search(r"\b[0-9a-f]{40}\b", origin), "name the commit the schema comes from"


def test_compose_schema_check_catches_a_broken_file() -> None:
    # The check above would pass vacuously if the schema accepted anything.
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    broken = load_compose()
    broken["services"]["web"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["worker"]["restart_policy"] = "always"
    messages = [error.message for error in validator.iter_errors(broken)]
    assert messages


def test_compose_names_the_services(compose: dict[str, Any]) -> None:
    assert REQUIRED_SERVICES <= set(compose["services"])


# --- the services ------------------------------------------------------------------


def test_compose_postgres_has_a_named_volume_and_a_healthcheck(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    volume, _, target = postgres["volumes"][0].partition(":")
    assert volume in compose["volumes"]  # named, not a bind mount
    assert target == "/var/lib/postgresql/data"
    assert "pg_isready" in " ".join(as_argv(postgres["healthcheck"]["test"]))


def test_compose_redis_has_a_healthcheck(compose: dict[str, Any]) -> None:
    assert as_argv(compose["services"]["redis"]["healthcheck"]["test"])[1:] == [
        "redis-cli",
        "ping",
    ]


def test_compose_migrates_once_before_web_and_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["restart"] == "no"  # a one-shot: restarting would loop
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    steps = [argv for _, argv in shell_commands(as_argv(migrate["command"])[2])]
    assert steps == [
        ["python", "manage.py", "migrate", "--noinput"],
        ["python", "manage.py", "ensure_superuser"],
    ]
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["redis"] == {"condition": "service_healthy"}


def test_compose_app_services_share_one_image_and_read_dot_env(compose: dict[str, Any]) -> None:
    services = app_services(compose)
    assert set(services) - {"beat"} == {"migrate", "web", "worker", "demo-model"}
    assert len({(s["build"], s["image"]) for s in services.values()}) == 1
    for service in services.values():
        assert service["env_file"] == [{"path": ".env", "required": False}]


def test_compose_environment_points_the_app_at_the_compose_services(
    compose: dict[str, Any],
) -> None:
    env = compose["services"]["web"]["environment"]
    assert env["DATABASE_URL"] == "postgres://chat:chat@postgres:5432/chat"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    demo_argv = as_argv(compose["services"]["demo-model"]["command"])
    port = demo_argv[demo_argv.index("--port") + 1]
    assert env["GPT_DEMO_BASE_URL"] == f"http://demo-model:{port}/v1"
    assert env["DJANGO_DEBUG"] == "false"


def test_compose_interpolates_dot_env_values() -> None:
    compose = load_compose(
        {"POSTGRES_PASSWORD": "s3cret", "WEB_PORT": "9000", "DJANGO_DEBUG": "true"}
    )
    services = compose["services"]
    assert services["web"]["environment"]["DATABASE_URL"] == (
        "postgres://chat:s3cret@postgres:5432/chat"
    )
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert services["proxy"]["ports"] == ["127.0.0.1:9000:8000"]
    assert services["web"]["environment"]["DJANGO_DEBUG"] == "true"


def test_compose_interpolation_helper_refuses_what_it_cannot_read() -> None:
    assert interpolate("$${HOME} ${A:-x} ${B-y}", {"B": ""}) == "${HOME} x "
    with pytest.raises(InterpolationError):
        interpolate("$HOME", {})
    with pytest.raises(InterpolationError, match="A: needed"):
        interpolate("${A:?needed}", {})


def test_compose_web_replicas_sit_behind_one_published_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"proxy"}  # so `--scale web=N` never fights over a host port
    assert services["proxy"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["proxy"]["volumes"] == ["./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    web_argv = as_argv(services["web"]["command"])
    assert web_argv[web_argv.index("-p") + 1] == "8000"


def test_compose_worker_scales_and_finishes_replies_on_stop(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker  # replicas can exist
    argv = as_argv(worker["command"])
    # The pool and its concurrency come from the settings, as for any plain
    # `celery -A chatsite worker`; flags here would only hide a wrong default.
    assert argv[:4] == ["celery", "-A", "chatsite", "worker"]
    assert not {"--pool", "-P", "--concurrency", "-c"} & set(argv)
    assert worker["stop_grace_period"] == "2m"


def test_compose_runs_beat_exactly_when_a_periodic_task_exists(compose: dict[str, Any]) -> None:
    beats = [
        name
        for name, service in app_services(compose).items()
        if "beat" in as_argv(service.get("command", []))
    ]
    if celery_app.conf.beat_schedule:
        assert len(beats) == 1, "a periodic task exists: add one Celery beat service"
    else:
        assert beats == [], "no periodic task exists: a beat service would do nothing"


# The oldest release of each image this project accepts, and why: each floor is
# the newest patch release published when it was last raised (Docker's
# official-images library, 2026-08-21), so a pin below it misses published fixes.
# Raise a floor whenever the image is bumped.
IMAGE_FLOORS = {
    "postgres": ("postgres", (16, 15), "bookworm"),
    "redis": ("redis", (7, 4, 11), "alpine"),
    "proxy": ("nginx", (1, 30, 4), "alpine"),
}


def version_of(tag: str) -> tuple[int, ...]:
    match = re.match(r"^(\d+(?:\.\d+)+)-", tag)
    assert match, f"pin a full version tag (major.minor[.patch]-variant), not {tag!r}"
    return tuple(int(part) for part in match.group(1).split("."))


@pytest.mark.parametrize("image_service", sorted(IMAGE_FLOORS))
def test_compose_third_party_images_are_pinned_at_current_patch_releases(
    compose: dict[str, Any], image_service: str
) -> None:
    name, _, tag = compose["services"][image_service]["image"].partition(":")
    wanted_name, floor, variant = IMAGE_FLOORS[image_service]
    assert name == wanted_name
    assert tag.endswith(f"-{variant}")
    assert len(version_of(tag)) == len(floor), f"{name}:{tag}: pin the patch release too"
    assert version_of(tag) >= floor, f"{name}:{tag} predates {'.'.join(map(str, floor))}"


@pytest.mark.parametrize("tag", ["latest", "16", "7-alpine", "alpine", "1.30.x-alpine"])
def test_image_pin_check_refuses_floating_tags(tag: str) -> None:
    with pytest.raises(AssertionError, match="pin a full version tag"):
        version_of(tag)


def test_every_app_service_runs_under_an_init_and_reaches_the_host_gateway(
    compose: dict[str, Any],
) -> None:
    for name, service in app_services(compose).items():
        assert service.get("init") is True, f"{name}: PID 1 must forward signals (init: true)"
        assert "host.docker.internal:host-gateway" in service.get("extra_hosts", []), name


def test_every_long_running_service_has_a_healthcheck_and_waits_on_health(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "web", "worker", "beat", "demo-model"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    probes = {
        name: as_argv(services[name]["healthcheck"]["test"])[1:4]
        for name in ("web", "worker", "beat")
    }
    assert probes == {
        name: ["python", "-m", "chatsite.healthcheck"] for name in ("web", "worker", "beat")
    }
    assert as_argv(services["web"]["healthcheck"]["test"])[4] == "web"
    assert as_argv(services["worker"]["healthcheck"]["test"])[4] == "worker"
    beat_test = as_argv(services["beat"]["healthcheck"]["test"])
    beat_argv = as_argv(services["beat"]["command"])
    assert (
        beat_test[beat_test.index("--pidfile") + 1] == beat_argv[beat_argv.index("--pidfile") + 1]
    )
    # Start order on health; Compose stops in the reverse order, so the worker
    # stops (finishing its replies) before the demo model they read from.
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["demo-model"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_demo_model_keeps_its_control_endpoint_off(compose: dict[str, Any]) -> None:
    argv = as_argv(compose["services"]["demo-model"]["command"])
    assert argv[:3] == ["python", "-m", "worker.demo_llm"]
    assert "--control" not in argv


# --- every command names something real -------------------------------------------


def check_command(argv: list[str]) -> None:
    """Fail unless ``argv`` (as the image would run it) names a real entry point."""
    assert argv, "an empty command"
    program, args = argv[0], argv[1:]
    if program == "sh":
        assert args[0] == "-c"
        for _, step in shell_commands(args[1]):
            check_command(step)
    elif program == "python":
        if args[:1] == ["manage.py"]:
            name = args[1]
            assert name in get_commands(), f"manage.py has no command {name!r}"
            command = load_command_class(get_commands()[name], name)
            command.create_parser("manage.py", name).parse_args(args[2:])
        elif args[:1] == ["-m"]:
            module = args[1]
            assert importlib.util.find_spec(module) is not None, f"no module {module}"
            assert callable(getattr(importlib.import_module(module), "main", None))
        elif args[:1] == ["-c"]:
            compile(args[1], "<healthcheck>", "exec")
        else:
            raise AssertionError(f"unknown python invocation {argv}")
    elif program == "daphne":
        from daphne.cli import CommandLineInterface

        parsed = CommandLineInterface().parser.parse_args(args)
        module_name, _, attribute = parsed.application.partition(":")
        application = getattr(importlib.import_module(module_name), attribute)
        assert callable(application)
        assert (BIN / "daphne").exists()
    elif program == "celery":
        assert args[:2] == ["-A", "chatsite"], argv
        module = importlib.import_module(args[1])
        assert module.celery_app is celery_app
        assert args[2] in {"worker", "beat"}
        celery_app.loader.import_default_modules()  # what a worker does at start
        assert "worker.tasks.stream_reply" in celery_app.tasks
        assert (BIN / "celery").exists()
    else:
        raise AssertionError(f"unknown program {program!r} in {argv}")


def all_project_commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    dockerfile = parse_dockerfile()
    commands: list[tuple[str, list[str]]] = []
    cmd = dockerfile.final.all("CMD")[-1].exec_form()
    assert cmd is not None, "use the exec form for CMD (signals reach the process)"
    commands.append(("Dockerfile CMD", cmd))
    for instruction in dockerfile.final.all("RUN"):
        for _, argv in shell_commands(instruction.arguments):
            if argv[0] == "python":
                commands.append((f"Dockerfile line {instruction.line}", argv))
    for name, service in app_services(compose).items():
        assert "entrypoint" not in service
        commands.append((f"{name} command", as_argv(service.get("command", cmd))))
        if "healthcheck" in service:
            test = as_argv(service["healthcheck"]["test"])
            assert test[0] == "CMD"
            commands.append((f"{name} healthcheck", test[1:]))
    return commands


def test_compose_and_dockerfile_commands_exist_in_the_project(compose: dict[str, Any]) -> None:
    commands = all_project_commands(compose)
    named = {argv[0] if argv[0] != "python" else " ".join(argv[:3]) for _, argv in commands}
    # all of them are looked at: the web, worker, migrate, demo and static commands
    assert {"daphne", "celery", "sh", "python -m worker.demo_llm"} <= named
    assert "python manage.py collectstatic" in named
    for where, argv in commands:
        try:
            check_command(argv)
        except (AssertionError, SystemExit, ImportError, LookupError, CommandError) as error:
            raise AssertionError(f"{where}: {argv}: {error!r}") from error


@pytest.mark.parametrize(
    "argv",
    [
        ["python", "manage.py", "no_such_command"],
        ["python", "manage.py", "migrate", "--no-such-option"],
        ["python", "-m", "worker.no_such_module"],
        ["daphne", "-p", "8000", "chatsite.asgi:no_such_app"],
        ["celery", "-A", "chatsite", "flower"],
        ["gunicorn", "chatsite.wsgi"],
        ["sh", "-c", "python manage.py migrate && python manage.py ensure_nothing"],
    ],
)
def test_command_check_rejects_what_does_not_exist(argv: list[str]) -> None:
    with pytest.raises((AssertionError, SystemExit, ImportError, AttributeError, CommandError)):
        check_command(argv)


def test_web_command_is_the_same_in_compose_and_dockerfile(compose: dict[str, Any]) -> None:
    cmd = parse_dockerfile().final.all("CMD")[-1].exec_form()
    assert as_argv(compose["services"]["web"]["command"]) == cmd


# --- the Dockerfile -------------------------------------------------------------------


def test_dockerfile_base_image_is_pinned_by_version() -> None:
    dockerfile = parse_dockerfile()
    aliases = {stage.alias for stage in dockerfile.stages if stage.alias}
    for stage in dockerfile.stages:
        if stage.base in aliases:
            continue
        name, _, tag = stage.base.partition(":")
        assert name == "python"
        assert re.match(r"^3\.11\.\d+-slim-bookworm$", tag), f"pin a full version: {stage.base}"
        # The newest 3.11 patch release when last raised (see IMAGE_FLOORS).
        assert version_of(tag) >= (3, 11, 16), f"{stage.base} predates 3.11.16"


def test_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    dockerfile = parse_dockerfile()
    assert len(dockerfile.stages) >= 2
    final = dockerfile.final
    users = final.all("USER")
    assert users, "the final stage needs a USER"
    user = users[-1].arguments.split(":")[0]
    assert user not in {"root", "0"}
    # USER comes after every RUN: nothing runs as root once the app user is set
    last_run = max(i.line for i in final.all("RUN"))
    assert users[-1].line > last_run
    assert any(user in i.arguments for i in final.all("RUN"))  # created in the image


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    final = parse_dockerfile().final
    text = " ".join(i.arguments for i in final.all("RUN"))
    for tool in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert tool not in text
    copied = [i.arguments for i in final.all("COPY") if "--from=build" in i.arguments]
    assert copied == ["--from=build /opt/venv /opt/venv"]  # only the virtualenv


def test_dockerfile_collects_static_files_with_debug_off() -> None:
    final = parse_dockerfile().final
    (collect,) = [
        (env, argv)
        for i in final.all("RUN")
        for env, argv in shell_commands(i.arguments)
        if "collectstatic" in argv
    ]
    env, argv = collect
    assert env["DJANGO_DEBUG"] == "false"
    assert len(env["DJANGO_SECRET_KEY"]) >= 50  # what Django's deploy check asks for
    assert argv == ["python", "manage.py", "collectstatic", "--noinput", "--verbosity", "0"]
    assert env_of(final)["DJANGO_SETTINGS_MODULE"] == "chatsite.settings"
    assert env_of(final)["PATH"].startswith("/opt/venv/bin:")


def test_dockerfile_parser_refuses_instructions_before_from() -> None:
    with pytest.raises(ValueError, match="RUN before FROM"):
        parse_dockerfile("RUN echo hi\nFROM python:3.11.13-slim-bookworm\n")


# --- .dockerignore --------------------------------------------------------------------


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/"))
            for p in prefixes
        ):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path", [".env", ".env.local", ".git/HEAD", ".venv/bin/python", "tests/conftest.py"]
)
def test_dockerignore_keeps_secrets_and_local_files_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path",
    ["manage.py", "chatsite/settings.py", "messages_app/admin.py", "worker/demo_llm.py"],
)
def test_dockerignore_keeps_the_app_in(path: str) -> None:
    assert not dockerignored(path)


def test_dockerignore_keeps_every_package_of_the_project_in() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    for package in packages:
        assert not dockerignored(f"{package}/__init__.py")


# --- .env.example -----------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$")


def env_example() -> dict[str, tuple[str, bool]]:
    """NAME -> (value, set): set lines and commented-out ``# NAME=value`` lines."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            found[match.group(1)] = (match.group(2), not line.startswith("#"))
    return found


def test_env_example_names_only_variables_something_reads() -> None:
    readers = "\n".join(
        path.read_text()
        for path in [
            ROOT / "chatsite" / "settings.py",
            COMPOSE_FILE,
            ROOT / "scripts" / "run.sh",
            ROOT / "messages_app" / "management" / "commands" / "ensure_superuser.py",
        ]
    )
    names = env_example()
    assert {"OPENAI_API_KEY", "DJANGO_SECRET_KEY", "DJANGO_SUPERUSER_PASSWORD"} <= set(names)
    for name in names:
        assert re.search(rf"\b{name}\b", readers), f".env.example names {name}: nothing reads it"


def test_env_example_sets_only_what_may_be_empty() -> None:
    # A set line is copied into .env as it is: an empty DJANGO_DEBUG= would mean false.
    set_lines = {name: value for name, (value, is_set) in env_example().items() if is_set}
    assert set_lines == {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}


def settings_in(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import chatsite.settings in a fresh interpreter with exactly ``env``."""
    code = (
        "import json; from chatsite import settings as s; print(json.dumps({"
        "'debug': s.DEBUG, 'db': s.DATABASES['default']['HOST'], 'redis': s.REDIS_URL, "
        "'demo': s.GPT_DEMO_BASE_URL, 'storage': s.STORAGES['staticfiles']['BACKEND']}))"
    )
    return subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def container_env(dot_env: dict[str, str]) -> dict[str, str]:
    """What a web container gets: .env (env_file), then the service's environment."""
    compose = load_compose(dot_env)
    return {**dot_env, **compose["services"]["web"]["environment"]}


def test_env_example_as_dot_env_gives_a_working_production_configuration() -> None:
    dot_env = {name: value for name, (value, is_set) in env_example().items() if is_set}
    result = settings_in(container_env(dot_env))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "debug": False,
        "db": "postgres",
        "redis": "redis://redis:6379/0",
        "demo": "http://demo-model:8001/v1",
        "storage": "whitenoise.storage.CompressedManifestStaticFilesStorage",
    }


def test_env_example_commented_values_are_valid_too() -> None:
    # Uncommenting every line (with a password and key filled in) still loads.
    dot_env = {name: value for name, (value, _) in env_example().items()}
    dot_env.update(DJANGO_SECRET_KEY="x" * 50, DJANGO_SUPERUSER_PASSWORD="a-Long-pass-42")
    result = settings_in(container_env(dot_env))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "dot_env,message",
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean"),
        ({"GPT_STREAM_GRANULARITY": "paragraph"}, "GPT_STREAM_GRANULARITY='paragraph'"),
        ({"POSTGRES_PASSWORD": "p@ss/word"}, "DATABASE_URL"),
        ({"DJANGO_STATIC_ROOT": ""}, None),  # empty: the default, not an error
    ],
)
def test_bad_dot_env_values_stop_the_container_with_a_clear_message(
    dot_env: dict[str, str], message: str | None
) -> None:
    result = settings_in(container_env(dot_env))
    if message is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert message in result.stderr


# --- the proxy in front of the web replicas -------------------------------------------------


def parse_nginx(conf_d_file: Path, tmp_path: Path) -> dict[str, Any]:
    """Parse a conf.d file where nginx reads it (inside http {}), strictly: unknown
    directives, directives out of their context and wrong argument counts are errors."""
    main = tmp_path / "nginx.conf"
    main.write_text(f"events {{}}\nhttp {{\n    include {conf_d_file};\n}}\n")
    # crossplane does not know the entries of a map block: "map" is checked apart.
    return crossplane.parse(str(main), strict=True, check_ctx=True, check_args=True, ignore=["map"])


def test_proxy_config_parses_and_proxies_websockets_to_every_web_replica(
    tmp_path: Path,
) -> None:
    conf = ROOT / "deploy" / "nginx.conf"
    payload = parse_nginx(conf, tmp_path)
    assert payload["errors"] == [], payload["errors"]
    (included,) = [c for c in payload["config"] if c["file"] == str(conf)]
    (server,) = included["parsed"]
    assert server["directive"] == "server"
    text = conf.read_text()
    assert "map $http_upgrade $connection_upgrade {" in text
    assert re.search(r"default\s+upgrade;\s*''\s+close;", text)
    flat = {d["directive"]: d["args"] for d in server["block"]}
    assert flat["listen"] == ["8000"]
    assert flat["resolver"][0] == "127.0.0.11"  # Docker's DNS: every replica of "web"
    assert flat["set"] == ["$web_upstream", "http://web:8000"]
    (location,) = [d for d in server["block"] if d["directive"] == "location"]
    inner = [(d["directive"], d["args"]) for d in location["block"]]
    assert ("proxy_pass", ["$web_upstream"]) in inner
    assert ("proxy_http_version", ["1.1"]) in inner
    assert ("proxy_set_header", ["Upgrade", "$http_upgrade"]) in inner
    assert ("proxy_set_header", ["Connection", "$connection_upgrade"]) in inner
    assert ("proxy_set_header", ["Host", "$http_host"]) in inner
    # The scheme a TLS proxy in front forwarded passes through; only when none
    # came does nginx name its own (else DJANGO_HTTPS=true redirects for ever).
    assert ("proxy_set_header", ["X-Forwarded-Proto", "$forwarded_proto"]) in inner
    assert re.search(
        r"map \$http_x_forwarded_proto \$forwarded_proto \{\s*default\s+\$http_x_forwarded_proto;"
        r"\s*''\s+\$scheme;\s*\}",
        text,
    )


@pytest.mark.parametrize(
    "text",
    [
        "server { listen 8000 location / { proxy_pass http://web:8000; } }",  # a missing ;
        "server { listen 8000; proxy_websockets on; }",  # no such directive
        "location / { proxy_pass http://web:8000; }",  # outside a server
    ],
)
def test_proxy_config_check_catches_a_broken_file(tmp_path: Path, text: str) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text(text)
    assert parse_nginx(broken, tmp_path)["errors"]
