"""Issue 8, findings 6 and 8: terminal injection, and the defaults that let strangers in.

Attackers are written here: a peer whose name, chat lines and file name carry terminal
control sequences (through a relay that stamps any name, as a hostile or classic server
may), a client whose display name would forge log lines, web pages of another origin,
tokens that would never expire. Everything runs as real processes on 127.0.0.1, except the
server ``python -m peer`` hosts in-process, which is started the way the CLI starts it.
"""

import cv2  # noqa: F401  -- before av: see FIELD-NOTES on OpenCV's import-order hang

import asyncio
import hashlib
import hmac
import io
import logging
import re
import subprocess
import sys
import time
import unicodedata

import aiohttp
import pytest
import socketio
from hypothesis import given, settings
from hypothesis import strategies as st

import peer
from conftest import LOCAL, Process, Server, child_env, free_port, wait_healthy
from peer.api import ChatMessage
from signaling import embedded_server
from signaling.server import SECURITY_HEADERS
from signaling.text import PrintableFormatter, is_printable, printable
from signaling.token import MAX_TTL, make_token
from test_browser import join as join_page
from test_signaling_server import Client

TIMEOUT = 5.0


# printable: the one function every remote string passes through before a terminal or a log

BIDI_CONTROLS = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}


def dangerous(char: str) -> bool:
    """What a terminal or a reader of logs must never get raw, from Unicode's own tables."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") or char in BIDI_CONTROLS


def test_printable_escapes_exactly_the_dangerous_characters():
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert is_printable(char) != dangerous(char), f"U+{code:04X} {unicodedata.name(char, '')}"
        assert (printable(char) == char) == is_printable(char)


def test_printable_shows_escapes_people_can_read():
    assert printable("\x1b]0;title\x07") == r"\x1b]0;title\x07"
    assert printable("\x1b]52;c;cHduZWQ=\x1b\\") == "\\x1b]52;c;cHduZWQ=\\x1b\\"  # ST keeps its backslash
    assert printable("\x9b2J\x7f\x00") == r"\x9b2J\x7f\x00"
    assert printable("old\rnew\nline\ttab") == r"old\rnew\nline\ttab"
    assert printable("gnp.\u202eexe \u2028\u2029 \ud800") == r"gnp.\u202eexe \u2028\u2029 \ud800"
    for ordinary in ("Zoë", "日本語", "שלום", "😀", "👨\u200d👩\u200d👧", "🏴\U000e0067\U000e0062\U000e007f", r"C:\path", ""):
        assert printable(ordinary) == ordinary


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_printable_leaves_one_safe_line(text):
    shown = printable(text)
    assert not any(dangerous(char) for char in shown)
    assert len(shown.splitlines()) <= 1  # str.splitlines knows every line break Unicode has
    assert (shown == text) == is_printable(text)
    shown.encode("utf-8")  # no lone surrogate left to make print() raise


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8")).filter(lambda text: not any(map(dangerous, text))))
def test_printable_keeps_ordinary_text(text):
    assert printable(text) == text


def test_log_lines_cannot_be_forged():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(PrintableFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test-forge")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("%s joined", "mallory\nINFO alice left\x1b[2J")
        try:
            raise ValueError("bad\x1b]0;title\x07 value")
        except ValueError:
            log.exception("refused")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == r"WARNING mallory\nINFO alice left\x1b[2J joined"
    assert lines[1] == "ERROR refused" and lines[2].startswith("Traceback")  # tracebacks keep their lines
    assert lines[-1] == r"ValueError: bad\x1b]0;title\x07 value"
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()


# Terminal injection: a peer with a hostile name, chat lines and file name

# A server that stamps whatever name a client asks for: ours, with the name check taken out.
STAMPING_SERVER = """
import dataclasses, sys
from signaling import __main__ as main, protocol
honest = protocol.parse_join
def parse_join(payload):
    return dataclasses.replace(honest(dict(payload, name="x")), name=payload["name"])
