from django.urls import re_path

from messages_app.consumers import RoomConsumer

# Any slug reaches the consumer, which closes the socket with 4404 when no room
# has it; a URL that matches no route would fail the handshake with a server error.
websocket_urlpatterns = [
    re_path(r"^ws/rooms/(?P<slug>[^/]+)/$", RoomConsumer.as_asgi()),
]
