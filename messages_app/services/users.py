"""Accounts: the one write of a User row the site makes (sign-up)."""

from __future__ import annotations

from django.db import transaction

from messages_app.models import User
from messages_app.services.common import _check_text, clean_text

# --- accounts -------------------------------------------------------------------


@transaction.atomic
def user_create(*, username: str, password: str, display_name: str = "") -> User:
    """Create an account; the caller has validated the username and the password."""
    _check_text(username, code="invalid_text", what="The username")
    _check_text(display_name, code="invalid_text", what="The display name")
    display_name = " ".join(clean_text(display_name).split())
    return User.objects.create_user(username=username, password=password, display_name=display_name)