protocol.parse_join = parse_join
sys.exit(main.main(sys.argv[1:]))
"""

HOSTILE_NAME = "\x1b]0;pwned-title\x07mallory\x1b[2J\nFORGED joined"
HOSTILE_NAME_SHOWN = r"\x1b]0;pwned-title\x07mallory\x1b[2J\nFORGED joined"
HOSTILE_LINES = {  # what the peer sends: what the victim's terminal must show instead
    "\x1b]52;c;cHduZWQ=\x07clipboard": r"\x1b]52;c;cHduZWQ=\x07clipboard",
    "\x1b[2J\x1b[Hcleared": r"\x1b[2J\x1b[Hcleared",
    "innocent\rOVERWRITTEN": r"innocent\rOVERWRITTEN",
    "\x9b31mred\x9b0m": r"\x9b31mred\x9b0m",
    "\x1b]0;title\x1b\\ bell\x07": r"\x1b]0;title\x1b\ bell\x07",
    "invoice_\u202egnp.exe": r"invoice_\u202egnp.exe",
    "one\u2028two\nFORGED line": r"one\u2028two\nFORGED line",
}
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@pytest.fixture
def stamping_server():
    port = free_port()
    server = Process([sys.executable, "-c", STAMPING_SERVER, "--host", LOCAL, "--port", str(port), "--room-size", "3"],
                     name="stamping-server")
    server.url = f"http://{LOCAL}:{port}"
    try:
        wait_healthy(server.url)
        yield server
    finally:
        server.stop()


async def test_a_peer_cannot_drive_the_terminal(stamping_server, processes, tmp_path):
    hostile_file = tmp_path / "out" / "\x1b]0;file-title\x07evil.txt"
    hostile_file.parent.mkdir()
    hostile_file.write_bytes(b"harmless contents\n")
    victim = processes.peer("--room", "inject", "--server", stamping_server.url, "--no-window", "--video", "none",
                            "--ice-host", LOCAL, "--downloads", str(tmp_path / "in"),
                            "-v", name="victim")  # -v: its log lines name the attacker too
    await asyncio.to_thread(victim.expect, "waiting for someone to join room inject")
    options = {"server": stamping_server.url, "ice_hosts": [LOCAL]}
    async with peer.join("inject", name=HOSTILE_NAME, **options) as mallory, \
            peer.join("inject", name="honest", **options) as honest:
        await asyncio.to_thread(victim.expect, "connected to honest;", 20)
        await asyncio.to_thread(victim.expect, re.escape(f"connected to {HOSTILE_NAME_SHOWN};"), 20)
        while sorted(member.name for member in mallory.connected) != ["honest", "victim"]:
            await asyncio.sleep(0.05)
        for line in HOSTILE_LINES:
            assert mallory.send_text(line) == 2
        await mallory.send_file(hostile_file, to=next(m for m in mallory.connected if m.name == "victim"))
        honest.send_text("still here")
        for shown in HOSTILE_LINES.values():
            await asyncio.to_thread(victim.expect, re.escape(f"[{HOSTILE_NAME_SHOWN}] {shown}") + "$")
        await asyncio.to_thread(victim.expect, r"^\[honest\] still here$")
        await asyncio.to_thread(victim.expect, r"^received .*evil\.txt from " + re.escape(HOSTILE_NAME_SHOWN))
        # The chat goes on both ways, with the attacker and the bystander.
        victim.send("hello to both")
        for room in (mallory, honest):
            await asyncio.wait_for(_heard(room, "hello to both"), TIMEOUT)
        # The honest bot (an API user) gets the raw text: showing it is the program's business.
        assert set(HOSTILE_LINES) <= set(await _heard(honest, "hello to both"))
    output = victim.output
    assert not RAW_CONTROL.search(output), repr(RAW_CONTROL.search(output))
    assert not [line for line in victim.lines if line.startswith(("FORGED", "OVERWRITTEN"))], output
    assert not [line for line in stamping_server.lines if line.startswith("FORGED")], stamping_server.output
    assert "\x1b" not in stamping_server.output
    assert re.search(re.escape(HOSTILE_NAME_SHOWN) + r" \(\S+\) joined inject", stamping_server.output)


async def _heard(room, last: str) -> list[str]:
    """The chat lines ``room`` received, up to ``last`` (waiting for it)."""
    lines = []
    async for event in room.events():  # with the history: it may have come already
        if isinstance(event, ChatMessage):
            lines.append(event.text)
            if event.text == last:
                return lines
    raise AssertionError(f"the room closed before {last!r} came")


# Display names that would forge log lines or drive terminals are refused by the server

BAD_NAMES = ["bob\n2026-11-30 12:00:00,000 signaling INFO FORGED alice joined demo", "bob\r", "\x1b[2Jbob",
             "bob\x07", "\x9b31mbob", "bob\x00", "bob\x7f", "\u202ebob", "bob\u2066", "bob\u2028FORGED", "\ud800"]


async def test_control_characters_in_names_are_refused(server):
    async with Client(server.url) as bystander_a, Client(server.url) as bystander_b, Client(server.url) as mallory:
        assert (await bystander_a.call("join", {"room": "names-bystanders", "name": "alice"}))["ok"]
        for name in BAD_NAMES:
            ack = await mallory.call("join", {"room": "names", "name": name})
            assert ack["ok"] is False and ack["code"] == "bad-name", (name, ack)
        joined = await mallory.call("join", {"room": "names", "name": "Zoë 😀 \u05e9\u05dc\u05d5\u05dd"})
        assert joined["ok"] and joined["name"] == "Zoë 😀 שלום"
        # Bystanders in another room join and relay as ever.
        assert (await bystander_b.call("join", {"room": "names-bystanders", "name": "bob"}))["ok"]
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        assert (await bystander_b.call("message", {"type": "offer", "sdp": sdp}))["ok"]
        assert (await bystander_a.expect("message"))["sdp"] == sdp
    await asyncio.to_thread(server.expect, "refused join from .*: name must not contain control characters")
    assert not [line for line in server.lines if "FORGED" in line], server.output


# CORS: any origin may connect to the public server, none with credentials; the server a peer
# hosts takes browser pages only from itself

async def _handshake(url: str, origin: str, method: str = "GET") -> aiohttp.ClientResponse:
    """The first request of a browser's Socket.IO connection (polling), or its preflight."""
    headers = {"Origin": origin}
    if method == "OPTIONS":
        headers["Access-Control-Request-Method"] = "GET"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{url}/socket.io/?EIO=4&transport=polling", headers=headers) as response:
            await response.read()
            return response


