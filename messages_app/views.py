"""The HTML pages. Thin: forms validate, ``services`` write, ``selectors`` read,
``permissions`` decide."""

from __future__ import annotations

import logging
from typing import Any

import redis
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME, login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Max, Q
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST
from django_ratelimit.core import get_usage

from chatsite.client_ip import client_ip, client_ip_key
from messages_app import export, limits, permissions, services
from messages_app.forms import (
    LockedOutForm,
    PostForm,
    RoomAssistantSettingsForm,
    RoomForm,
    SignupForm,
)
from messages_app.models import MemberRole, Message, Room, User, Visibility
from messages_app.selectors import (
    active_assistants,
    member_list,
    mention_candidates,
    reply_revisions,
    room_list,
    room_snapshot_page,
    usage_periods,
    usage_since,
)
from messages_app.services import ClientError

logger = logging.getLogger(__name__)

# The session key that keeps an invite token across the login or signup detour.
INVITE_SESSION_KEY = "chat_invite_token"


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


def _held_invite(request: HttpRequest) -> Room | None:
    """The room of the valid invite this visitor holds (kept in the session), if any."""
    token = request.session.get(INVITE_SESSION_KEY)
    if not token:
        return None
    try:
        return services.invite_room(token=token)
    except ClientError:
        return None


def signup_open_for(request: HttpRequest) -> bool:
    """Whether this visitor may sign up now (``CHAT_SIGNUP``)."""
    mode = settings.CHAT_SIGNUP
    if mode == "open":
        return True
    if mode == "invite":
        return _held_invite(request) is not None
    return False


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and sign in with it, then go where the visitor was going.

    With ``CHAT_SIGNUP=invite`` only a visitor holding a valid room invite may
    sign up (and joins that room); with ``closed`` there is no signup page. At
    most ``CHAT_SIGNUPS_PER_HOUR`` accounts per client address and hour; only
    accounts made count (a form with a mistake costs nothing).
    """
    if settings.CHAT_SIGNUP == "closed":
        raise Http404("Signup is closed on this site.")
    next_url = _safe_next(request)
    if request.user.is_authenticated:
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    if not signup_open_for(request):
        return render(request, "registration/signup_invite_only.html", status=403)
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
        try:
            user = services.user_create(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                display_name=form.cleaned_data["display_name"],
            )
        except ClientError as error:
            form.add_error(None, error.detail)
        else:
            _signup_usage(request, increment=True)
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


def invite(request: HttpRequest, token: str) -> HttpResponse:
    """An invite link: signed in, join and go to the room; signed out, log in or sign up.

    A wrong, replaced or expired token shows why and changes nothing.
    """
    try:
        room = services.invite_room(token=token)
    except ClientError as error:
        return render(request, "messages_app/invite_error.html", {"error": error}, status=404)
    if not request.user.is_authenticated:
        # Kept in the session too: the signup page of CHAT_SIGNUP=invite needs it.
        request.session[INVITE_SESSION_KEY] = token
        return render(
            request,
            "messages_app/invite_signed_out.html",
            {"room": room, "next": request.path, "signup_open": signup_open_for(request)},
        )
    try:
        room, joined = services.invite_accept(token=token, user=_user(request))
    except ClientError as error:
        return render(request, "messages_app/invite_error.html", {"error": error}, status=403)
    request.session.pop(INVITE_SESSION_KEY, None)
    if joined:
        messages.success(request, f"You joined {room.name}.")
    return redirect("room", slug=room.slug)


@login_required
@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """The rooms this user may find, most recently active first, and the form that makes one."""
    form = RoomForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            limits.room_create_check(user=_user(request))
            room = services.room_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                granularity=form.cleaned_data["granularity"],
                visibility=form.cleaned_data["visibility"] or Visibility.PUBLIC,
                created_by=_user(request),
            )
        except ClientError as error:
            form.add_client_error(error)  # rate_limited: above the form, with the wait
            status = 429 if error.code == "rate_limited" else 200
        else:
            limits.room_created(user=_user(request))
            return redirect("room", slug=room.slug)
    rooms = room_list(request.user)
    return render(request, "messages_app/home.html", {"rooms": rooms, "form": form}, status=status)


def _visible_room(request: HttpRequest, slug: str) -> tuple[Room, str | None]:
    """The room and this user's role in it; 404 when it does not exist *for them*."""
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        raise Http404("No such room.")
    role = permissions.role_of(request.user, room)
    if not permissions.can_see_room(request.user, room, role):
        raise Http404("No such room.")
    return room, role


