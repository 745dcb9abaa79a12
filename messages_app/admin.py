"""The admin: inspect users, rooms and exactly what was persisted of each message.

Message rows are read-only here: the admin never saves, adds or deletes one.
The two actions change rows only through ``messages_app.services``, which
broadcast every change, so open browsers update live (docs/architecture.md).

A message is deleted by the "Delete messages" action, through
``services.message_delete`` (a tombstone, broadcast like any change). A room is
deleted through ``services.room_delete``: a cascade of its messages and
memberships. Deleting a user stays turned off: it would change message rows
(``author`` set to NULL) behind the services' back; deactivate the user, and
delete their messages with the action if they must go.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from messages_app import permissions, services
from messages_app.models import (
    Assistant,
    Membership,
    Message,
    MessageEdit,
    ReplyRevision,
    Room,
    User,
    Visibility,
)
from messages_app.selectors import member_list, message_text, users_with_usage, with_text
from messages_app.services import ClientError

EXCERPT_CHARS = 80


def _change_link(obj: Any, text: str) -> SafeString:
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text)


def _message_label(message: Message) -> str:
    excerpt = Truncator(" ".join(message_text(message).split())).chars(EXCERPT_CHARS)
    return f"#{message.pk} {message.role} ({message.status}): {excerpt or '(empty)'}"


def _tokens_text(row: Message | ReplyRevision) -> str:
    """A reply's (or an earlier attempt's) tokens: "total (prompt+completion)"."""
    if row.total_tokens is None:
        return "-"
    return f"{row.total_tokens} ({row.prompt_tokens}+{row.completion_tokens})"


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    fieldsets = (
        *(BaseUserAdmin.fieldsets or ()),
        ("Chat", {"fields": ("display_name",)}),
    )
    add_fieldsets = (
        *BaseUserAdmin.add_fieldsets,
        ("Chat", {"fields": ("display_name",)}),
    )
    list_display = (
        "username",
        "display_name",
        "email",
        "is_staff",
        "is_active",
        "date_joined",
        "last_login",
    )
    search_fields = ("username", "display_name", "email")

    def get_list_display(self, request: HttpRequest) -> Any:
        # @gpt usage per user, counted as the usage page and the daily budget count
        # it (selectors.users_with_usage), "today" and "month" in TIME_ZONE.
        return (*self.list_display, "tokens_today", "tokens_month", "tokens_total")

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return users_with_usage(super().get_queryset(request))

    @admin.display(description="@gpt tokens today", ordering="tokens_today")
    def tokens_today(self, user: User) -> int:
        return getattr(user, "tokens_today", 0)

    @admin.display(description="tokens this month", ordering="tokens_month")
    def tokens_month(self, user: User) -> int:
        return getattr(user, "tokens_month", 0)

    @admin.display(description="tokens all time", ordering="tokens_total")
    def tokens_total(self, user: User) -> int:
        return getattr(user, "tokens_total", 0)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # see the module docstring: deactivate instead


class RoomAdminForm(forms.ModelForm):
    """A room's fields; visibility may be left out (public), as in older scripts."""

    class Meta:
        model = Room
        fields = (
            "name",
            "slug",
            "visibility",
            "granularity",
            "assistant_instructions",
            "context_messages",
            "created_by",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["visibility"].required = False

    def clean_visibility(self) -> str:
        return self.cleaned_data.get("visibility") or Visibility.PUBLIC

    def clean_assistant_instructions(self) -> str:
        # The same bound as the room's settings page (services.room_assistant_settings_update).
        text = (self.cleaned_data.get("assistant_instructions") or "").strip()
        limit = settings.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS
        if len(text) > limit:
            raise forms.ValidationError(
                f"The instructions are {len(text)} characters; the limit is {limit}."
            )
        return text

    def clean_context_messages(self) -> int | None:
        value = self.cleaned_data.get("context_messages")
        most = settings.CHAT_ROOM_CONTEXT_MESSAGES_MAX
        if value is not None and not 1 <= value <= most:
            raise forms.ValidationError(f"From 1 to {most} recent messages (blank: the default).")
        return value


MILLION = Decimal(1_000_000)


def estimated_cost(
    *,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    input_price: Decimal | None,
    output_price: Decimal | None,
) -> Decimal | None:
    """The cost of the tokens at prices per million (None when neither price is set)."""
    if input_price is None and output_price is None:
        return None
    cost = Decimal(prompt_tokens or 0) * (input_price or 0) / MILLION
    cost += Decimal(completion_tokens or 0) * (output_price or 0) / MILLION
    return cost.quantize(Decimal("0.0001"))


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    """The assistants people call by ``@handle``, with what their replies used.

    Usage counts every reply row of the assistant (finished or not; a reply that
    recorded no usage adds no tokens); the cost is estimated from its prices per
    million tokens, when set.
    """

    list_display = (
        "handle",
        "name",
        "active",
        "model_label",
        "server",
        "key_variable",
        "reply_count",
        "prompt_tokens_used",
        "completion_tokens_used",
        "total_tokens_used",
        "cost",
    )
    list_display_links = ("handle", "name")
    list_filter = ("active",)
    search_fields = ("handle", "name", "model", "base_url")
    ordering = ("handle",)
    readonly_fields = ("created_at", "usage")
    fieldsets = (
        (None, {"fields": ("handle", "name", "active")}),
        (
            "Model",
            {
                "fields": ("model", "base_url", "api_key_env", "temperature", "max_tokens"),
                "description": "Blank fields follow the settings (OPENAI_MODEL, "
                "OPENAI_BASE_URL, OPENAI_API_KEY; the demo model when none is set). The key "
                "itself is never stored: name the worker's environment variable that holds it.",
            },
        ),
        ("Instructions", {"fields": ("system_prompt",)}),
        (
            "Usage and prices",
            {"fields": ("input_price_per_million", "output_price_per_million", "usage")},
        ),
        ("Times", {"fields": ("created_at",)}),
    )

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "base_url":
            # A local server (Ollama, vLLM) typed without a scheme is plain http.
            kwargs["assume_scheme"] = "http"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Assistant]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                replies_n=Count("replies"),
                prompt_sum=Sum("replies__prompt_tokens"),
                completion_sum=Sum("replies__completion_tokens"),
                total_sum=Sum("replies__total_tokens"),
            )
        )

    @admin.display(description="model", ordering="model")
    def model_label(self, assistant: Assistant) -> str:
        return assistant.model or "(OPENAI_MODEL)"

    @admin.display(description="server", ordering="base_url")
    def server(self, assistant: Assistant) -> str:
        if assistant.base_url:
            return assistant.base_url
        return "OpenAI" if assistant.api_key_env else "(settings)"

    @admin.display(description="key variable", ordering="api_key_env")
    def key_variable(self, assistant: Assistant) -> str:
        """The variable's name, and whether this (web) process has it: the worker's
        environment is the one that counts."""
        if not assistant.api_key_env:
            return "-"
        here = "set here" if os.environ.get(assistant.api_key_env) else "not set here"
        return f"{assistant.api_key_env} ({here})"

    @admin.display(description="replies", ordering="replies_n")
    def reply_count(self, assistant: Assistant) -> int:
        return getattr(assistant, "replies_n", 0)

    @admin.display(description="prompt tokens", ordering="prompt_sum")
    def prompt_tokens_used(self, assistant: Assistant) -> int:
        return getattr(assistant, "prompt_sum", None) or 0

    @admin.display(description="completion tokens", ordering="completion_sum")
    def completion_tokens_used(self, assistant: Assistant) -> int:
        return getattr(assistant, "completion_sum", None) or 0

    @admin.display(description="total tokens", ordering="total_sum")
    def total_tokens_used(self, assistant: Assistant) -> int:
        return getattr(assistant, "total_sum", None) or 0

    @admin.display(description="estimated cost")
    def cost(self, assistant: Assistant) -> str:
        value = estimated_cost(
            prompt_tokens=getattr(assistant, "prompt_sum", None),
            completion_tokens=getattr(assistant, "completion_sum", None),
            input_price=assistant.input_price_per_million,
            output_price=assistant.output_price_per_million,
        )
        return "-" if value is None else f"{value:.4f}"

    @admin.display(description="usage")
    def usage(self, assistant: Assistant) -> str:
        if assistant.pk is None:
            return "-"
        return (
            f"{self.reply_count(assistant)} replies, {self.prompt_tokens_used(assistant)} prompt + "
            f"{self.completion_tokens_used(assistant)} completion = "
            f"{self.total_tokens_used(assistant)} tokens; estimated cost {self.cost(assistant)}"
        )


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "visibility",
        "granularity",
        "created_by",
        "created_at",
        "messages_link",
    )
    list_filter = ("visibility", "granularity", ("created_at", admin.DateFieldListFilter))
    form = RoomAdminForm
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at", "messages_link", "members")
    list_select_related = ("created_by",)

    @admin.display(description="members")
    def members(self, room: Room) -> SafeString | str:
        """Who belongs to the room, read-only: members change in the room's own panel."""
        rows = member_list(room_id=room.pk) if room.pk else []
        if not rows:
            return "-"
        return format_html(
            '<ul class="room-members">{}</ul>',
            format_html_join(
                "", "<li>{} ({}): {}</li>", ((m["name"], m["username"], m["role"]) for m in rows)
            ),
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        return super().get_queryset(request).annotate(message_count=Count("messages"))

    @admin.display(description="messages", ordering="message_count")
    def messages_link(self, room: Room) -> SafeString:
        count = getattr(room, "message_count", None)
        if count is None:
            count = room.messages.count()
        url = reverse("admin:messages_app_message_changelist") + f"?room__id__exact={room.pk}"
        return format_html('<a href="{}">{} messages</a>', url, count)

    def save_model(self, request: HttpRequest, obj: Room, form: Any, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)
        if not change and obj.created_by_id is not None:
            Membership.objects.get_or_create(
                room=obj, user_id=obj.created_by_id, defaults={"role": "owner"}
            )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Staff delete rooms (a cascade, services.room_delete); see the module docstring.
        return permissions.is_staff(request.user) and super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # The cascade (messages, memberships) is services.room_delete's: their own
        # admins refuse deletes one by one, which must not veto deleting the room.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request: HttpRequest, obj: Room) -> None:
        services.room_delete(room=obj, actor=request.user)  # type: ignore[arg-type]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        for room in queryset:
            services.room_delete(room=room, actor=request.user)  # type: ignore[arg-type]


def _run_per_row(
    modeladmin: MessageAdmin,
    request: HttpRequest,
    queryset: QuerySet[Message],
    *,
    call: Callable[[Message], object],
    done: str,
) -> None:
    """Call the service for each selected row on its own; report what happened to each."""
    succeeded: list[str] = []
    for message in queryset.select_related("room").order_by("pk"):
        try:
            call(message)
        except ClientError as error:
            modeladmin.message_user(request, f"#{message.pk}: {error.detail}", messages.ERROR)
        else:
            succeeded.append(f"#{message.pk}")
            # The admin's history of the row says who did it (LogEntry, not the row).
            modeladmin.log_change(request, message, f"{done} by the admin action.")
    if succeeded:
        modeladmin.message_user(
            request, f"{done} {len(succeeded)}: {', '.join(succeeded)}.", messages.SUCCESS
        )


class ReplyRevisionInline(admin.TabularInline):
    """A reply's earlier attempts (kept by each regenerate), read-only like the row."""

    model = ReplyRevision
    fk_name = "message"
    extra = 0
    can_delete = False
    fields = (
        "number",
        "status",
        "model",
        "tokens",
        "requested_at",
        "finished_at",
        "replaced_at",
        "replaced_by",
        "full_text",
        "error",
    )
    readonly_fields = fields
    ordering = ("number",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="tokens")
    def tokens(self, revision: ReplyRevision) -> str:
        return _tokens_text(revision)

    @admin.display(description="text")
    def full_text(self, revision: ReplyRevision) -> SafeString:
        return format_html('<pre class="message-body">{}</pre>', revision.text or "(empty)")


class MessageEditInline(admin.TabularInline):
    """The texts a message had before each edit (read-only: only services write)."""

    model = MessageEdit
    fields = ("edited_at", "previous_body")
    readonly_fields = ("edited_at", "previous_body")
    extra = 0
    can_delete = False
    verbose_name = "text before an edit"
    verbose_name_plural = "texts before its edits"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    inlines = (ReplyRevisionInline, MessageEditInline)
    list_display = (
        "id",
        "room",
        "author_name",
        "role",
        "assistant",
        "status",
        "excerpt",
        "version",
        "tokens",
        "model",
        "created_at",
        "finished_at",
    )
    list_display_links = ("id", "excerpt")
    list_filter = (
        "room",
        "role",
        "assistant",
        "status",
        ("created_at", admin.DateFieldListFilter),
    )
    # chunks__text: the newest text of a streaming reply, not yet in its body.
    search_fields = ("body", "chunks__text", "author__username", "author__display_name")
    date_hierarchy = "created_at"
    list_select_related = ("room", "author", "assistant")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # A streaming reply's newest text is in its chunks: read them with the row.
        return with_text(super().get_queryset(request))

    list_per_page = 100
    ordering = ("-id",)
    actions = ("cancel_streaming_replies", "retry_failed_replies", "delete_messages")

    class Media:
        css = {"all": ["messages_app/admin.css"]}  # <pre> bodies wrap, whitespace kept

    fieldsets = (
        (None, {"fields": ("room_link", "author_link", "role", "status", "version")}),
        ("Body", {"fields": ("full_body",)}),
        ("Conversation", {"fields": ("reply_to_link", "replies_links")}),
        (
            "Reply",
            {
                "fields": (
                    "assistant",
                    "model",
                    "error_text",
                    "attempt",
                    "prompt_tokens",
                    "completion_tokens",
                    "total_tokens",
                )
            },
        ),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "requested_at",
                    "updated_at",
                    "finished_at",
                    "edited_at",
                    "client_id",
                    "revision_count",
                )
            },
        ),
        ("Deleted", {"fields": ("deleted_at", "deleted_by")}),
    )
    readonly_fields = (
        "room_link",
        "author_link",
        "role",
        "status",
        "version",
        "full_body",
        "reply_to_link",
        "replies_links",
        "assistant",
        "model",
        "error_text",
        "attempt",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "created_at",
        "requested_at",
        "updated_at",
        "finished_at",
        "edited_at",
        "client_id",
        "revision_count",
        "deleted_at",
        "deleted_by",
    )

    # --- read-only: only the services write a message -----------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Change permission gates the actions (no ``obj``); a row's page is view-only.

        With ``obj`` this returns False, so Django shows the change page as a
        read-only view and refuses a POST to it: a form save would write the row
        without a version bump or a broadcast.
        """
        if obj is not None:
            return False
        return super().has_change_permission(request)

    # --- columns ----------------------------------------------------------------

    @admin.display(description="author", ordering="author__username")
    def author_name(self, message: Message) -> str:
        if message.author is not None:
            return message.author.get_display_name()
        if message.role == "assistant":
            return message.assistant.name if message.assistant is not None else "@gpt"
        return "(deleted user)"

    @admin.display(description="body")
    def excerpt(self, message: Message) -> str:
        return Truncator(" ".join(message_text(message).split())).chars(EXCERPT_CHARS) or "(empty)"

    @admin.display(description="tokens", ordering="total_tokens")
    def tokens(self, message: Message) -> str:
        return _tokens_text(message)

    # --- the change page ----------------------------------------------------------

    @admin.display(description="room")
    def room_link(self, message: Message) -> SafeString:
        return _change_link(message.room, f"{message.room.name} ({message.room.slug})")

    @admin.display(description="author")
    def author_link(self, message: Message) -> SafeString | str:
        if message.author is None:
            return self.author_name(message)
        return _change_link(message.author, message.author.get_display_name())

    @admin.display(description="body")
    def full_body(self, message: Message) -> SafeString:
        """The whole text as stored (a streaming reply's chunks too): every space and
        newline kept, HTML escaped."""
        return format_html('<pre class="message-body">{}</pre>', message_text(message))

    @admin.display(description="error")
    def error_text(self, message: Message) -> SafeString | str:
        if not message.error:
            return "-"
        return format_html('<pre class="message-error">{}</pre>', message.error)

    @admin.display(description="in reply to")
    def reply_to_link(self, message: Message) -> SafeString | str:
        if message.reply_to is None:
            return "-"
        return _change_link(message.reply_to, _message_label(message.reply_to))

    @admin.display(description="replies")
    def replies_links(self, message: Message) -> SafeString | str:
        replies = list(message.replies.order_by("pk"))
        if not replies:
            return "-"
        return format_html(
            '<ul class="message-replies">{}</ul>',
            format_html_join(
                "",
                "<li>{}</li>",
                ((_change_link(reply, _message_label(reply)),) for reply in replies),
            ),
        )

    # --- actions: through the services, one row at a time ---------------------------

    @admin.action(description="Cancel streaming replies", permissions=["change"])
    def cancel_streaming_replies(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Stop each selected open reply for everyone (``services.reply_cancel``)."""
        _run_per_row(
            self,
            request,
            queryset,
            call=lambda m: services.reply_cancel(
                room=m.room,
                message_id=m.pk,
                actor=request.user,  # type: ignore[arg-type]
            ),
            done="Cancelled",
        )

    @admin.action(description="Regenerate replies (keeps the old text)", permissions=["change"])
    def retry_failed_replies(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Stream each selected done, failed or cancelled reply again, keeping the attempt
        it held as a revision (``services.reply_regenerate``, as the room's button)."""
        _run_per_row(
            self,
            request,
            queryset,
            call=lambda m: services.reply_regenerate(
                message_id=m.pk,
                actor=request.user,  # type: ignore[arg-type]
            ),
            done="Queued again",
        )

    @admin.action(description="Delete messages (tombstone)", permissions=["change"])
    def delete_messages(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Delete each selected message for everyone (``services.message_delete``)."""
        _run_per_row(
            self,
            request,
            queryset,
            call=lambda m: services.message_delete(
                message_id=m.pk,
                actor=request.user,  # type: ignore[arg-type]
            ),
            done="Deleted",
        )
