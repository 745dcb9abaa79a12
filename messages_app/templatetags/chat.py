"""Template filters of the chat pages. ``static/messages_app/js/room.js`` mirrors them."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.safestring import SafeString

from messages_app.markdown import render_markdown

register = template.Library()

DEMO_MODEL = "demo"
AVATAR_HUES = 8
STATE_LABELS = {
    "pending": "waiting for the model",
    "streaming": "writing…",
    "failed": "failed",
    "cancelled": "stopped",
    "done": "",
}


@register.simple_tag
def signup_mode() -> str:
    """``CHAT_SIGNUP``: whether the login page offers a signup link at all."""
    return settings.CHAT_SIGNUP


@register.filter
def markdown(text: str) -> SafeString:
    """A message body as sanitised HTML."""
    return render_markdown(text)


@register.filter
def iso_datetime(value: str | None) -> datetime | None:
    """An ISO 8601 string of ``message_payload`` as an aware datetime in the current zone."""
    if not value:
        return None
    return timezone.localtime(datetime.fromisoformat(value))


@register.filter
def model_label(model: str) -> str:
    """The model shown on an assistant reply; the demo model says that it is one."""
    if model == DEMO_MODEL:
        return "demo model · no API key"
    return model


@register.filter
def state_label(status: str) -> str:
    return STATE_LABELS.get(status, status)


@register.filter
def avatar_hue(name: str | None) -> int:
    """A stable colour (0-7) for a display name; the same sum as ``avatarHue`` in room.js."""
    return sum(ord(ch) for ch in (name or "")) % AVATAR_HUES


@register.filter
def initial(name: str | None) -> str:
    return (name or "?").strip()[:1].upper() or "?"