async def test_any_origin_without_credentials(server):
    for method in ("GET", "OPTIONS"):
        response = await _handshake(server.url, "http://evil.example", method)
        assert response.status == 200
        # '*' means pages from anywhere may use the server (it serves others' pages too): the
        # origin is echoed, but the browser is told to send no cookies or HTTP credentials.
        assert response.headers.get("Access-Control-Allow-Origin") == "http://evil.example"
        assert "Access-Control-Allow-Credentials" not in response.headers
    async with Client(server.url) as bystander:  # a non-browser client: nothing to check
        assert (await bystander.call("join", {"room": "cors", "name": "bot"}))["ok"]


async def test_named_origins_keep_credentials():
    named = Server("--allowed-origins", "http://good.example")
    try:
        good = await _handshake(named.url, "http://good.example")
        assert good.status == 200 and good.headers.get("Access-Control-Allow-Credentials") == "true"
        assert good.headers.get("Access-Control-Allow-Origin") == "http://good.example"
        evil = await _handshake(named.url, "http://evil.example")
        assert evil.status == 400 and "Access-Control-Allow-Origin" not in evil.headers
    finally:
        named.stop()


async def test_the_server_a_peer_hosts_takes_pages_only_from_itself():
    server = embedded_server()
    port = await server.start("0.0.0.0", 0)  # every interface, as the CLI does: the other machine connects
    url = f"http://{LOCAL}:{port}"
    try:
        for method in ("GET", "OPTIONS"):
            evil = await _handshake(url, "http://evil.example", method)
            assert evil.status == 400 and "Access-Control-Allow-Origin" not in evil.headers
        own = await _handshake(url, url)
        assert own.status == 200 and "Access-Control-Allow-Credentials" not in own.headers
        with pytest.raises(socketio.exceptions.ConnectionError):
            async with Client(url, headers={"Origin": "http://evil.example"}):
                pass
        async with Client(url, headers={"Origin": url}) as page, Client(url) as python_peer:
            for sio, name in ((page, "browser"), (python_peer, "peer")):
                assert (await sio.call("join", {"room": "hosted", "name": name}))["ok"]
    finally:
        await server.stop()


