"""The HTML pages. Thin: forms validate, ``services`` write, ``selectors`` read."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import REDIRECT_FIELD_NAME, login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import aget_object_or_404, get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from messages_app import export, services
from messages_app.forms import PostForm, RoomForm, SignupForm
from messages_app.models import Room, User
from messages_app.selectors import room_list, room_snapshot
from messages_app.services import ClientError


def _safe_next(request: HttpRequest) -> str:
    """The ``next`` the visitor was going to, if it is a URL of this site."""
    target = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME, "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and sign in with it, then go where the visitor was going."""
    next_url = _safe_next(request)
    if request.user.is_authenticated:
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = services.user_create(
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password1"],
            display_name=form.cleaned_data["display_name"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_display_name()}!")
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


@login_required
@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """The rooms, most recently active first, and the form that creates one."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            room = services.room_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                granularity=form.cleaned_data["granularity"],
                created_by=_user(request),
            )
        except ClientError as error:
            form.add_client_error(error)
        else:
            return redirect("room", slug=room.slug)
    return render(request, "messages_app/home.html", {"rooms": room_list(), "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def room(request: HttpRequest, slug: str) -> HttpResponse:
    """A room: its newest messages rendered here, then kept live by ``js/room.js``.

    A POST is the composer of a browser without JavaScript: it posts and reloads.
    """
    room = get_object_or_404(Room, slug=slug)
    form = PostForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.message_post(room=room, author=_user(request), body=form.cleaned_data["body"])
        except ClientError as error:
            form.add_error("body", error.detail)
        else:
            return HttpResponseRedirect(request.path)
    rows = room_snapshot(room=room)
    status = 400 if form.errors else 200
    context = {"room": room, "rows": rows, "form": form}
    return render(request, "messages_app/room.html", context, status=status)


EXPORT_FORMATS = {
    "md": ("text/markdown; charset=utf-8", export.as_markdown),
    "json": ("application/json; charset=utf-8", export.as_json),
}


@login_required
@require_http_methods(["GET"])
async def room_export(request: HttpRequest, slug: str, fmt: str) -> HttpResponse:
    """The room's messages as a download (Markdown or JSON), streamed as it is read."""
    room = await aget_object_or_404(Room, slug=slug)
    content_type, render_export = EXPORT_FORMATS[fmt]
    response = StreamingHttpResponse(
        (part.encode() async for part in render_export(room)), content_type=content_type
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="{room.slug}-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # noqa: S101 - behind login_required
    return user
