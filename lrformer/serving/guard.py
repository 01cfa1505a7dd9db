"""Who may call ``lrformer serve``: an ASGI middleware in front of the application.

:class:`Guard` refuses, before the application sees it, an HTTP request

* whose ``Host`` is not a name of this server (DNS rebinding: a site whose name now resolves to
  127.0.0.1 would otherwise read the API from the visitor's browser): 403;
* sent by a page of another site (CSRF: any page can POST a form to 127.0.0.1): an ``Origin``
  that is not ``http(s)://`` + an allowed host, ``Origin: null``, or ``Sec-Fetch-Site:
  cross-site``: 403 (no ``Origin`` at all, as from curl or a script, is fine);
* without the server's token, when it has one (every request but ``GET /health``): 401.

A refusal is JSON ``{"error": "..."}`` naming the problem and the fix; the token is never
echoed. Every response, refusals and static files included, carries :data:`SECURITY_HEADERS`
(a header the application set itself is kept). Lifespan scopes pass straight through; a
WebSocket handshake gets the same checks (closed with code 1008 when refused).

Allowed host names (case-insensitive, a trailing dot ignored, the port not compared): the
loopback names ``localhost``, ``127.0.0.1``, ``::1`` and the bound ``host`` itself; for a wildcard
bind (``0.0.0.0``, ``::``) instead any IP literal, ``localhost``, and this machine's host name
and FQDN; always the ``allow_hosts``, where ``"*"`` allows any host (and a missing ``Host``).

A request without ``Host`` (HTTP/1.0) is refused unless ``allow_hosts`` holds ``"*"``: every
HTTP/1.1 client sends one. Tests with Starlette's ``TestClient`` (which sends ``Host:
testserver``) pass ``allow_hosts=("testserver",)`` or ``base_url="http://127.0.0.1:8000"``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
from urllib.parse import parse_qs, quote, unquote

COOKIE = "lrformer_token"
"""The cookie carrying the token, set when the page is opened with ``?token=``."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
"""Added to every response that lacks them: no inline script or style, no framing, no sniffing."""

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
OPEN_PATHS = frozenset({("GET", "/health"), ("HEAD", "/health")})
"""Requests answered without the token (a health probe carries none)."""

_NAME = re.compile(r"[a-z0-9_.%:-]+")


def host_name(value: str) -> str | None:
    """The host of a ``Host`` value or of an origin's authority (``[::1]:8000`` → ``::1``):
    lower case, no port, no brackets, no trailing dot; ``None`` when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):  # an IPv6 literal: [::1] or [::1]:8000
        name, bracket, port = value[1:].partition("]")
        if not bracket or (port and not re.fullmatch(r":\d*", port)):
            return None
    elif value.count(":") > 1:  # a bare IPv6 literal (invalid in Host, but unambiguous when it parses)
        name = value if is_ip(value) else ""
    else:
        name, _, port = value.partition(":")
        if port and not port.isdigit():
            return None
    name = name.removesuffix(".")
    return name if _NAME.fullmatch(name) else None


def is_ip(name: str) -> bool:
    """Whether ``name`` is an IPv4 or IPv6 address literal (without brackets)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _shown(value: str) -> str:
    """A client's value quoted for a message, cut short."""
    return repr(value if len(value) <= 80 else value[:80] + "…")