# Tokens: no empty secret, no token for ever

def test_an_empty_token_secret_is_refused_at_start():
    port = str(free_port())
    for args, env in ((["--token-secret", ""], child_env()), (["--token-secret", "  "], child_env()),
                      ([], child_env(SIGNALING_TOKEN_SECRET=""))):
        done = subprocess.run([sys.executable, "-m", "signaling", "--host", LOCAL, "--port", port, *args],
                              env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done
        assert done.stderr.count("\n") == 1 and "token secret" in done.stderr and "empty" in done.stderr, done.stderr
        assert done.stdout == ""


def _forged(secret: str, room: str, expiry: int) -> str:
    """A token as the documented formula makes it, whatever its expiry (make_token refuses)."""
    mac = hmac.new(secret.encode(), f"{room}\n{expiry}".encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


async def test_a_token_for_ever_is_refused():
    secret = "long-random-secret"
    guarded = Server("--token-secret", secret)
    try:
        async with Client(guarded.url) as mallory, Client(guarded.url) as invited:
            for expiry in (int(time.time() + 1e12), int(time.time()) + MAX_TTL + 120):
                ack = await mallory.call("join", {"room": "guarded", "token": _forged(secret, "guarded", expiry)})
                assert ack["ok"] is False and ack["code"] == "bad-token" and "7-day" in ack["error"], ack
            week = make_token(secret, "guarded", MAX_TTL - 60)
            assert (await invited.call("join", {"room": "guarded", "token": week}))["ok"]
    finally:
        guarded.stop()
    with pytest.raises(ValueError):
        make_token(secret, "guarded", 1e12)
    for ttl, code in (("1e12", 2), (str(MAX_TTL + 1), 2), ("0", 2), ("nan", 2), (str(MAX_TTL), 0)):
        done = subprocess.run([sys.executable, "-m", "signaling.token", "--secret", secret, "--room", "r", "--ttl", ttl],
                              env=child_env(), capture_output=True, text=True, timeout=30)
        assert done.returncode == code, (ttl, done)
        assert ("7 days" in done.stderr) if code else re.fullmatch(r"\d+\.[0-9a-f]{64}\n", done.stdout)


# The page: a CSP it works under, and the usual headers on every response

async def test_every_response_carries_the_security_headers(server):
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/web/app.js", "/web/style.css", "/web/socket.io.min.js", "/healthz", "/web/nothing",
                     "/socket.io/?EIO=4&transport=polling"):
            async with session.get(server.url + path) as response:
                await response.read()
                for header, value in SECURITY_HEADERS.items():
                    assert response.headers.get(header) == value, (path, header, dict(response.headers))
                assert response.status == (404 if path == "/web/nothing" else 200), path
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp


def test_the_page_works_under_its_csp(server, chromium):  # noqa: F811 -- chromium is the fixture imported above
    context = chromium.new_context()
    context.set_default_timeout(20000)
    page = context.new_page()
    console = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.add_init_script("window.violations = [];"
                         "document.addEventListener('securitypolicyviolation',"
                         " (e) => window.violations.push(e.effectiveDirective + ' ' + e.blockedURI));")
    try:
        join_page(page, server.url, "csp")  # scripts ran, the websocket connected, the camera opened
        assert page.evaluate("() => getComputedStyle(document.querySelector('#leave')).backgroundColor") \
            == "rgb(194, 59, 59)"  # the stylesheet applied
        assert page.evaluate("() => window.violations") == []
        assert not [line for line in console if line.startswith(("error", "pageerror"))], console
        # The policy is in force: injected markup cannot run script or load from elsewhere.
        page.evaluate("""() => { const d = document.createElement('div');
            d.innerHTML = '<img src="http://evil.example/x.png" onerror="window.ran = true">';
            document.body.appendChild(d); }""")
        page.wait_for_function("() => window.violations.length >= 2")
        assert page.evaluate("() => window.ran") is None
        directives = {entry.split()[0] for entry in page.evaluate("() => window.violations")}
        assert directives == {"img-src", "script-src-attr"}, directives
    finally:
        context.close()
