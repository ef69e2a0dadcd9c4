"""Attacks on the fast data channel (``peer.transfer``, ``peer.sctp``) from issue 12's review:
a receiver announcing a tiny ``a=max-message-size``, and SCTP's retransmission bookkeeping
when a chunk is marked while a walk of the sent queue is under way."""

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
