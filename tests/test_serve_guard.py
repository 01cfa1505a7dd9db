"""Who may call ``lrformer serve`` (:class:`lrformer.serving.guard.Guard`): the Host check against
DNS rebinding, the Origin / Sec-Fetch-Site checks against cross-site requests, the token, and the
security headers on every response, on a tiny Starlette application of its own."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from lrformer.serving.guard import Guard, host_name  # noqa: E402

STATIC = Path(__file__).resolve().parent.parent / "lrformer" / "serving" / "static"
URL = "http://127.0.0.1:8000"
TOKEN = "s3cret-Token_42"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


async def _page(request):
    return PlainTextResponse("page")


async def _health(request):
    return JSONResponse({"status": "ok"})


async def _predict(request):
    return JSONResponse({"got": len(await request.body())})


async def _framed(request):  # an answer that sets one of the security headers itself
    return PlainTextResponse("framed", headers={"X-Frame-Options": "SAMEORIGIN"})


def _client(host="127.0.0.1", allow_hosts=(), token=None, base_url=URL) -> TestClient:
    app = Starlette(
        routes=[
            Route("/", _page),
            Route("/health", _health),
            Route("/predict", _predict, methods=["POST"]),
            Route("/framed", _framed),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    return TestClient(Guard(app, host, allow_hosts, token), base_url=base_url)


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


@pytest.mark.parametrize(
    "value, name",
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("LocalHost.:8000", "localhost"),
        ("evil.example", "evil.example"),
        ("a:b", None),
        ("[::1", None),
        ("user@evil.example", None),
        ("evil.example/x", None),
        ("", None),
    ],
)
def test_host_name(value, name):
    assert host_name(value) == name


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST.", "127.0.0.1"])
def test_loopback_bind_allows_the_loopback_names(host):
    response = _client().get("/", headers={"Host": host})
    assert response.status_code == 200 and response.text == "page"


def test_a_foreign_host_is_refused_with_the_fix():
    response = _client().get("/", headers={"Host": "evil.example"})
    assert _error(response, 403) == (
        "Host 'evil.example' is not this server's address: open http://127.0.0.1:8000, "
        "or start the server with --allow-host evil.example"
    )


def test_a_rebinding_name_with_the_port_is_refused():
    response = _client().post("/predict", content=b"x", headers={"Host": "rebind.attacker.example:8000"})
    assert "Host 'rebind.attacker.example:8000' is not this server's address" in _error(response, 403)
    assert "--allow-host rebind.attacker.example" in response.json()["error"]


def test_testserver_is_refused_unless_allowed():
    assert _client(base_url="http://testserver").get("/").status_code == 403
    allowed = _client(allow_hosts=("testserver",), base_url="http://testserver")
    assert allowed.get("/").status_code == 200


def test_a_malformed_or_repeated_host_is_refused():
    response = _client().get("/", headers={"Host": "127.0.0.1:80x"})
    assert _error(response, 403) == "Host '127.0.0.1:80x' is not a host name: open http://127.0.0.1:8000"
    app = _client().app

    async def run(headers):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": headers}
        scope["server"] = ("127.0.0.1", 8000)
        await app(scope, receive, send)
        return sent

    twice = asyncio.run(run([(b"host", b"127.0.0.1"), (b"host", b"evil.example")]))
    assert twice[0]["status"] == 400 and twice[1]["body"] == b'{"error": "the request has 2 Host headers: send one"}'
    missing = asyncio.run(run([]))  # HTTP/1.0 without Host: refused
    assert missing[0]["status"] == 403
    assert (
        missing[1]["body"]
        == b'{"error": "the request has no Host header: send HTTP/1.1 with Host, as to http://127.0.0.1:8000"}'
    )


def test_a_specific_address_allows_itself_and_the_loopback_names():
    client = _client(host="192.168.1.20", base_url="http://192.168.1.20:8000")
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "localhost:8000"}).status_code == 200
    response = client.get("/", headers={"Host": "192.168.1.21:8000"})
    assert _error(response, 403).startswith(
        "Host '192.168.1.21:8000' is not this server's address: open http://192.168.1.20:8000,"
    )


def test_a_wildcard_bind_allows_any_ip_literal_and_this_machines_names():
    import socket

    client = _client(host="0.0.0.0")
    for host in ["10.1.2.3:8000", "[fe80::1]:8000", "[2001:db8::7]", "localhost", socket.gethostname()]:
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    response = client.get("/", headers={"Host": "evil.example:8000"})
    assert _error(response, 403) == (
        "Host 'evil.example:8000' is not this server's address: open http://<this machine's address>:8000, "
        "or start the server with --allow-host evil.example"
    )
    assert _client(host="::").get("/", headers={"Host": "[::1]:8000"}).status_code == 200


def test_the_allow_list_and_the_star():
    client = _client(allow_hosts=("Seg.Example.",))
    assert client.get("/", headers={"Host": "seg.example:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "other.example"}).status_code == 403
    star = _client(allow_hosts=("*",))
    assert star.get("/", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("origin", [URL, "http://localhost:8000", "https://127.0.0.1", "http://[::1]:8000"])
def test_a_page_of_this_server_may_post(origin):
    response = _client().post("/predict", content=b"abc", headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 200 and response.json() == {"got": 3}


def test_a_cross_site_origin_is_refused():
    response = _client().post("/predict", content=b"abc", headers={"Origin": "https://evil.example"})
    assert _error(response, 403) == (
        "Origin 'https://evil.example' is another site, whose pages may not call this server: "
        "open the page at http://127.0.0.1:8000, or start the server with --allow-host evil.example"
    )
    allowed = _client(allow_hosts=("evil.example",))
    assert allowed.post("/predict", content=b"abc", headers={"Origin": "https://evil.example"}).status_code == 200


@pytest.mark.parametrize(
    "origin", ["null", "file://", "ftp://127.0.0.1", "chrome-extension://abc", "http://127.0.0.1/x"]
)
def test_an_origin_that_is_not_a_web_page_of_this_server_is_refused(origin):
    response = _client().post("/predict", content=b"abc", headers={"Origin": origin})
    assert _error(response, 403) == (
        f"Origin {origin!r} is not a web page of this server: open the page at http://127.0.0.1:8000"
    )


def test_no_origin_is_fine_and_sec_fetch_site_cross_site_is_refused():
    assert _client().post("/predict", content=b"abc").status_code == 200  # curl, a script
    response = _client().post("/predict", content=b"abc", headers={"Sec-Fetch-Site": "cross-site"})
    assert _error(response, 403) == (
        "a page of another site may not call this server (Sec-Fetch-Site: cross-site): open http://127.0.0.1:8000"
    )
    assert _client().get("/", headers={"Sec-Fetch-Site": "none"}).status_code == 200  # typed in the address bar


def test_without_the_token_401_names_the_fix_and_never_echoes_it():
    client = _client(token=TOKEN)
    for response in [client.get("/"), client.post("/predict", content=b"x"), client.get("/static/app.js")]:
        assert _error(response, 401) == (
            "this server needs its token: open the page as http://127.0.0.1:8000/?token=..., "
            "or send Authorization: Bearer ..."
        )
        assert response.headers["www-authenticate"] == "Bearer"
        assert "set-cookie" not in response.headers
    wrong = client.get("/", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and TOKEN not in wrong.text and "nope" not in wrong.text


def test_health_is_open_without_the_token():
    client = _client(token=TOKEN)
    assert client.get("/health").json() == {"status": "ok"}
    assert client.post("/health").status_code == 401  # only GET / HEAD are open


def test_the_token_by_header_cookie_or_query():
    client = _client(token=TOKEN)
    assert client.post("/predict", content=b"ab", headers={"Authorization": f"Bearer {TOKEN}"}).json() == {"got": 2}
    assert client.post("/predict", content=b"ab", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert client.post("/predict", content=b"ab", headers={"Cookie": f"a=b; lrformer_token={TOKEN}"}).status_code == 200
    assert client.post(f"/predict?token={TOKEN}", content=b"ab").status_code == 200
    assert client.post("/predict", content=b"ab", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.post("/predict", content=b"ab", headers={"Cookie": f"other={TOKEN}"}).status_code == 401


def test_a_wrong_token_of_the_same_length_is_refused(monkeypatch):
    import hmac

    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    same_length = "s3cret-Token_43"
    assert len(same_length) == len(TOKEN)
    client = _client(token=TOKEN)
    assert client.get("/", headers={"Authorization": f"Bearer {same_length}"}).status_code == 401
    assert client.get(f"/?token={same_length}").status_code == 401
    assert (same_length.encode(), TOKEN.encode()) in compared  # compared in constant time


def test_opening_the_page_with_the_token_sets_the_cookie_the_page_then_sends():
    client = _client(token=TOKEN)
    opened = client.get(f"/?token={TOKEN}")
    assert opened.status_code == 200 and opened.text == "page"
    assert opened.headers["set-cookie"] == f"lrformer_token={TOKEN}; HttpOnly; SameSite=Strict; Path=/"
    # the client keeps the cookie, as the browser does: the page's own requests then carry it
    assert client.post("/predict", content=b"abc").json() == {"got": 3}
    assert client.get("/static/app.js").status_code == 200
    assert "set-cookie" not in client.post(f"/predict?token={TOKEN}", content=b"x").headers  # GET only
    special = _client(token="a b;c=d")  # a token that is not cookie-safe is percent-encoded
    assert special.get("/?token=a%20b%3Bc%3Dd").headers["set-cookie"].startswith("lrformer_token=a%20b%3Bc%3Dd;")
    assert special.get("/").status_code == 200


def test_the_security_headers_on_every_response():
    client = _client(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    responses = {
        "200": client.get("/", headers=auth),
        "health": client.get("/health"),
        "static": client.get("/static/app.js", headers=auth),
        "404": client.get("/nowhere", headers=auth),
        "403": client.get("/", headers={"Host": "evil.example", **auth}),
        "401": client.get("/"),
    }
    assert [r.status_code for r in responses.values()] == [200, 200, 200, 404, 403, 401]
    assert responses["static"].headers["content-type"].startswith("text/javascript")
    for kind, response in responses.items():
        assert response.headers["content-security-policy"] == CSP, kind
        assert response.headers["x-content-type-options"] == "nosniff", kind
        assert response.headers["x-frame-options"] == "DENY", kind
        assert response.headers["referrer-policy"] == "no-referrer", kind
        assert response.headers["cross-origin-resource-policy"] == "same-origin", kind
    framed = _client().get("/framed")
    assert framed.headers.get_list("x-frame-options") == ["SAMEORIGIN"]  # the application's own, not doubled


def test_lifespan_passes_through():
    events = []

    async def lifespan(app):
        events.append("started")
        yield
        events.append("stopped")

    from contextlib import asynccontextmanager

    app = Starlette(routes=[Route("/", _page)], lifespan=asynccontextmanager(lifespan))
    with TestClient(Guard(app, "127.0.0.1"), base_url=URL) as client:
        assert client.get("/").status_code == 200
    assert events == ["started", "stopped"]


def test_the_page_needs_nothing_the_csp_forbids():
    """No inline script, event handler, style element or attribute: CSP ``script-src 'self';
    style-src 'self'`` would block them (``element.style.x = ...`` from app.js is allowed)."""
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/static/app.js">']
    assert not re.search(r"\son[a-z]+\s*=", page)
    assert not re.search(r"<style\b|\sstyle\s*=", page)
    assert not re.search(r"javascript:", page)
    script = (STATIC / "app.js").read_text()
    assert not re.search(
        r"\beval\(|new Function|innerHTML|setAttribute\(\s*[\"']on|setAttribute\(\s*[\"']style", script
    )
    assert re.findall(r"fetch\(\s*([^,)]+)", script) == ['"/model"', '"/predict?format=png"']  # same origin only
