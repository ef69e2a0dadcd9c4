"""ICE servers from flags, environment variables and config files; TURN URLs checked; the
credentials coturn's use-auth-secret expects; and credentials kept out of reprs, output and
debug logs.

Sans-I/O pieces (``signaling.turn``, ``peer.ice_config``, the relay's ack) are tested without
sockets; the CLIs' refusals by running them (they exit before any network); one relay-only
call through a real coturn with a long-term user, its password from the environment on one
side and from a TOML file on the other, with debug logs on.
"""

import cv2  # noqa: F401  -- before av: see FIELD-NOTES

import argparse
import base64
import hashlib
import hmac
import json
import logging
import subprocess
import sys

import pytest

from conftest import LOCAL, ROOT, Server, child_env, free_port
from peer.ice_config import add_ice_arguments, ice_settings
from peer.ice import IceConfigError, IceSettings, turn_choices
from signaling import protocol
from signaling.protocol import Member
from signaling.relay import Relay
from signaling.rooms import Rooms
from signaling.store import MemoryStore
from signaling.turn import (MAX_ICE_SERVERS, IceServer, TurnGrant, check_ice_url, read_ice_servers,
                            turn_credentials)
from test_turn_credentials import PEER, Coturn, full_call, stats_paths

PASSWORD = "pw-5a1f0c-never-shown"


# URLs

@pytest.mark.parametrize("url", [
    "stun:stun.example.org", "stun:203.0.113.5:3478", "turn:turn.example.org:3478",
    "turn:turn.example.org:3478?transport=tcp", "turn:turn.example.org?transport=udp",
    "turns:turn.example.org:5349", "turns:turn.example.org:443?transport=tcp", "turn:Turn.Example.org",
])
def test_urls_aiortc_can_use_pass(url):
    assert check_ice_url(url) == url


@pytest.mark.parametrize("url, says", [
    ("http://turn.example.org", "starts with stun:, turn: or turns:"),
    ("turn.example.org:3478", "starts with stun:, turn: or turns:"),
    ("stuns:stun.example.org", "aiortc has no STUN over TLS"),
    ("turn://turn.example.org:3478", "no '//' after turn:"),
    ("turn:", "no valid host name"),
    ("turn:user@turn.example.org", "no valid host name"),
    ("turn:[2001:db8::1]:3478", "no IPv6 address"),
    ("turn:turn.example.org:0", "port must be a number from 1 to 65535"),
    ("turn:turn.example.org:99999", "port must be a number from 1 to 65535"),
    ("turn:turn.example.org:http", "port must be a number"),
    ("TURN:turn.example.org", "in lower case: aiortc reads no other"),
    ("turn:turn.example.org?transport=sctp", "?transport=udp or ?transport=tcp"),
    ("turns:turn.example.org?transport=udp", "turns: is TLS over TCP"),
    ("stun:stun.example.org?transport=udp", "a stun: URL takes no '?' part"),
    ("turn:" + "a" * 300, "longer than 256 characters"),
])
def test_urls_aiortc_cannot_use_are_refused_in_one_line(url, says):
    with pytest.raises(ValueError) as refused:
        check_ice_url(url)
    assert says in str(refused.value) and "\n" not in str(refused.value)


# coturn's use-auth-secret credentials

def test_credentials_follow_coturns_scheme():
    """The vector is openssl's: ``echo -n 1700003600:alice | openssl dgst -sha1 -hmac north -binary | base64``."""
    assert turn_credentials("north", "alice", 3600, 1700000000.7) == ("1700003600:alice", "wjwSXO2ch1B6VaLTLMy2Avn5O9o=")
    username, password = turn_credentials("s3cret", "member-id", 86400, 1767225600)
    assert username == "1767312000:member-id"
    assert base64.b64decode(password) == hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()


