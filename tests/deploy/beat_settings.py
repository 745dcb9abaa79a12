"""The real settings plus one periodic task: how run.sh behaves once one exists."""

from chatsite.settings import *  # noqa: F403

CELERY_BEAT_SCHEDULE = {
    # Built into Celery and harmless; an hour away, so never sent during a test.
    "test-periodic-task": {"task": "celery.backend_cleanup", "schedule": 3600.0},
}
