"""The probes of docker-compose.yml's healthchecks, one per kind of process:

    python -m chatsite.healthcheck web     # GET /healthz: Postgres and Redis answer
    python -m chatsite.healthcheck worker  # this host's Celery worker answers a ping
    python -m chatsite.healthcheck beat --pidfile /tmp/celerybeat.pid

Exit status 0 when healthy, 1 otherwise, with the reason on stderr (Docker
keeps the last outputs: ``docker inspect --format '{{json .State.Health}}'``).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request


def probe_web(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            if response.status == 200:
                return None
            return f"{url} answered {response.status}"
    except urllib.error.HTTPError as error:
        return f"{url} answered {error.code}: {error.read()[:200].decode(errors='replace')}"
    except OSError as error:
        return f"{url}: {error}"


def probe_worker(node: str, timeout: float) -> str | None:
    """None when the Celery worker named ``node`` answers a ping through the broker."""
    from chatsite.celery import app

    replies = app.control.ping(destination=[node], timeout=timeout)
    if any(node in reply for reply in replies):
        return None
    return f"no ping reply from {node} in {timeout:g}s"


def probe_beat(pidfile: str, timeout: float) -> str | None:
    """None when the beat whose pid is in ``pidfile`` runs and the broker answers."""
    try:
        with open(pidfile) as file:
            pid = int(file.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError) as error:
        return f"celery beat is not running (pidfile {pidfile}): {error}"
    import redis
    from django.conf import settings

    from chatsite.celery import app  # noqa: F401 - loads the settings beat runs with

    try:
        redis.Redis.from_url(
            settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout
        ).ping()
    except redis.RedisError as error:
        return f"the broker does not answer: {error}"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("process", choices=["web", "worker", "beat"])
    parser.add_argument("--url", default="http://127.0.0.1:8000/healthz", help="web only")
    parser.add_argument(
        "--node", default=f"celery@{socket.gethostname()}", help="worker only: its -n name"
    )
    parser.add_argument("--pidfile", default="/tmp/celerybeat.pid", help="beat only")  # noqa: S108
    parser.add_argument("--timeout", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.process == "web":
        problem = probe_web(args.url, args.timeout)
    elif args.process == "worker":
        problem = probe_worker(args.node, args.timeout)
    else:
        problem = probe_beat(args.pidfile, args.timeout)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)  # noqa: T201
        sys.exit(1)
    print("healthy")  # noqa: T201


if __name__ == "__main__":
    main()
