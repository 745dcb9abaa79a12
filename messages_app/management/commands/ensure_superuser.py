"""Create the admin account from the environment, once.

Reads ``DJANGO_SUPERUSER_USERNAME``, ``DJANGO_SUPERUSER_PASSWORD`` and the
optional ``DJANGO_SUPERUSER_EMAIL`` (the names Django's ``createsuperuser
--noinput`` reads). With neither name nor password set it does nothing, so a
deployment without an admin account starts as well. Run by the ``migrate``
service of docker-compose.yml and by scripts/run.sh after every migrate:

- no such user: create it as a superuser;
- a superuser of that name exists: change nothing (not even the password,
  which an operator may have changed since; use ``manage.py changepassword``);
- a user of that name exists but is not a superuser: refuse, rather than
  promote an account someone else may have registered.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

USERNAME_VAR = "DJANGO_SUPERUSER_USERNAME"
PASSWORD_VAR = "DJANGO_SUPERUSER_PASSWORD"  # noqa: S105 - a variable name
EMAIL_VAR = "DJANGO_SUPERUSER_EMAIL"


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _messages(error: ValidationError) -> str:
    return " ".join(error.messages)


class Command(BaseCommand):
    help = (
        f"Create the superuser named by {USERNAME_VAR} with {PASSWORD_VAR} (and "
        f"{EMAIL_VAR}) unless it exists. Does nothing when neither is set."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        username = _env(USERNAME_VAR)
        # The password is taken as given: spaces may be part of it.
        password = os.environ.get(PASSWORD_VAR, "")
        email = _env(EMAIL_VAR)
        if not username and not password:
            self.stdout.write(f"{USERNAME_VAR} is not set: no admin account to ensure.")
            return
        if not username:
            raise CommandError(f"{PASSWORD_VAR} is set but {USERNAME_VAR} is empty or unset.")

        User = get_user_model()  # noqa: N806 - a class
        field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            username = field.clean(username, None)
        except ValidationError as error:
            raise CommandError(f"{USERNAME_VAR}={username!r}: {_messages(error)}") from None

        existing = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
        if existing is not None:
            self._check_existing(existing, username)
            return

        if not password:
            raise CommandError(
                f"{PASSWORD_VAR} is empty or unset: it is needed to create the admin "
                f"account {username!r}."
            )
        if email:
            try:
                validate_email(email)
            except ValidationError:
                raise CommandError(f"{EMAIL_VAR}={email!r} is not an email address.") from None
        candidate = User(**{User.USERNAME_FIELD: username, "email": email})
        try:
            validate_password(password, user=candidate)
        except ValidationError as error:
            raise CommandError(f"{PASSWORD_VAR} is too weak: {_messages(error)}") from None

        try:
            with transaction.atomic():
                User._default_manager.create_superuser(
                    **{User.USERNAME_FIELD: username}, email=email, password=password
                )
        except IntegrityError:
            # Another process (a second migrate run) created it meanwhile.
            existing = User._default_manager.get(**{User.USERNAME_FIELD: username})
            self._check_existing(existing, username)
            return
        self.stdout.write(self.style.SUCCESS(f"created the admin account {username!r}"))

    def _check_existing(self, user: Any, username: str) -> None:
        if not (user.is_superuser and user.is_staff and user.is_active):
            raise CommandError(
                f"A user named {username!r} exists but is not an active superuser; "
                "refusing to promote it. Pick another DJANGO_SUPERUSER_USERNAME, or "
                "change that user in the admin."
            )
        self.stdout.write(f"admin account {username!r} exists; nothing changed")