async def test_the_join_ack_hands_each_member_fresh_credentials_of_its_own():
    grant = TurnGrant(("turn:turn.example.org:3478", "turns:turn.example.org:5349"), "s3cret", ttl=600)
    relay = Relay(MemoryStore(Rooms(capacity=2)), turn=grant, wall_clock=lambda: 1767225600.0)
    for sid in ("A", "B"):
        relay.connect(sid)
    acks = [(await relay.join(sid, {"room": "r", "name": sid})).ack for sid in ("A", "B")]
    for sid, ack in zip(("A", "B"), acks):
        username, password = turn_credentials("s3cret", sid, 600, 1767225600.0)
        assert ack["iceServers"] == [{"urls": list(grant.urls), "username": username, "credential": password}]
        assert protocol.parse_join_ack(ack).ice_servers == [IceServer(grant.urls, username, password)]
    assert "s3cret" not in repr(grant) and "s3cret" not in repr(relay.turn)
    plain = Relay(MemoryStore(Rooms(capacity=2)))
    plain.connect("C")
    assert "iceServers" not in (await plain.join("C", {"room": "r"})).ack  # no TURN, no field


# The servers of a join ack: hostile input, bounded

def test_the_acks_servers_are_bounded_and_checked():
    good = {"urls": ["turn:t.example.org:3478", "turn:t.example.org:3478?transport=tcp"], "username": "u", "credential": "c"}
    servers, dropped = read_ice_servers([good] * 1000)
    assert len(servers) == MAX_ICE_SERVERS and dropped == [f"{1000 - MAX_ICE_SERVERS} servers past the first 8"]
    hostile = [
        "turn:t.example.org", {"urls": "turn:t.example.org"}, {"urls": ["stun:s.example.org"] * 50},
        {"urls": "turn:t.example.org", "username": "u" * 10_000, "credential": "c"},
        {"urls": "turn:t.example.org\n\x1b[31m", "username": "u", "credential": "c"},
        {"urls": 42}, {"urls": ["stun:ok.example.org", {"x": 1}]}, {"urls": "stun:s.example.org"},
    ]
    servers, dropped = read_ice_servers(hostile)
    assert servers == [IceServer(("stun:s.example.org",))] and len(dropped) == len(hostile) - 1
    assert all("\n" not in line and "\x1b" not in line and len(line) <= 256 for line in dropped)
    assert read_ice_servers(None) == ([], []) and read_ice_servers({"urls": "x"}) == ([], ["'iceServers' is not a list"])


def test_a_server_that_sends_no_list_still_admits():
    ack = protocol.join_ack(Member("me", "me"), "r", [], 2)
    ack["iceServers"] = "turn:evil.example.org"
    assert protocol.parse_join_ack(ack).ice_servers == []


# The peer's rule: its own servers, else the server's

def test_servers_of_ones_own_are_never_replaced_by_the_servers():
    offered = [IceServer(("turn:t.example.org",), "u", "c")]
    none = IceSettings(host_addresses=(LOCAL,))
    assert none.offered(offered).servers == tuple(offered) and none.offered(offered).host_addresses == (LOCAL,)
    own = IceSettings(stun=("stun:s.example.org",))
    assert own.offered(offered) is own


def test_relay_only_needs_turn_of_ones_own_or_the_servers():
    with pytest.raises(IceConfigError, match="--relay-only needs a TURN server"):
        IceSettings(stun=("stun:s.example.org",), relay_only=True)
    waiting = IceSettings(relay_only=True)  # the signaling server may hand one out
    with pytest.raises(IceConfigError, match="--relay-only needs a TURN server"):
        waiting.check_relay()
    waiting.offered([IceServer(("turn:t.example.org",), "u", "c")]).check_relay()


def test_every_turn_url_is_a_choice_not_only_aiortcs_first():
    settings = IceSettings(stun=("stun:s.example.org",), turn=("turn:t.example.org", "turn:t.example.org?transport=tcp"),
                           turn_user="u", turn_password="p",
                           servers=(IceServer(("turns:r.example.org:443", "stun:r.example.org"), "v", "q"),))
    assert [(c["turn_server"], c["turn_transport"], c["turn_ssl"], c["turn_username"], c["turn_password"])
            for c in turn_choices(settings.configuration().iceServers)] == [
        (("t.example.org", 3478), "udp", False, "u", "p"), (("t.example.org", 3478), "tcp", False, "u", "p"),
        (("r.example.org", 443), "tcp", True, "v", "q")]


def test_reprs_hide_credentials():
    settings = IceSettings(turn=("turn:t.example.org",), turn_user="user-x", turn_password=PASSWORD,
                           servers=(IceServer(("turns:t.example.org",), "user-y", PASSWORD),))
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert "turn:t.example.org" in repr(settings)


# Flags, variables, files