def _room_context(request: HttpRequest, room: Room, role: str | None) -> dict[str, Any]:
    user = request.user
    invite_url = ""
    can_invite = permissions.can_invite(user, room, role)
    if can_invite and room.invite_token:
        invite_url = request.build_absolute_uri(reverse("invite", args=[room.invite_token]))
    return {
        "room": room,
        "role": role,
        "members": member_list(room_id=room.pk),
        "can_invite": can_invite,
        "invite_url": invite_url,
        "can_manage_roles": permissions.can_manage_roles(user, room, role),
        "can_remove": role in permissions.MANAGERS or permissions.is_staff(user),
        "is_moderator": role == MemberRole.MODERATOR and not permissions.is_staff(user),
        "can_leave": permissions.can_leave(user, room, role),
        "can_configure_assistants": permissions.can_configure_assistants(user, room, role),
        "roles": MemberRole.choices,
        "typing_interval": settings.CHAT_TYPING_INTERVAL_SECONDS,
    }


@login_required
@require_http_methods(["GET", "POST"])
def room(request: HttpRequest, slug: str) -> HttpResponse:
    """A room: its newest messages rendered here, then kept live by ``js/room.js``.

    Opening a public room joins it. A POST is the composer of a browser without
    JavaScript: it posts and reloads.
    """
    room, role = _visible_room(request, slug)
    if role is None and permissions.can_join(request.user, room, role):
        services.membership_join(room=room, user=_user(request))
        role = permissions.role_of(request.user, room)
    form = PostForm(request.POST or None)
    limited = False
    if request.method == "POST" and form.is_valid():
        try:
            if not permissions.can_post(request.user, room, role):
                raise ClientError("not_member", "You are not a member of this room.")
            limits.post_allow(user=_user(request))
            services.message_post(room=room, author=_user(request), body=form.cleaned_data["body"])
        except ClientError as error:
            form.add_error("body", error.detail)
            limited = error.code == "rate_limited"
        else:
            return HttpResponseRedirect(request.path)
    rows, has_more = room_snapshot_page(room=room)
    status = 429 if limited else 400 if form.errors else 200
    context = {
        **_room_context(request, room, role),
        "rows": rows,
        "has_more": has_more,
        "history_max_limit": settings.CHAT_HISTORY_MAX_LIMIT,
        "form": form,
        # The composer's @ suggestions and the handles the page highlights.
        "mention_candidates": mention_candidates(room=room),
        "assistant_handles": [a["handle"] for a in active_assistants()],
    }
    return render(request, "messages_app/room.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def room_settings(request: HttpRequest, slug: str) -> HttpResponse:
    """The room's settings for its assistants: owners, moderators and staff only."""
    room, role = _visible_room(request, slug)
    if not permissions.can_configure_assistants(request.user, room, role):
        raise PermissionDenied("Only the room's owners and moderators can change its settings.")
    initial = {
        "instructions": room.assistant_instructions,
        "context_messages": room.context_messages,
        "granularity": room.granularity,
    }
    form = RoomAssistantSettingsForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                services.room_assistant_settings_update(
                    room=room,
                    actor=_user(request),
                    instructions=form.cleaned_data["instructions"],
                    context_messages=form.cleaned_data["context_messages"],
                    granularity=form.cleaned_data["granularity"],
                )
            except ClientError as error:
                form.add_client_error(error)
            else:
                messages.success(request, "The room's assistant settings are saved.")
                return redirect("room", slug=room.slug)
        status = 400
    context = {
        "room": room,
        "form": form,
        "assistants": active_assistants(),
        "context_default": settings.GPT_CONTEXT_MESSAGES,
    }
    return render(request, "messages_app/room_settings.html", context, status=status)


def _readable_room(request: HttpRequest, slug: str) -> Room:
    """The room, when this user may read it; 404 otherwise (as the room page)."""
    room, role = _visible_room(request, slug)
    if not permissions.can_read(request.user, room, role):
        raise Http404("No such room.")
    return room


EXPORT_FORMATS = {
    "md": ("text/markdown; charset=utf-8", export.as_markdown),
    "json": ("application/json; charset=utf-8", export.as_json),
}


@login_required
@require_http_methods(["GET"])
async def room_export(request: HttpRequest, slug: str, fmt: str) -> HttpResponse:
    """The room's messages as a download (Markdown or JSON), streamed as it is read."""
    room = await sync_to_async(_readable_room)(request, slug)
    content_type, render_export = EXPORT_FORMATS[fmt]
    response = StreamingHttpResponse(
        (part.encode() async for part in render_export(room)), content_type=content_type
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="{room.slug}-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET"])
def room_members(request: HttpRequest, slug: str) -> HttpResponse:
    """The members panel alone: the room page reloads it when a ``members`` frame comes."""
    room, role = _visible_room(request, slug)
    if not permissions.can_read(request.user, room, role):
        raise Http404("No such room.")
    return render(request, "messages_app/_members.html", _room_context(request, room, role))


