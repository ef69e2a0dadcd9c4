"""Attacks on the fast data channel (``peer.transfer``, ``peer.sctp``) from issue 12's review:
a receiver announcing a tiny ``a=max-message-size``, a retransmission timer armed before the
tuning, a SACK held back when the connection closes."""

import asyncio

import pytest
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

import peer
from conftest import LOCAL


def join(room: str, server, name: str, **options):
    return peer.join(room, server=server.url, name=name, ice_hosts=[LOCAL], **options)


@pytest.mark.parametrize("announced", [1, 40])
async def test_a_receiver_announcing_tiny_messages_fails_the_transfer_with_a_transfer_error(
        server, tmp_path, monkeypatch, announced):
    """A receiver may announce ``a=max-message-size:1`` (or any size below a file's first
    message): the sender gets a TransferError saying so, not aiortc's ValueError, and sends
    no flood of one-byte messages."""
    monkeypatch.setattr(RTCSctpTransport, "getCapabilities",
                        classmethod(lambda cls: RTCSctpCapabilities(maxMessageSize=announced)))
    (tmp_path / "file.bin").write_bytes(b"x" * 100_000)
    async with join("tiny", server, "alice") as alice, \
            join("tiny", server, "bob", downloads=tmp_path / "downloads") as bob:
        await alice.wait_for_peer()
        await bob.wait_for_peer()
        with pytest.raises(peer.TransferError):
            await asyncio.wait_for(alice.send_file(tmp_path / "file.bin"), 60)


async def test_a_chunk_marked_by_a_timer_armed_before_the_tuning_is_resent(server):
    """A T3 timer armed before ``peer.sctp`` replaced ``_transmit`` (on the answering side the
    first channels' messages go out before the files channel, and its tuning, exists) calls
    the ``_t3_expired`` of then: it marks the chunks in flight for retransmission and calls the
    new ``_transmit``, which must walk the sent queue for them although no SACK or T3 of its
    own said so; else they wait, unsent, for a gap report that may never come.

    Modelled by tuning alice's transport a second time once her chat chunk is in flight with
    its timer armed; bob heard nothing of it."""
    from peer import sctp

    async with join("t3", server, "alice") as alice, join("t3", server, "bob") as bob:
        await alice.wait_for_peer()
        await bob.wait_for_peer()
        for room in (alice, bob):  # bob's deafness must not end the connection (the heartbeat's verdict)
            for call in room.session.calls.values():
                call._connection._dead_after = 60
        transport = next(iter(alice.session.calls.values())).pc.sctp
        connection = next(iter(bob.session.calls.values())).pc.sctp.transport.transport._connection
        receive = connection.data_received
        deaf = False
        connection.data_received = lambda data, component: deaf or receive(data, component)
        while transport._sent_queue:  # nothing in flight from before
            await asyncio.sleep(0.01)
        deaf = True
        alice.send_text("lost once")
        while transport._t3_handle is None:
            await asyncio.sleep(0.01)
        sctp.skip_needless_retransmit_scans(transport)  # the timer armed calls the former one
        armed = transport._t3_handle
        while transport._t3_handle is armed:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the transmit the timer scheduled runs
        deaf = False
        assert not [chunk for chunk in transport._sent_queue if chunk._retransmit], "marked and never resent"
        message = await bob.wait_for(peer.ChatMessage, timeout=10)
        assert message.text == "lost once"


async def test_a_sack_held_back_when_the_connection_closes_is_not_sent_after(server, monkeypatch):
    """A SACK held back (``peer.sctp.delay_sacks``: more datagrams were waiting, RTP in a call
    with video) goes from a timer 20 ms later; if the connection closed meanwhile with nothing
    more received (a call closed without bye: cut, renewed), sending it failed in a task
    nobody awaited: asyncio's "Task exception was never retrieved", in the CLI's terminal too.
    The timer's delay is made long here so that the close surely comes first."""
    import gc

    from peer import sctp

    monkeypatch.setattr(sctp, "SACK_DELAY", 1.0)
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    former = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    try:
        async with join("held-sack", server, "alice") as alice:
            async with join("held-sack", server, "bob") as bob:
                await alice.wait_for_peer()
                await bob.wait_for_peer()
                transport = next(iter(bob.session.calls.values())).pc.sctp
                waiting = transport.transport.transport._connection._queue
                waiting.qsize = lambda: 1  # as with RTP waiting to be read
                transport._sack_needed = True
                await transport._send_sack()  # held back, its timer armed
                await next(iter(bob.session.calls.values())).close("gone", notify=False)  # no bye: nothing more comes
                await asyncio.sleep(1.2)  # the timer fires
                gc.collect()
                await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(former)
    assert not [context for context in errors if isinstance(context.get("exception"), ConnectionError)], errors


async def test_a_forged_sack_reporting_tsns_never_sent_is_dropped(server, monkeypatch):
    """A SACK's gap blocks name TSNs as offsets up to 65,535 past its cumulative TSN; aiortc
    1.16 puts every TSN each block spans in a set. A hostile peer's SACK of some 300 blocks
    spanning the whole range each (one packet) held the event loop some 2 s on these
    machines, every packet. Blocks reaching past the TSNs we ever assigned are a forgery:
    the SACK is dropped before aiortc sees it (``peer.sctp.skip_needless_retransmit_scans``
    wraps aiortc's SACK handling)."""
    from aiortc.rtcsctptransport import SackChunk

    handled: list[SackChunk] = []
    handle = RTCSctpTransport._receive_sack_chunk

    async def counted(self, chunk):
        handled.append(chunk)
        await handle(self, chunk)

    monkeypatch.setattr(RTCSctpTransport, "_receive_sack_chunk", counted)
    async with join("forged", server, "alice") as alice, join("forged", server, "bob") as bob:
        await alice.wait_for_peer()
        await bob.wait_for_peer()
        mallory = next(iter(alice.session.calls.values())).pc.sctp
        victim = next(iter(bob.session.calls.values())).pc.sctp
        forged = SackChunk()
        forged.cumulative_tsn = victim._last_sacked_tsn
        forged.advertised_rwnd = 1 << 20
        forged.gaps = [(1, 65535)] * 16
        await mallory._send_chunk(forged)
        alice.send_text("after the forgery")
        await bob.wait_for(peer.ChatMessage)
        assert not [chunk for chunk in handled if len(chunk.gaps) == 16], "the forged SACK reached aiortc"
        alice.send_text("still talking")
        await bob.wait_for(peer.ChatMessage, lambda event: event.text == "still talking")