def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ice-host", action="append", default=[])
    add_ice_arguments(parser)
    return parser.parse_args(list(flags))


def test_flags_win_over_variables_and_files_add_servers(tmp_path):
    environ = {"PEER_STUN": "stun:a.example.org, stun:b.example.org", "PEER_TURN": "turn:t.example.org?transport=tcp",
               "PEER_TURN_USER": "env-user", "PEER_TURN_PASSWORD": PASSWORD}
    ice, problems = ice_settings(parse(), environ)
    assert problems == [] and ice is not None
    assert ice.stun == ("stun:a.example.org", "stun:b.example.org") and ice.turn == ("turn:t.example.org?transport=tcp",)
    assert (ice.turn_user, ice.turn_password) == ("env-user", PASSWORD)
    ice, _ = ice_settings(parse("--stun", "stun:c.example.org", "--turn-user", "flag-user"), environ)
    assert ice is not None and ice.stun == ("stun:c.example.org",) and ice.turn_user == "flag-user"
    file = tmp_path / "ice.json"
    file.write_text(json.dumps({"iceServers": [{"urls": ["turns:t.example.org:5349"], "username": "f", "credential": PASSWORD}],
                                "iceTransportPolicy": "relay"}))
    ice, _ = ice_settings(parse(), {"PEER_ICE_CONFIG": str(file)})
    assert ice is not None and ice.relay_only and ice.servers == (IceServer(("turns:t.example.org:5349",), "f", PASSWORD),)


def test_a_toml_file_holds_the_same(tmp_path):
    file = tmp_path / "ice.toml"
    file.write_text(f'[[iceServers]]\nurls = "stun:s.example.org"\n\n[[iceServers]]\n'
                    f'urls = ["turn:t.example.org", "turn:t.example.org?transport=tcp"]\nusername = "u"\ncredential = "{PASSWORD}"\n')
    ice, problems = ice_settings(parse("--ice-config", str(file), "--relay-only"), {})
    assert problems == [] and ice is not None and ice.relay_only and ice.has_turn and len(ice.servers) == 2
    assert len(ice.configuration().iceServers) == 2


@pytest.mark.parametrize("content, says", [
    ("{", "not valid JSON"),
    ('[{"urls": "stun:s.example.org"}]', 'an object with "iceServers"'),
    ('{"iceServers": []}', "at least one server"),
    ('{"iceservers": [{"urls": "stun:s.example.org"}]}', "the file has no key 'iceservers'"),
    ('{"iceServers": [{"urls": "turn:t.example.org", "username": "u", "password": "p"}]}', "server 1: a server has no key 'password'"),
    ('{"iceServers": [{"urls": "stun:s.example.org"}, {"urls": "turn:t.example.org"}]}', "server 2: the TURN server turn:t.example.org needs a username"),
    ('{"iceServers": [{"urls": "turn://x"}]}', "no '//' after turn:"),
    ('{"iceServers": [{"urls": "stun:s.example.org"}], "iceTransportPolicy": "none"}', '"all" or "relay"'),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, content, says):
    file = tmp_path / "ice.json"
    file.write_text(content)
    ice, problems = ice_settings(parse("--ice-config", str(file)), {})
    assert ice is None and len(problems) == 1 and problems[0].startswith(f"--ice-config {file}: ") and says in problems[0]


def run_cli(module: str, *flags: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, env=env or child_env(),
                          capture_output=True, text=True, timeout=60)


def test_the_peer_says_every_fault_in_a_line_and_never_a_password(tmp_path):
    done = run_cli("peer", "--room", "r", "--stun", "stuns:s.example.org", "--turn", "turn:t.example.org",
                   "--turn", "turn:[::1]:3478", "--ice-config", str(tmp_path / "missing.json"),
                   "--turn-password", PASSWORD, "--relay-only")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and done.stdout == ""
    assert lines == [
        "python -m peer: --stun: 'stuns:s.example.org': an ICE server URL starts with stun:, turn: or turns: "
        "(aiortc has no STUN over TLS: use stun:)",
        "python -m peer: --turn: 'turn:[::1]:3478': aiortc takes no IPv6 address in an ICE server URL; use a host name",
        "python -m peer: --turn turn:t.example.org needs --turn-user and --turn-password (or PEER_TURN_USER and "
        "PEER_TURN_PASSWORD, or a server with them in --ice-config)",
        f"python -m peer: --ice-config {tmp_path / 'missing.json'}: No such file or directory",
    ]
    done = run_cli("peer", "--room", "r", "--relay-only", "--stun", "stun:s.example.org")
    assert done.returncode == 2 and done.stderr.startswith("python -m peer: --relay-only needs a TURN server")


def test_the_signaling_server_says_every_fault_in_a_line():
    done = run_cli("signaling", "--turn-server", "stun:s.example.org", "--turn-server", "turn:t.example.org:0",
                   "--turn-ttl", "0", env=child_env(SIGNALING_TURN_SECRET=" "))
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "python -m signaling: --turn-server stun:s.example.org: a TURN URL starts with turn: or turns:",
        "python -m signaling: --turn-server: 'turn:t.example.org:0': the port must be a number from 1 to 65535",
        "python -m signaling: --turn-server needs --turn-secret (or SIGNALING_TURN_SECRET): coturn's static-auth-secret",
        "python -m signaling: --turn-ttl must be from 1 to 604800 seconds",
    ]
    done = run_cli("signaling", "--turn-secret", "s", env=child_env(SIGNALING_TURN_SERVER=""))
    assert done.returncode == 2 and "--turn-secret needs at least one --turn-server" in done.stderr


