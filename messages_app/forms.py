"""Forms of the pages. They validate input; the writes are in ``services``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.forms.utils import ErrorDict
from django.http import HttpRequest

from messages_app.models import Granularity, Room, User, Visibility
from messages_app.services import ClientError

# Which field a ``ClientError`` of ``services.room_create`` belongs to.
ROOM_ERROR_FIELDS = {
    "invalid_name": "name",
    "name_too_long": "name",
    "invalid_slug": "slug",
    "slug_taken": "slug",
    "invalid_granularity": "granularity",
    "invalid_visibility": "visibility",
}


class SignupForm(UserCreationForm):
    """Username, display name and the password twice (Django's checks apply)."""

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "display_name")
        labels = {"display_name": "Display name"}
        help_texts = {
            "username": "You log in with this. Letters, digits and @/./+/-/_ only.",
            "display_name": "What others see next to your messages, e.g. “Alice Martin”.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["display_name"].required = True
        self.fields["display_name"].error_messages["required"] = "Choose the name others will see."
        self.fields["display_name"].widget.attrs["autocomplete"] = "nickname"
        self.fields["username"].widget.attrs["autocomplete"] = "username"

    def clean_display_name(self) -> str:
        return " ".join(self.cleaned_data.get("display_name", "").split())


class LockedOutForm(AuthenticationForm):
    """The login form as shown during a lockout: the username kept, the reason as its error.

    It is never validated: validating would call ``authenticate`` again, which
    the lockout refuses before it checks any password.
    """

    def __init__(self, request: HttpRequest, *, username: str, detail: str) -> None:
        super().__init__(request, data={"username": username})
        self.detail = detail

    def full_clean(self) -> None:
        self._errors = ErrorDict()
        self.cleaned_data = {}
        self.add_error(None, ValidationError(self.detail, code="locked_out"))


class RoomForm(forms.Form):
    """A new room: its name, and optionally its address and reply granularity."""

    # No max_length here: ``services.room_create`` is the one place that checks
    # (after it normalises whitespace); ``maxlength`` only helps the browser.
    name = forms.CharField(
        label="Room name",
        widget=forms.TextInput(
            attrs={
                "placeholder": "e.g. Weekend plans",
                "autocomplete": "off",
                "maxlength": Room._meta.get_field("name").max_length,
            }
        ),
    )
    slug = forms.CharField(
        label="Address",
        required=False,
        help_text="Optional: /rooms/<address>/. Made from the name when left empty.",
        widget=forms.TextInput(
            attrs={
                "placeholder": "weekend-plans",
                "autocomplete": "off",
                "maxlength": Room._meta.get_field("slug").max_length,
            }
        ),
    )
    granularity = forms.ChoiceField(
        label="Stream @gpt replies",
        required=False,
        choices=[
            ("", f"site default ({settings.GPT_STREAM_GRANULARITY})"),
            *[(value, label) for value, label in Granularity.choices if value],
        ],
    )

    visibility = forms.ChoiceField(
        label="Who can join",
        choices=[
            (Visibility.PUBLIC, "Public: listed for everyone here; opening it joins"),
            (Visibility.PRIVATE, "Private: hidden; people join through your invite link"),
        ],
        initial=Visibility.PUBLIC,
        required=False,  # public when left out (a form of an older page)
        widget=forms.RadioSelect,
    )

    def add_client_error(self, error: ClientError) -> None:
        """Show a ``ClientError`` of ``services.room_create`` on the field it concerns."""
        field = ROOM_ERROR_FIELDS.get(error.code)
        if field == "slug" and not self.cleaned_data.get("slug"):
            field = "name"  # the address was to be made from the name
        self.add_error(field, error.detail)


class PostForm(forms.Form):
    """The composer, when the page is used without JavaScript (a plain form POST)."""

    body = forms.CharField(label="Message", strip=False, widget=forms.Textarea)


# Which field a ``ClientError`` of ``services.room_assistant_settings_update`` belongs to.
ASSISTANT_SETTINGS_ERROR_FIELDS = {
    "instructions_too_long": "instructions",
    "invalid_text": "instructions",
    "invalid_context_messages": "context_messages",
    "invalid_granularity": "granularity",
}


class RoomAssistantSettingsForm(forms.Form):
    """A room's settings for its assistants, for its owners and moderators.

    The limits are checked by ``services.room_assistant_settings_update`` (the one
    place); the attributes only help the browser.
    """

    instructions = forms.CharField(
        label="Instructions for the assistants",
        required=False,
        strip=False,
        help_text=f"A persona, a language, a format… Sent to every assistant of this room "
        f"after its own instructions. At most {settings.CHAT_ROOM_INSTRUCTIONS_MAX_CHARS} "
        "characters.",
        widget=forms.Textarea(attrs={"rows": 5}),
    )
    context_messages = forms.IntegerField(
        label="Recent messages the model sees",
        required=False,
        help_text=f"1 to {settings.CHAT_ROOM_CONTEXT_MESSAGES_MAX}; blank: the site default "
        f"({settings.GPT_CONTEXT_MESSAGES}).",
        widget=forms.NumberInput(
            attrs={"min": 1, "max": settings.CHAT_ROOM_CONTEXT_MESSAGES_MAX, "step": 1}
        ),
    )
    granularity = forms.ChoiceField(
        label="Stream replies",
        required=False,
        choices=[
            ("", f"site default ({settings.GPT_STREAM_GRANULARITY})"),
            *[(value, label) for value, label in Granularity.choices if value],
        ],
    )

    def add_client_error(self, error: ClientError) -> None:
        """Show a ``ClientError`` of the service on the field it concerns."""
        self.add_error(ASSISTANT_SETTINGS_ERROR_FIELDS.get(error.code), error.detail)
