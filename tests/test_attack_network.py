"""Attacks on issue 13's network pieces: a hostile signaling server's ``iceServers``, ICE URLs
that carry credentials, config files and server settings a picky user gets wrong.

Sans-I/O where the piece is (``signaling.turn``, ``peer.ice_config``, the signaling server's
argument parsing); what aiortc makes of the servers is asked of aiortc itself (its URL parser,
as every gathering runs it), with no socket opened.
"""

import cv2  # noqa: F401  -- before av: see FIELD-NOTES

import argparse
import asyncio
import sys

import pytest
from aiortc.rtcicetransport import parse_stun_turn_uri

import peer
from conftest import LOCAL, Process, child_env
from peer.ice import IceSettings, turn_choices
from peer.ice_config import add_ice_arguments, ice_settings
from signaling.turn import check_ice_url, read_ice_servers

SECRET = "hunter2-never-shown"


# A hostile server's iceServers: whatever is kept, aiortc can use

@pytest.mark.parametrize("url", [
    "TURN:turn.example.org:3478",  # aiortc's parser is case-blind to nothing: "malformed uri: invalid scheme"
    "Stun:stun.example.org",
    "turn:turn.example.org:\u0663\u0664\u0667\u0668",  # Arabic-Indic digits: str.isdigit() says yes, aiortc no
    "turn:turn..example.org",  # an empty label: the resolver fails with UnicodeError, aioice drops it unsaid
    "turn:" + "a" * 64 + ".example.org",  # a label longer than 63
])
def test_a_server_aiortc_cannot_parse_is_dropped_not_left_to_break_the_call(url):
    servers, dropped = read_ice_servers([{"urls": url, "username": "u", "credential": "p"}])
    assert servers == [] and len(dropped) == 1
    with pytest.raises(ValueError):
        check_ice_url(url)


def test_what_is_kept_of_a_hostile_ack_is_what_aiortc_parses():
    """The call's task runs ``IceSettings.apply`` (aiortc's URL parser) before anything else:
    a URL it refuses there ended the task, and the call hung, never offering nor answering."""
    offered = [{"urls": [f"turn:t{n}.example.org:{3478 + n}", f"TURNS:t{n}.example.org"], "username": "u",
                "credential": "p"} for n in range(3)] + [{"urls": "STUN:s.example.org"}]
    servers, _ = read_ice_servers(offered)
    ice = IceSettings().offered(servers)
    for server in ice.configuration().iceServers or []:
        for url in [server.urls] if isinstance(server.urls, str) else server.urls:
            parse_stun_turn_uri(url)
    turn_choices(ice.configuration().iceServers or [])


# Credentials in URLs are never quoted

@pytest.mark.parametrize("url", [
    f"turn:alice:{SECRET}@turn.example.org:3478",
    f"turn:alice:{SECRET}@turn.example.org:3478" + "x" * 300,
    f"stun:{SECRET}@stun.example.org",
])
def test_a_url_with_a_password_in_it_is_refused_without_quoting_the_password(url):
    with pytest.raises(ValueError) as refused:
        check_ice_url(url)
    assert SECRET not in str(refused.value)


def test_the_peer_does_not_print_a_password_written_into_a_turn_url():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ice-host", action="append", default=[])
    add_ice_arguments(parser)
    args = parser.parse_args(["--turn", f"turn:alice:{SECRET}@turn.example.org"])
    ice, problems = ice_settings(args, {"PEER_STUN": f"stun:bob:{SECRET}@stun.example.org"})
    assert ice is None and problems and not any(SECRET in line for line in problems)


# Config files a picky user writes

def test_a_config_file_nested_too_deep_is_one_line_not_a_traceback(tmp_path):
    for name, text in (("deep.json", "[" * 20000), ("deep.toml", "a = " + "[" * 20000)):
        path = tmp_path / name
        path.write_text(text)
        parser = argparse.ArgumentParser()
        parser.add_argument("--ice-host", action="append", default=[])
        add_ice_arguments(parser)
        ice, problems = ice_settings(parser.parse_args(["--ice-config", str(path)]), {})
        assert ice is None and len(problems) == 1 and str(path) in problems[0] and "\n" not in problems[0]


# The signaling server's settings from the environment

def test_a_turn_ttl_from_the_environment_that_is_no_number_is_a_usage_error(monkeypatch, capsys):
    from signaling.__main__ import parse_args
    monkeypatch.setenv("SIGNALING_TURN_TTL", "a day")
    with pytest.raises(SystemExit) as exited:
        parse_args([])
    assert exited.value.code == 2 and "--turn-ttl" in capsys.readouterr().err


