"""The verification code: its computation, and where a connection's certificates come from."""

import asyncio
import re

from aiortc import RTCConfiguration, RTCPeerConnection

from conftest import LOCAL
from peer.ice import use_host_addresses
from peer.verification import code_from_certificates, code_from_digests, code_from_transports, connection_code

FORMAT = re.compile(r"\d{5}( \d{5}){4}")


def test_the_documented_example():
    """docs/protocol.md's example, computed there with openssl and bc (note the leading zero)."""
    assert code_from_digests([b"\x11" * 32, b"\x22" * 32]) == "05292 08157 32830 81291 44317"


def test_both_sides_get_the_same_code_whichever_is_theirs():
    ours, theirs = b"certificate of alice", b"certificate of bob"
    code = code_from_certificates([ours, theirs])
    assert FORMAT.fullmatch(code)
    assert code == code_from_certificates([theirs, ours])


def test_another_certificate_on_either_side_changes_the_code():
    alice, bob, mallory = b"alice", b"bob", b"mallory"
    code = code_from_certificates([alice, bob])
    assert code_from_certificates([alice, mallory]) != code
    assert code_from_certificates([mallory, bob]) != code
    assert code_from_certificates([alice, bob, mallory]) != code


def test_codes_are_spread_over_all_digits():
    """Not a proof of strength, but a broken reduction (few digits used, a fixed prefix) shows."""
    codes = {code_from_certificates([b"a", bytes([n])]) for n in range(256)}
    assert len(codes) == 256
    assert all(FORMAT.fullmatch(code) for code in codes)
    assert {code[0] for code in codes} == set("0123456789")


async def test_a_connection_has_a_code_only_while_dtls_is_up():
    use_host_addresses([LOCAL])
    a, b = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    try:
        a.createDataChannel("chat")
        a.addTransceiver("video", direction="recvonly")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        assert connection_code(a) is None and connection_code(b) is None  # SDP alone is not enough
        connected = asyncio.Event()
        for pc in (a, b):
            pc.on("connectionstatechange", lambda: a.connectionState == b.connectionState == "connected" and connected.set())
        await a.setRemoteDescription(b.localDescription)
        await asyncio.wait_for(connected.wait(), 10)
        assert FORMAT.fullmatch(connection_code(a))
        assert connection_code(a) == connection_code(b)
    finally:
        await a.close()
        await b.close()
        use_host_addresses(None)
    assert connection_code(a) is None


def test_a_code_needs_every_transport_to_show_the_same_two_certificates():
    """Without BUNDLE a call runs a DTLS transport per media section. A relay on one of them
    only, with one certificate of its own towards both sides, would add the same third
    certificate to both sides' sets and leave the codes equal: such a call has no code."""
    ours, theirs, relay = b"our certificate", b"their certificate", b"the relay's certificate"
    honest = code_from_transports([(ours, theirs)])
    assert honest == code_from_certificates([ours, theirs])
    assert code_from_transports([(ours, theirs), (ours, theirs)]) == honest  # unbundled, honest
    assert code_from_transports([(ours, relay), (ours, theirs)]) is None  # a relay on one transport
    assert code_from_transports([(ours, theirs), (relay, theirs)]) is None
    assert code_from_transports([(ours, ours)]) is None  # our own certificate sent back
    assert code_from_transports([]) is None  # DTLS not done yet