async def test_a_server_refusal_of_turn_is_logged_without_credentials(caplog):
    """A peer whose ack carries a server that aiortc cannot use logs what was dropped, once."""
    from peer.session import Session
    caplog.set_level(logging.DEBUG)
    session = Session("r", "http://127.0.0.1:9")
    ack = protocol.join_ack(Member("me", "me"), "r", [], 2)
    ack["iceServers"] = [{"urls": "turn:t.example.org"}, {"urls": "turn:ok.example.org", "username": "u", "credential": PASSWORD}]
    session._take_ice_servers(protocol.parse_join_ack(ack))
    assert session.ice.servers == (IceServer(("turn:ok.example.org",), "u", PASSWORD),)
    assert "ignored some of the server's ICE servers: the TURN server turn:t.example.org needs a username" in caplog.text
    assert "using the ICE servers of the signaling server: turn:ok.example.org" in caplog.text
    assert PASSWORD not in caplog.text


# A real call with a long-term TURN user, debug logs on, several TURN URLs

def test_a_relay_only_call_with_the_password_from_the_environment_and_a_file(processes, tmp_path):
    turn = processes.add(Coturn(tmp_path, "--lt-cred-mech", f"--user=alice:{PASSWORD}"))
    server = processes.add(Server())
    config = tmp_path / "ice.toml"
    config.write_text(f'[[iceServers]]\nurls = ["{turn.url}"]\nusername = "alice"\ncredential = "{PASSWORD}"\n')
    common = ["--room", "own-turn", "--server", server.url, "--relay-only", "-v", *PEER]
    # ann's first TURN URL answers nothing: aiortc would use only that one; the next, over TCP, relays
    a = processes.peer(*common, "--turn", f"turn:{LOCAL}:{free_port()}", "--turn", f"{turn.url}?transport=tcp",
                       "--turn-user", "alice", "--stats", str(tmp_path / "a.jsonl"),
                       name="ann", env=child_env(PEER_TURN_PASSWORD=PASSWORD))
    b = processes.peer(*common, "--ice-config", str(config), "--stats", str(tmp_path / "b.jsonl"), name="bob")
    full_call(a, b)
    a.expect("status: 1 connected .* relayed", timeout=15)
    assert stats_paths(tmp_path / "a.jsonl") == stats_paths(tmp_path / "b.jsonl") == {"relayed"}
    assert "'USERNAME': 'alice'" in a.output  # aioice's debug lines were there to look at
    assert "turn/tcp connection_made" in a.output and "turn/tcp connection_made" not in b.output
    assert PASSWORD not in a.output and PASSWORD not in b.output


def test_relay_only_on_a_server_with_no_turn_fails_the_join_in_a_line(processes):
    server = processes.add(Server())
    done = run_cli("peer", "--room", "r", "--server", server.url, "--relay-only", "--no-window", "--video", "none",
                   "--audio", "none")
    assert done.returncode == 2 and done.stderr.splitlines()[-1].startswith(
        "peer: --relay-only needs a TURN server: give --turn URL"), done.stderr
