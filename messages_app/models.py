"""Rooms and their messages. The Message row is the single source of truth.

Rows are written only by ``messages_app.services``; see docs/architecture.md.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q


class User(AbstractUser):
    display_name = models.CharField(max_length=64, blank=True)

    def get_display_name(self) -> str:
        return self.display_name or self.get_username()


class Granularity(models.TextChoices):
    DEFAULT = "", "site default"
    TOKEN = "token", "every token"
    WORD = "word", "every word"
    SENTENCE = "sentence", "every sentence"


class Visibility(models.TextChoices):
    """Who can find and read a room (docs/architecture.md, "Rooms and permissions")."""

    PUBLIC = "public", "public: listed for everyone signed in; opening it joins"
    PRIVATE = "private", "private: members only, joined through an invite link"


class Room(models.Model):
    name = models.CharField(max_length=80)
    slug = models.SlugField(max_length=80, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    granularity = models.CharField(
        max_length=16,
        choices=Granularity.choices,
        blank=True,
        default=Granularity.DEFAULT,
        help_text="How often a streaming reply is written and shown; blank uses "
        "GPT_STREAM_GRANULARITY.",
    )
    visibility = models.CharField(
        max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    # The secret of the room's invite link; null until an owner or moderator makes
    # one. A new token replaces (revokes) the old one.
    invite_token = models.CharField(max_length=64, unique=True, null=True, blank=True)
    # When the current link stops working; null = never (CHAT_INVITE_HOURS=0).
    invite_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(visibility__in=["public", "private"]), name="room_visibility_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_granularity(self) -> str:
        return self.granularity or settings.GPT_STREAM_GRANULARITY


class MemberRole(models.TextChoices):
    """A member's role in a room: the one vocabulary permissions, services and UI use."""

    OWNER = "owner", "owner"
    MODERATOR = "moderator", "moderator"
    MEMBER = "member", "member"


class Membership(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=MemberRole.choices, default=MemberRole.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    # The id of the newest message of the room this user has seen (0: none), moved
    # forward only (services.membership_mark_read). Not a foreign key: the message
    # may be deleted later, and what counts is only the position in the timeline.
    last_read_id = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["room", "id"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="membership_unique_room_user"),
            models.CheckConstraint(
                condition=Q(role__in=["owner", "moderator", "member"]),
                name="membership_role_valid",
            ),
            models.CheckConstraint(
                condition=Q(last_read_id__gte=0), name="membership_last_read_id_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} of {self.room_id}"


class Role(models.TextChoices):
    USER = "user", "user"
    ASSISTANT = "assistant", "assistant"


class Status(models.TextChoices):
    DONE = "done", "done"
    PENDING = "pending", "pending"
    STREAMING = "streaming", "streaming"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


OPEN_STATUSES = (Status.PENDING, Status.STREAMING)


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    # The text. While a reply streams, its newest text is in ReplyChunk rows as
    # well (``text_length`` counts both); it is folded in here every
    # GPT_FOLD_CHARS characters and when the reply ends (docs/architecture.md).
    body = models.TextField(blank=True, default="")
    text_length = models.PositiveIntegerField(default=0, editable=False)
    unfolded_length = models.PositiveIntegerField(default=0, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DONE)
    version = models.PositiveIntegerField(default=1)
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    client_id = models.UUIDField(null=True, blank=True)
    # The attempt that owns a streaming reply; every write of the worker names it.
    attempt = models.UUIDField(null=True, blank=True, editable=False)
    model = models.CharField(max_length=128, blank=True, default="")
    error = models.TextField(blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Written by the worker running a streaming reply every GPT_HEARTBEAT_INTERVAL;
    # the watchdog tells a dead run from a quiet one by it (worker/heartbeat.py).
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A deleted message is a tombstone: its body is emptied, the row keeps its place.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            # The room timeline: newest N of a room, in order.
            models.Index(fields=["room", "-id"], name="message_room_timeline"),
            # The watchdog: open replies by their last write.
            models.Index(
                fields=["updated_at"],
                name="message_open_by_last_write",
                condition=Q(status__in=["pending", "streaming"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["author", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_unique_client_id_per_author",
            ),
            models.CheckConstraint(
                condition=~Q(role="assistant") | Q(author__isnull=True),
                name="message_assistant_has_no_author",
            ),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in Status]), name="message_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(role__in=[r.value for r in Role]), name="message_role_valid"
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="message_version_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.role} in {self.room_id}: {self.body[:40]}"

    def save(self, *args: object, **kwargs: object) -> None:
        # Rows written whole (a post, the admin, tests) hold all their text in
        # the body; only streaming appends (services, in SQL) add chunks.
        if not self.unfolded_length:
            self.text_length = len(self.body)
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class ReplyChunk(models.Model):
    """Text appended to a streaming reply and not yet folded into its body.

    Appending to ``Message.body`` would rewrite the whole value each time (a body
    over about 2 KB lives in TOAST, rewritten in full on every change), so the
    cost of a write would grow with the reply. A chunk row costs the same at any
    length. ``version`` is the write of the row that added it, ``offset`` where
    its text starts (in characters).
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="chunks")
    version = models.PositiveIntegerField()
    offset = models.PositiveIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["message", "version"]
        constraints = [
            models.UniqueConstraint(fields=["message", "version"], name="chunk_unique_version"),
        ]

    def __str__(self) -> str:
        return f"chunk {self.version} of #{self.message_id} at {self.offset}"