class Guard:
    """ASGI middleware: the Host, Origin and token checks in front of ``app`` (see the module).

    Args:
        app: the ASGI application (``lrformer serve``'s Starlette application).
        host: the address the server is bound to (``--host``).
        allow_hosts: further host names allowed in ``Host`` and ``Origin`` (``--allow-host``);
            ``"*"`` allows any.
        token: when set, every request but ``GET /health`` must carry it: ``Authorization:
            Bearer <token>``, the cookie ``lrformer_token``, or ``?token=`` (a GET with it is
            answered with that cookie, ``HttpOnly; SameSite=Strict; Path=/``, so that the page's
            own requests carry it).
    """

    def __init__(self, app, host: str, allow_hosts: tuple[str, ...] = (), token: str | None = None) -> None:
        self.app, self.token = app, token
        bound = host_name(host) or host.strip().strip("[]").lower()
        self.wildcard = bound in WILDCARDS
        self.any_host = "*" in allow_hosts
        names = {name for name in map(host_name, allow_hosts) if name}
        if self.wildcard:
            names |= {"localhost"} | {n.lower().removesuffix(".") for n in (socket.gethostname(), socket.getfqdn())}
            self.page = "http://<this machine's address>"
        else:
            names |= LOOPBACK_NAMES | {bound}
            self.page = "http://" + (f"[{bound}]" if ":" in bound else bound)
        self.names = frozenset(names)

    def allows(self, name: str) -> bool:
        """Whether ``name`` (as :func:`host_name` gives it) is one of this server's host names."""
        return self.any_host or name in self.names or (self.wildcard and is_ip(name))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        server = scope.get("server")
        url = self.page + (f":{server[1]}" if server and server[1] else "")
        problem = self.problem(headers, url) or self.missing_token(scope, headers, url)
        if scope["type"] == "websocket":
            if problem:
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
            else:
                await self.app(scope, receive, send)
            return
        extra = []
        if problem is None and self.token and scope["method"] == "GET" and self._matches(_query_tokens(scope)):
            cookie = f"{COOKIE}={quote(self.token, safe='')}; HttpOnly; SameSite=Strict; Path=/"
            extra.append((b"set-cookie", (cookie + ("; Secure" if scope.get("scheme") == "https" else "")).encode()))

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                sent = list(message.get("headers", []))
                present = {key.lower() for key, _ in sent}
                sent += [(key, value) for key, value in SECURITY_HEADERS if key not in present]
                message = {**message, "headers": sent + extra}
            await send(message)

        if problem is None:
            await self.app(scope, receive, send_with_headers)
            return
        status, text = problem
        body = json.dumps({"error": text}).encode()
        refusal = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            refusal.append((b"www-authenticate", b"Bearer"))
        await send_with_headers({"type": "http.response.start", "status": status, "headers": refusal})
        await send_with_headers({"type": "http.response.body", "body": body})

    def problem(self, headers: dict[str, list[str]], url: str) -> tuple[int, str] | None:
        """``(status, message)`` when ``Host``, ``Origin`` or ``Sec-Fetch-Site`` refuse the request."""
        hosts = headers.get("host", [])
        if len(hosts) > 1:
            return 400, f"the request has {len(hosts)} Host headers: send one"
        if not hosts and not self.any_host:
            return 403, f"the request has no Host header: send HTTP/1.1 with Host, as to {url}"
        for value in hosts:
            name = host_name(value)
            if name is None:
                return 403, f"Host {_shown(value)} is not a host name: open {url}"
            if not self.allows(name):
                return 403, (
                    f"Host {_shown(value)} is not this server's address: open {url}, "
                    f"or start the server with --allow-host {name}"
                )
        for origin in headers.get("origin", []):
            scheme, sep, rest = origin.strip().partition("://")
            name = host_name(rest) if sep and scheme.lower() in ("http", "https") else None
            if name is None:
                return 403, f"Origin {_shown(origin)} is not a web page of this server: open the page at {url}"
            if not self.allows(name):
                return 403, (
                    f"Origin {_shown(origin)} is another site, whose pages may not call this server: "
                    f"open the page at {url}, or start the server with --allow-host {name}"
                )
        if any(value.strip().lower() == "cross-site" for value in headers.get("sec-fetch-site", [])):
            return 403, f"a page of another site may not call this server (Sec-Fetch-Site: cross-site): open {url}"
        return None

    def missing_token(self, scope, headers: dict[str, list[str]], url: str) -> tuple[int, str] | None:
        """``(401, message)`` when the server has a token and the request does not carry it."""
        if not self.token or (scope.get("method", "GET"), scope["path"]) in OPEN_PATHS:
            return None
        offered = _query_tokens(scope)
        for value in headers.get("authorization", []):
            scheme, _, credential = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                offered.append(credential.strip())
        for value in headers.get("cookie", []):
            for pair in value.split(";"):
                key, _, cookie = pair.strip().partition("=")
                if key == COOKIE:
                    offered.append(unquote(cookie.strip('"')))
        if self._matches(offered):
            return None
        return 401, (
            f"this server needs its token: open the page as {url}/?token=..., or send Authorization: Bearer ..."
        )

    def _matches(self, offered: list[str]) -> bool:
        """Whether one of ``offered`` is the token (compared in constant time)."""
        expected = self.token.encode()
        return any(hmac.compare_digest(value.encode(), expected) for value in offered)


def _query_tokens(scope) -> list[str]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get("token", [])