@login_required
@require_http_methods(["GET"])
def message_revisions(request: HttpRequest, slug: str, message_id: int) -> JsonResponse:
    """The earlier attempts of a reply (ReplyRevision rows), for the page's "‹ 1 / 3 ›".

    Members (and staff) of the room only; a message of another room, or none, is
    404 as a room the user may not read. A deleted reply's attempts have no text.
    """
    room = _readable_room(request, slug)
    message = Message.objects.filter(pk=message_id, room=room).first()
    if message is None:
        raise Http404("No such message in this room.")
    response = JsonResponse(
        {
            "id": message.pk,
            "revisions": reply_revisions(message=message),
            "current": message.revision_count + 1,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET"])
def usage(request: HttpRequest) -> HttpResponse:
    """The signed-in user's own @gpt usage: today, this month (in TIME_ZONE), the
    last 24 hours against GPT_DAILY_TOKENS_PER_USER, all time.

    Counted by ``selectors.usage_since``, the source the daily budget reads, so
    the page and the limit agree.
    """
    user = _user(request)
    now = timezone.now()
    periods = usage_periods(now)
    budget = settings.GPT_DAILY_TOKENS_PER_USER
    day = usage_since(user_id=user.pk, since=now - limits.BUDGET_WINDOW)
    context = {
        "today": usage_since(user_id=user.pk, since=periods["today"]),
        "month": usage_since(user_id=user.pk, since=periods["month"]),
        "total": usage_since(user_id=user.pk),
        "last_day": day,
        "budget": budget,
        "budget_left": max(0, budget - day.total_tokens) if budget else None,
        "budget_percent": min(100, round(100 * day.total_tokens / budget)) if budget else None,
        "today_start": periods["today"],
        "month_start": periods["month"],
        "time_zone": settings.TIME_ZONE,
    }
    return render(request, "messages_app/usage.html", context)


def _int(value: str | None) -> int | str | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value  # the service names it invalid


@login_required
@require_POST
def room_invite_reset(request: HttpRequest, slug: str) -> HttpResponse:
    """Make the room's invite link, or replace (revoke) it with a new one."""
    room, _role = _visible_room(request, slug)
    try:
        services.room_invite_reset(room=room, actor=_user(request))
    except ClientError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, "A new invite link is ready; any older link no longer works.")
    return redirect("room", slug=room.slug)


@login_required
@require_POST
def room_member_action(request: HttpRequest, slug: str) -> HttpResponse:
    """The members panel's buttons: set a role, remove a member, leave."""
    room, _role = _visible_room(request, slug)
    user = _user(request)
    action = request.POST.get("action")
    target = _int(request.POST.get("user_id"))
    try:
        if action == "role":
            services.membership_set_role(
                room=room, user_id=target, role=request.POST.get("role"), actor=user
            )
            messages.success(request, "Role changed.")
        elif action == "remove":
            services.membership_remove(room=room, user_id=target, actor=user)
            messages.success(request, "Member removed.")
        elif action == "leave":
            services.membership_leave(room=room, user=user)
            messages.success(request, f"You left {room.name}.")
            return redirect("home")
        else:
            raise ClientError("invalid_frame", "Unknown action.")
    except ClientError as error:
        messages.error(request, error.detail)
        return redirect("room", slug=room.slug)
    return redirect("room", slug=room.slug)


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # noqa: S101 - behind login_required
    return user
