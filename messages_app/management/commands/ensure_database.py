"""Create the database named in DATABASE_URL if it does not exist yet."""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from psycopg import sql


class Command(BaseCommand):
    help = "Create the database of DATABASE_URL when it is missing (a fresh machine)."

    def handle(self, *args: Any, **options: Any) -> None:
        db = settings.DATABASES["default"]
        params = {
            "host": db["HOST"] or None,
            "port": db["PORT"] or None,
            "user": db["USER"] or None,
            "password": db["PASSWORD"] or None,
        }
        try:
            with psycopg.connect(
                dbname="postgres", autocommit=True, connect_timeout=10, **params
            ) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]
                ).fetchone()
                if exists:
                    self.stdout.write(f"database {db['NAME']!r} exists")
                    return
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
                self.stdout.write(self.style.SUCCESS(f"created database {db['NAME']!r}"))
        except psycopg.Error as error:
            raise CommandError(
                f"cannot reach PostgreSQL to create {db['NAME']!r}: {error}"
            ) from error
