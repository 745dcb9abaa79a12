"""The project's Celery app, in a worker that dies the instant a task starts.

``celery -A tests.worker.dying_app worker`` takes a task from the queue (and, as
acks are early, acknowledges it), then is killed by SIGKILL in ``task_prerun``,
before the task's code runs: before the reply's row is claimed. It shows what
happens to a task lost at that moment.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery.signals import task_prerun

from chatsite.celery import app

__all__ = ["app"]


@task_prerun.connect
def _die_before_the_task_runs(**kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
