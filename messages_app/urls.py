from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, path, re_path

from messages_app import views

# Of Django's auth views only log in and log out: password reset needs outgoing
# email, which this product does not set up.
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    re_path(
        r"^rooms/(?P<slug>[-a-zA-Z0-9_]+)/export\.(?P<fmt>md|json)$",
        views.room_export,
        name="room_export",
    ),
    path("rooms/<slug:slug>/members/", views.room_members, name="room_members"),
    path(
        "rooms/<slug:slug>/messages/<int:message_id>/revisions/",
        views.message_revisions,
        name="message_revisions",
    ),
    path("usage/", views.usage, name="usage"),
    path("rooms/<slug:slug>/settings/", views.room_settings, name="room_settings"),
    path("rooms/<slug:slug>/members/action/", views.room_member_action, name="room_member_action"),
    path("rooms/<slug:slug>/invite/", views.room_invite_reset, name="room_invite_reset"),
    path("invite/<str:token>/", views.invite, name="invite"),
    path("accounts/signup/", views.signup, name="signup"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
