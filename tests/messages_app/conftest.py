from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chatsite.celery import app as celery_app


@pytest.fixture(autouse=True)
def queued_tasks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Tasks the code under test queued, kept here instead of reaching a worker.

    A session's live Celery worker (tests/integration) must not pick up replies
    of these in-process tests and write to their rows.
    """
    queued: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        celery_app, "send_task", lambda name, args=None, **kw: queued.append((name, args))
    )
    return queued


@pytest.fixture
def default_gpt(db: None) -> Any:
    """The default ``@gpt`` row, as migration ``assistants`` makes it.

    A transactional test's flush empties every table, data migrations' rows
    included, so a test that needs the row (rather than the post that makes it
    again) asks for it here.
    """
    from messages_app import services

    return services.assistant_default()


@pytest.fixture
def executor(transactional_db: None) -> Iterator[Any]:
    """A migration executor for the migration tests; after the test, the database is
    migrated back to the newest state, as every other test expects it."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    yield MigrationExecutor(connection)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
