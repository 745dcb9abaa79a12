from django.apps import AppConfig


class MessagesAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "messages_app"
    verbose_name = "Chat"

    def ready(self) -> None:
        # Logout, a password change and deactivation close the user's sockets.
        from messages_app.realtime import sessions

        sessions.connect()