def test_credentials_that_are_no_utf8_are_dropped_not_left_to_fail_the_relay_unsaid():
    """JSON carries lone surrogates ("\\ud800"), which Python decodes; aioice encodes the
    username and password as UTF-8 inside its allocation task, which then fails without a word."""
    for key in ("username", "credential"):
        server = {"urls": "turn:turn.example.org", "username": "u", "credential": "p", key: "a\ud800b"}
        servers, dropped = read_ice_servers([server])
        assert servers == [] and len(dropped) == 1 and "\ud800" not in dropped[0]


# A hostile server's ack, end to end

HOSTILE_ICE = [
    {"urls": "TURN:127.0.0.1:9", "username": "u", "credential": SECRET},  # the call's task died on it
    {"urls": ["turn:127.0.0.1:\u0663"], "username": "u", "credential": SECRET},
    {"urls": f"turn:alice:{SECRET}@127.0.0.1", "username": "u", "credential": "p"},
    {"urls": "turn:127.0.0.1", "username": "u", "credential": "a\ud800"},
    {"urls": [[["stun:127.0.0.1"]]]}, {"urls": "stun:127.0.0.1\x1b[2J"}, "stun:127.0.0.1", None, 5,
] + [{"urls": "turn:t.example.org", "username": "u", "credential": SECRET}] * 3000


async def test_a_hostile_ack_of_ice_servers_costs_a_line_and_not_the_call():
    """The victim is handed servers aiortc cannot take (a scheme in capitals, Arabic digits),
    a password written into a URL, a credential that is no UTF-8, junk of every type, and
    3,000 more servers: it says once what it ignored, never a password, and calls bob as if
    it had been handed nothing."""
    from test_attack_more import ListingServer, victim_cli

    class IceServer(ListingServer):
        async def join(self, sid: str, payload: dict) -> dict:
            ack = await super().join(sid, payload)
            return {**ack, "iceServers": HOSTILE_ICE} if payload["name"] == "victim" else ack

    async with IceServer(0) as server, \
               peer.join("ice", server=server.url, name="bob", ice_hosts=[LOCAL]) as bob:
        victim = victim_cli("ice", server.url)
        try:
            await asyncio.to_thread(victim.expect, "connected to bob", timeout=20)
            victim.send("through")
            await bob.wait_for_message(lambda text: text == "through", timeout=10)
            assert victim.output.count("ignored some of the server's ICE servers") == 1, victim.output
            assert SECRET not in victim.output and "Traceback" not in victim.output, victim.output
        finally:
            victim.stop()


def test_servers_given_to_the_api_directly_are_checked_as_flags_are():
    """``IceSettings(servers=...)`` takes ``IceServer``s made by hand, unchecked: one aiortc cannot
    parse ended every call's task (the call hung); it is refused when the settings are made."""
    from peer.ice import IceConfigError
    from signaling.turn import IceServer
    for server in (IceServer(("TURN:t.example.org",), "u", "p"), IceServer(("turn:t.example.org",))):
        with pytest.raises(IceConfigError):
            IceSettings(servers=(server,))


async def test_a_rejoin_handed_no_relay_keeps_a_relay_only_peer_in_the_room():
    """A relay-only peer that relays through the server's TURN is handed, when it joins again
    after the server dropped it, only a STUN server: the check of its settings raised out of
    the rejoin's task (a traceback, and a peer back in the server's room that never took the
    acknowledgement's word). It keeps the relay it had, says why, and is back in the room."""
    from test_attack_more import ListingServer

    class Fickle(ListingServer):
        joins = 0

        async def join(self, sid: str, payload: dict) -> dict:
            ack = await super().join(sid, payload)
            self.joins += 1
            servers = [{"urls": "turn:127.0.0.1:9", "username": "u", "credential": SECRET}] if self.joins == 1 \
                else [{"urls": "stun:127.0.0.1:9"}]
            return {**ack, "iceServers": servers}

    async with Fickle(0) as server:
        victim = Process([sys.executable, "-m", "peer", "--room", "fickle", "--server", server.url, "--name",
                          "victim", "--video", "none", "--audio", "none", "--no-window", "--ice-host", LOCAL,
                          "--relay-only"], env=child_env(), name="victim")
        try:
            await asyncio.to_thread(victim.expect, "joined room fickle")
            await server.sio.disconnect(server.sids["member0"])
            await asyncio.to_thread(victim.expect, "back in room fickle", timeout=15)
            await asyncio.to_thread(victim.expect, "no TURN server", timeout=5)
            assert "Traceback" not in victim.output and SECRET not in victim.output, victim.output
        finally:
            victim.stop()
