"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - needs apps loaded
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from messages_app.consumers import ServerSendMiddleware  # noqa: E402
from messages_app.realtime import daphne as daphne_fast_path  # noqa: E402
from messages_app.routing import websocket_urlpatterns  # noqa: E402

# At start-up: the daphne fast path runs only if daphne's internals it relies on
# are there (it logs a warning and turns itself off otherwise).
daphne_fast_path.check(enabled=settings.CHAT_DAPHNE_FAST_PATH)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": ServerSendMiddleware(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
