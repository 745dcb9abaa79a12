"""The HTML pages. Thin: forms validate, ``services`` write, ``selectors`` read."""

from __future__ import annotations

import logging
from typing import Any

import redis
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME, login
from django.contrib.auth.decorators import login_required
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import aget_object_or_404, get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import get_usage

from chatsite.client_ip import client_ip, client_ip_key
from messages_app import export, limits, services
from messages_app.forms import LockedOutForm, PostForm, RoomForm, SignupForm
from messages_app.models import Room, User
from messages_app.selectors import room_list, room_snapshot
from messages_app.services import ClientError

logger = logging.getLogger(__name__)


def _safe_next(request: HttpRequest) -> str:
    """The ``next`` the visitor was going to, if it is a URL of this site."""
    target = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME, "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""


def _signup_usage(request: HttpRequest, *, increment: bool) -> dict[str, Any] | None:
    """Accounts made from this request's address in the current hour (django-ratelimit).

    None when the count cannot be read (Redis away): signup is let through then.
    """
    try:
        return get_usage(
            request,
            group="signup",
            key=client_ip_key,
            rate=f"{settings.CHAT_SIGNUPS_PER_HOUR}/h",
            method="POST",
            increment=increment,
        )
    except redis.RedisError:
        logger.warning("signup throttle: Redis unreachable, signup let through", exc_info=True)
        return None


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and sign in with it, then go where the visitor was going.

    At most ``CHAT_SIGNUPS_PER_HOUR`` accounts per client address and hour; only
    accounts made count (a form with a mistake costs nothing).
    """
    next_url = _safe_next(request)
    if request.user.is_authenticated:
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    usage = _signup_usage(request, increment=False) if request.method == "POST" else None
    if usage is not None and usage["count"] >= usage["limit"]:
        wait = max(1, usage["time_left"])
        form.is_valid()  # shows what was typed, bound
        form.add_error(
            None,
            f"Too many accounts were created from your address this hour "
            f"(at most {usage['limit']}). Try again in {limits.wait_text(wait)}.",
        )
        context = {"form": form, "next": next_url}
        return render(request, "registration/signup.html", context, status=429)
    if request.method == "POST" and form.is_valid():
        _signup_usage(request, increment=True)
        user = services.user_create(
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password1"],
            display_name=form.cleaned_data["display_name"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_display_name()}!")
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any]
) -> HttpResponse:
    """django-axes' answer to a login refused by its lockout (``AXES_LOCKOUT_CALLABLE``).

    The login page again (the admin's for the admin), with the reason and the
    wait, answered 429. The wait runs from the last failed attempt of this
    address or username.
    """
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    last = AccessAttempt.objects.filter(
        Q(ip_address=client_ip(request)) | Q(username=username)
    ).aggregate(last=Max("attempt_time"))["last"]
    cooloff = settings.AXES_COOLOFF_TIME
    wait = cooloff.total_seconds()
    if last is not None:
        wait = max(1.0, (last + cooloff - timezone.now()).total_seconds())
    detail = (
        f"Too many failed logins for this account or from your address. "
        f"Logging in is blocked for now: try again in {limits.wait_text(wait)}."
    )
    form = LockedOutForm(request, username=username, detail=detail)
    if request.path == reverse("admin:login"):
        context = {**admin.site.each_context(request), "form": form, "title": "Log in"}
        context["next"] = _safe_next(request)
        response = render(request, "admin/login.html", context, status=429)
    else:
        context = {"form": form, "next": _safe_next(request)}
        response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(int(wait) + 1)
    return response


@login_required
@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """The rooms, most recently active first, and the form that creates one."""
    form = RoomForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            limits.room_create_check(user=_user(request))
            room = services.room_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                granularity=form.cleaned_data["granularity"],
                created_by=_user(request),
            )
        except ClientError as error:
            form.add_client_error(error)  # rate_limited: above the form, with the wait
            status = 429 if error.code == "rate_limited" else 200
        else:
            limits.room_created(user=_user(request))
            return redirect("room", slug=room.slug)
    context = {"rooms": room_list(), "form": form}
    return render(request, "messages_app/home.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def room(request: HttpRequest, slug: str) -> HttpResponse:
    """A room: its newest messages rendered here, then kept live by ``js/room.js``.

    A POST is the composer of a browser without JavaScript: it posts and reloads.
    """
    room = get_object_or_404(Room, slug=slug)
    form = PostForm(request.POST or None)
    limited = False
    if request.method == "POST" and form.is_valid():
        try:
            limits.post_allow(user=_user(request))
            services.message_post(room=room, author=_user(request), body=form.cleaned_data["body"])
        except ClientError as error:
            form.add_error("body", error.detail)
            limited = error.code == "rate_limited"
        else:
            return HttpResponseRedirect(request.path)
    rows = room_snapshot(room=room)
    status = 429 if limited else 400 if form.errors else 200
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
