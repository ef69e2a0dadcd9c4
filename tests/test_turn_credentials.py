"""TURN credentials handed out by the signaling server, with a real coturn on 127.0.0.1.

coturn runs with ``--use-auth-secret --static-auth-secret=S`` (the time-limited HMAC scheme of
``signaling.turn``), our server with ``--turn-server``/``--turn-secret``, and two
``python -m peer --relay-only`` with no ICE flags at all: they take the servers of the join
acknowledgement and call through coturn (``--stats`` says "relayed"). A wrong secret is said
in a line, not left to a call that never connects; the browser page gets the servers too.
Nothing leaves 127.0.0.1; coturn needs ``--allow-loopback-peers`` for relays to 127.0.0.1.
"""

import cv2  # noqa: F401  -- before av: see FIELD-NOTES

import hashlib
import hmac
import base64
import json
import re
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import urlencode

from conftest import LOCAL, Process, Server, child_env, free_port, require
from test_browser import page, state  # noqa: F401  -- page: the fixture, with its check of console errors

SECRET = "coturn-shared-secret-for-tests"
PEER = ["--no-window", "--video", "testsrc", "--audio", "none", "--ice-host", LOCAL]


class Coturn(Process):
    """Debian's coturn on 127.0.0.1 at a free port, with ``auth`` flags; ``url`` its TURN URL.
    Its pid file and database go to ``directory`` (never the machine's /var). With ``tls``
    (certificate file, key file) it also takes TLS on ``tls_port`` (``turns:``); else no TLS."""

    def __init__(self, directory: Path, *auth: str, tls: Optional[tuple[Path, Path]] = None) -> None:
        self.port = free_port()
        self.url = f"turn:{LOCAL}:{self.port}"
        self.tls_port = free_port()
        secure = ([f"--tls-listening-port={self.tls_port}", f"--cert={tls[0]}", f"--pkey={tls[1]}"] if tls
                  else ["--no-tls"])
        super().__init__([require("turnserver"), "-n", f"--listening-ip={LOCAL}", f"--relay-ip={LOCAL}",
                          f"--listening-port={self.port}", *secure, "--no-dtls", "--no-cli",
                          "--allow-loopback-peers", "--realm=test", "--log-file=stdout", "--simple-log",
                          f"--pidfile={directory / 'turnserver.pid'}", f"--userdb={directory / 'turndb'}",
                          *auth], name="coturn")
        self.expect("Total General servers", timeout=10)


def coturn_with_secret(processes, directory: Path, *flags: str) -> Coturn:
    return processes.add(Coturn(directory, "--use-auth-secret", f"--static-auth-secret={SECRET}", *flags))


def stats_paths(path: Path) -> set[str]:
    """The paths ``--stats`` wrote for the calls, one a line."""
    return {json.loads(line)["path"] for line in path.read_text().splitlines() if line.strip()}


def full_call(a: Process, b: Process) -> None:
    """Connected both ways, video arriving both ways, chat both ways."""
    for one, other in ((a, b), (b, a)):
        one.expect(rf"connected to {other.name}", timeout=30)
        one.expect(rf"video from {other.name} arrives", timeout=30)
    for one, other in ((a, b), (b, a)):
        one.send(f"hello from {one.name}")
        other.expect(rf"\[{one.name}\] hello from {one.name}")


def password_for(username: str) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()


def test_a_server_handing_out_turn_makes_relay_only_peers_call_through_it(processes, tmp_path):
    turn = coturn_with_secret(processes, tmp_path)
    # the secret from the environment, as a deployment keeps it out of ps
    server = processes.add(Server("--turn-server", turn.url, "--log-level", "debug",
                                env=child_env(SIGNALING_TURN_SECRET=SECRET)))
    flags = ["--room", "handed", "--server", server.url, "--relay-only", *PEER]
    a = processes.peer(*flags, "--stats", str(tmp_path / "a.jsonl"), "-v", name="ann")
    b = processes.peer(*flags, "--stats", str(tmp_path / "b.jsonl"), name="bob")
    full_call(a, b)
    a.expect("status: 1 connected .* relayed", timeout=15)
    b.expect("status: 1 connected .* relayed", timeout=15)
    assert stats_paths(tmp_path / "a.jsonl") == stats_paths(tmp_path / "b.jsonl") == {"relayed"}
    assert "using the ICE servers of the signaling server: " + turn.url in a.output
    # Debug logs (ours, aiortc's, aioice's) show the username coturn sees, never its password
    usernames = set(re.findall(r"'USERNAME': '(\d+:[^']+)'", a.output))
    assert usernames, "aioice logged no TURN request at debug level"
    for secret in [SECRET, *(password_for(name) for name in usernames)]:
        assert secret not in a.output and secret not in b.output and secret not in server.output


def test_a_wrong_secret_is_said_not_waited_for(processes, tmp_path):
    turn = coturn_with_secret(processes, tmp_path)
    server = processes.add(Server("--turn-server", turn.url, "--turn-secret", "not-the-secret"))
    flags = ["--room", "wrong", "--server", server.url, "--relay-only", *PEER]
    a = processes.peer(*flags, name="ann")
    a.expect("joined room")
    b = processes.peer(*flags, name="bob")
    # bob, the newcomer, offers and so gathers at once (ann gathers only once it answers or offers)
    b.expect(rf"^peer: no relay from the TURN server {LOCAL}:{turn.port}: it refused the credentials \(401 Unauthorized",
             timeout=10)
    assert "connected to" not in a.output + b.output


def test_the_page_takes_the_servers_of_the_join(processes, tmp_path, page):  # noqa: F811
    """The page uses the handed-out TURN server: coturn logs an allocation for the page's own
    member id, with the credentials made for it, once a relay-only peer calls it."""
    turn = coturn_with_secret(processes, tmp_path, "--verbose")  # which logs each allocation's user
    tcp = f"{turn.url}?transport=tcp"
    server = processes.add(Server("--turn-server", turn.url, "--turn-server", tcp, "--turn-secret", SECRET))
    page.goto(f"{server.url}/?" + urlencode({"room": "page", "name": "ann"}))
    page.wait_for_function("() => window.peerState.joined")
    assert state(page, "iceServers") == [{"urls": [turn.url, tcp], "credentials": True}]  # never the credentials
    bob = processes.peer("--room", "page", "--server", server.url, "--relay-only", *PEER, name="bob")
    bob.expect("connected to ann", timeout=30)
    page.wait_for_function("() => window.peerState.connected.includes('bob')")
    turn.expect(rf"user <\d+:{re.escape(state(page, 'id'))}>: incoming packet ALLOCATE processed, success", timeout=10)
