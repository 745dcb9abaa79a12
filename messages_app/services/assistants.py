"""The assistants a message calls, and the default ``@gpt`` made again if missing."""

from __future__ import annotations

from messages_app.models import DEFAULT_HANDLE, DEFAULT_NAME, Assistant
from messages_app.selectors import assistants_called, default_assistant_missing


def assistant_default() -> Assistant:
    """The default ``@gpt`` (every field blank: it follows the ``OPENAI_*`` settings),
    made if it is missing (see ``selectors.default_assistant_missing``)."""
    assistant, _ = Assistant.objects.get_or_create(
        handle=DEFAULT_HANDLE, defaults={"name": DEFAULT_NAME}
    )
    return assistant


def _assistants_called(handles: list[str]) -> list[Assistant]:
    if DEFAULT_HANDLE in handles and default_assistant_missing():
        assistant_default()
    return assistants_called(handles)
