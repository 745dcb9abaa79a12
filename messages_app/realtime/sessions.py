"""Sessions end everywhere: logout, a password change and deactivation close the
user's sockets on every web process (``events.user_sockets_close``, code 4401).

Connected in ``MessagesAppConfig.ready``. A password change and a deactivation
are seen on the ``User`` row itself (``pre_save`` compares it with the stored
one, ``post_save`` acts after commit), so every path that changes them (the
password views, the admin, ``manage.py changepassword``, ``set_password`` +
``save`` anywhere) is covered; a bulk ``QuerySet.update`` bypasses signals, and
must call ``user_sockets_close`` itself.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save, pre_save

from messages_app import events, protocol

logger = logging.getLogger(__name__)

_ENDS = "_chat_session_ends"


def _close(user_id: int) -> None:
    try:
        events.user_sockets_close(user_id=user_id, code=protocol.CLOSE_UNAUTHENTICATED)
    except redis.RedisError:
        # The sessions are ended in the database all the same (each socket's next
        # connect is refused); only the sockets open now stay open until they drop.
        logger.exception("could not close the sockets of user %s", user_id)


def on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        transaction.on_commit(lambda: _close(user.pk))


def on_user_pre_save(sender: Any, instance: Any, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if instance.pk is None or (
        update_fields is not None and not {"password", "is_active"} & set(update_fields)
    ):
        return  # e.g. login's save of last_login: no query
    stored = sender.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if stored is None:
        return
    ends = stored["password"] != instance.password or (
        stored["is_active"] and not instance.is_active
    )
    setattr(instance, _ENDS, ends)


def on_user_post_save(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created and getattr(instance, _ENDS, False):
        setattr(instance, _ENDS, False)
        user_id = instance.pk
        transaction.on_commit(lambda: _close(user_id))


def connect() -> None:
    user_model = get_user_model()
    user_logged_out.connect(on_logged_out, dispatch_uid="chat-sockets-logout")
    pre_save.connect(on_user_pre_save, sender=user_model, dispatch_uid="chat-sockets-pre")
    post_save.connect(on_user_post_save, sender=user_model, dispatch_uid="chat-sockets-post")
