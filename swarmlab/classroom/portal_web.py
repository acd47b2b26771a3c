"""What every answer of the portal shares: who is asking (the token gate), its security
headers, the reading of a JSON body, and whether a browser's connection is still there."""

from __future__ import annotations

import socket

from aiohttp import web

TCP_ESTABLISHED = 1  # tcp_info's state (linux/tcp_states.h)
FORBIDDEN_TEXT = "403 forbidden\n"  # a wrong token, a missing one, or a page that is not there

# Every page and answer: never cached, never framed, no token leaks in a Referer, and only the
# portal's own scripts (styles may be inline: xterm.js sets them).
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


def peer_gone(transport) -> bool:
    """Whether the browser's TCP connection is closing. While a flood waits, nothing reads the
    socket, so its end of file is never seen: the kernel's state of the connection is."""
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    try:
        return sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_ESTABLISHED
    except OSError:
        return True


async def json_body(request: web.Request) -> dict | None:
    """The request's JSON object, or None for anything else (never a traceback)."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def too_soon(what: str, wait: float) -> web.Response:
    """A rate limit's refusal: 429, why, and when to ask again (in the text and Retry-After)."""
    return web.json_response({"error": f"{what}: try again in {wait:.0f} s"}, status=429,
                             headers={"Retry-After": f"{max(1, round(wait))}"})


async def security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, aiohttp's own errors and the terminals' websockets included."""
    response.headers.update(SECURITY_HEADERS)


def guess_limit(addresses):
    """A middleware: an address that named no valid token `guesses_per_minute` times in a
    minute waits before it may try again (429), whatever it asks under /s/ or /i/."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        if not request.path.startswith(("/s/", "/i/")):
            return await handler(request)
        address = request.remote or "?"
        wait = addresses.guessing(address)
        if wait > 0:
            return too_soon("too many requests with no valid token from your address", wait)
        response = await handler(request)
        if response.status == 403:
            addresses.guessed(address)
        return response
    return middleware


def forbidden() -> web.Response:
    return web.Response(status=403, text=FORBIDDEN_TEXT)


def token_gate(lab_of, is_instructor):
    """A middleware, the one place a token is checked: a request under /s/<token> reaches its
    handler with the student's lab as request["lab"], one under /i/<token> only with the
    instructor's token; a wrong or missing token, or a place that is not there, gets the same
    bare 403, whatever the route table holds. A known place asked with the wrong method: 405,
    whatever the token."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        if not request.path.startswith(("/s/", "/i/")):
            return await handler(request)
        refused = request.match_info.http_exception
        if refused is not None:
            return await handler(request) if refused.status == 405 else forbidden()
        token = request.match_info.get("token", "")
        if request.path.startswith("/s/"):
            request["lab"] = lab_of(token)
            if request["lab"] is None:
                return forbidden()
        elif not is_instructor(token):
            return forbidden()
        return await handler(request)
    return middleware
