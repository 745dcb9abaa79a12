"""Security headers Django 5.2 does not set by itself."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class ContentSecurityPolicyMiddleware:
    """Send a Content-Security-Policy that forbids inline and third-party script.

    Whatever a user or the model writes is sanitised before it reaches the DOM;
    this is the second wall: even markup that slipped through cannot run script
    (no inline ``<script>``, no ``on…=`` handlers, no ``javascript:`` URLs), load
    plugins, or frame the site. WebSockets may connect back to this host only.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            host = request.get_host()
            response["Content-Security-Policy"] = "; ".join(
                [
                    "default-src 'self'",
                    "script-src 'self'",
                    "style-src 'self'",
                    "img-src 'self' data: https:",
                    "font-src 'self'",
                    f"connect-src 'self' ws://{host} wss://{host}",
                    "object-src 'none'",
                    "base-uri 'self'",
                    "form-action 'self'",
                    "frame-ancestors 'none'",
                ]
            )
        response.setdefault("Referrer-Policy", "same-origin")
        response.setdefault("X-Content-Type-Options", "nosniff")
        return response
