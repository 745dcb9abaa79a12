from django.urls import re_path

from messages_app.consumers import RoomConsumer

websocket_urlpatterns = [
    re_path(r"^ws/rooms/(?P<slug>[-a-zA-Z0-9_]{1,80})/$", RoomConsumer.as_asgi()),
]
