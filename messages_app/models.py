"""Rooms and their messages. The Message row is the single source of truth.

Rows are written only by ``messages_app.services``; see docs/architecture.md.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
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


# An assistant's handle: the word after ``@`` that calls it. Lower-case ASCII
# letters, digits and underscores, a letter first: exactly what a mention can
# spell (messages_app/mentions.py), so every handle can be mentioned and no
# address or longer word (me@gpt.com, @gpt-bot, @gpt4) ever matches another.
HANDLE_MAX_LENGTH = 32
HANDLE_RE = re.compile(rf"[a-z][a-z0-9_]{{0,{HANDLE_MAX_LENGTH - 1}}}")
# Words a handle may not be: they read as addressing people or the room.
RESERVED_HANDLES = frozenset(
    {
        "all", "everyone", "here", "channel", "room", "admin", "admins", "staff",
        "moderator", "moderators", "owner", "owners", "member", "members", "system",
        "assistant", "user", "me", "you", "null", "none",
    }
)  # fmt: skip
# The assistant every deployment has: blank fields, so it follows the settings.
DEFAULT_HANDLE = "gpt"
DEFAULT_NAME = "GPT"
# The name of an environment variable (the key itself is never stored).
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


def validate_handle(value: str) -> None:
    if not HANDLE_RE.fullmatch(value or ""):
        raise ValidationError(
            "A handle is 1 to %(max)s lower-case letters, digits or underscores, "
            "starting with a letter (it is the word after @).",
            code="invalid_handle",
            params={"max": HANDLE_MAX_LENGTH},
        )
    if value in RESERVED_HANDLES:
        raise ValidationError(
            "“%(value)s” is reserved; choose another handle.",
            code="reserved_handle",
            params={"value": value},
        )


class Assistant(models.Model):
    """A bot people call by ``@handle``; its replies are Message rows that name it.

    Blank connection fields fall back to the settings, so the default ``@gpt``
    (made by migration ``assistants``) behaves as the ``OPENAI_*`` settings say,
    demo model included: see ``worker.llm.endpoint_for`` and docs/architecture.md.
    """

    handle = models.CharField(
        max_length=HANDLE_MAX_LENGTH,
        unique=True,
        validators=[validate_handle],
        help_text="The word after @ that calls it: lower-case letters, digits, underscores.",
    )
    name = models.CharField(max_length=64, help_text="Shown as the author of its replies.")
    model = models.CharField(
        max_length=128,
        blank=True,
        help_text="The model to ask; blank uses OPENAI_MODEL (the demo model when no "
        "key, base URL or key variable is set anywhere).",
    )
    base_url = models.URLField(
        max_length=300,
        blank=True,
        help_text="An OpenAI-compatible server, e.g. http://localhost:11434/v1 for Ollama. "
        "Blank uses OPENAI_BASE_URL (or OpenAI itself when a key variable is set).",
    )
    api_key_env = models.CharField(
        "API key variable",
        max_length=128,
        blank=True,
        validators=[
            RegexValidator(
                ENV_NAME_RE,
                "The name of an environment variable (letters, digits, underscores), not the key.",
            )
        ],
        help_text="The NAME of the worker's environment variable that holds the key "
        "(never the key). Blank: OPENAI_API_KEY when no base URL is set here, no key "
        "when one is.",
    )
    system_prompt = models.TextField(
        blank=True, help_text="Its instructions; blank uses the built-in group-chat prompt."
    )
    temperature = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(2.0)],
        help_text="0 to 2; blank leaves the model's default.",
    )
    max_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Tokens per reply; blank or above GPT_MAX_REPLY_TOKENS uses that limit.",
    )
    active = models.BooleanField(
        default=True, help_text="An inactive assistant is not called, offered or highlighted."
    )
    input_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Price of a million prompt tokens, for the admin's cost estimate.",
    )
    output_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Price of a million completion tokens, for the admin's cost estimate.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["handle"]
        constraints = [
            models.CheckConstraint(
                condition=Q(handle__regex=r"^[a-z][a-z0-9_]*$"), name="assistant_handle_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"@{self.handle} ({self.name})"


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
    # The room's own instructions for its assistants (a persona, a language, a
    # format), sent after each assistant's system prompt; at most
    # CHAT_ROOM_INSTRUCTIONS_MAX_CHARS characters (services.room_assistant_settings_update).
    assistant_instructions = models.TextField(blank=True, default="")
    # How many recent messages the model sees; null uses GPT_CONTEXT_MESSAGES.
    context_messages = models.PositiveIntegerField(null=True, blank=True)
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

    @property
    def effective_context_messages(self) -> int:
        return self.context_messages or settings.GPT_CONTEXT_MESSAGES


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
    # The assistant that writes a reply (null on user messages). PROTECT: a reply
    # must keep saying who wrote it, and removing an assistant would otherwise
    # rewrite message rows behind the services' back; deactivate it instead.
    assistant = models.ForeignKey(
        Assistant,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="replies",
    )
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
    # When the reply's current attempt was asked for: null for the first (the
    # row's ``created_at``), set by each regenerate. Usage and the per-user limits
    # count an attempt at this time (selectors.usage_since).
    requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Earlier attempts kept as ReplyRevision rows (numbered 1..revision_count);
    # counted here so that a snapshot needs no second query.
    revision_count = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Written by the worker running a streaming reply every GPT_HEARTBEAT_INTERVAL;
    # the watchdog tells a dead run from a quiet one by it (worker/heartbeat.py).
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When its author last edited the text (services.message_edit); null if never.
    edited_at = models.DateTimeField(null=True, blank=True)
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
            models.CheckConstraint(
                condition=Q(role="assistant") | Q(assistant__isnull=True),
                name="message_user_has_no_assistant",
            ),
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


class ReplyRevision(models.Model):
    """An earlier attempt of a reply, kept when it was regenerated.

    The reply row keeps its place (id) and holds the current attempt; its earlier
    ones are numbered 1, 2, ... in the order they were made. At most
    ``GPT_MAX_REVISIONS`` per reply (``services.reply_regenerate`` refuses the
    next). Their tokens count in the asker's usage and daily budget at
    ``requested_at``, like the reply's own.
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    text = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices)
    model = models.CharField(max_length=128, blank=True, default="")
    error = models.TextField(blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    # When this attempt was asked for and when it ended (copied from the reply).
    requested_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # When it was replaced, and by whom (null: the system or a deleted user).
    replaced_at = models.DateTimeField(auto_now_add=True)
    replaced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["message", "number"]
        indexes = [
            # Usage and the per-user limits: attempts by when they were asked for.
            models.Index(fields=["requested_at"], name="revision_by_requested_at"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="revision_unique_number"),
            models.CheckConstraint(condition=Q(number__gte=1), name="revision_number_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["done", "failed", "cancelled"]),
                name="revision_status_closed",
            ),
        ]

    def __str__(self) -> str:
        return f"revision {self.number} of #{self.message_id}"


class MessageEdit(models.Model):
    """The text a message had before one edit by its author (services.message_edit).

    Kept so that what was said can be looked up (the admin shows it); deleting the
    message deletes these too, as it empties the body.
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="edits")
    previous_body = models.TextField()
    edited_at = models.DateTimeField()

    class Meta:
        ordering = ["message", "id"]

    def __str__(self) -> str:
        return f"edit of #{self.message_id} at {self.edited_at:%Y-%m-%d %H:%M}"
