"""Files over the data channel at speed (``peer.transfer``, ``peer.sctp``): every size arrives
whole, whatever the chunking, the batching of writes, the peer's announced message size, or
packets lost on the way. In-process peers against a real server on 127.0.0.1."""

import asyncio
import hashlib
import os
import random
from pathlib import Path

import pytest
from aiortc.rtcsctptransport import (SCTP_DATA_FIRST_FRAG, SCTP_DATA_LAST_FRAG, SCTP_DATA_UNORDERED, DataChunk,
                                     InboundStream, RTCSctpCapabilities, RTCSctpTransport)
from hypothesis import given, settings
from hypothesis import strategies as st

import peer
from conftest import LOCAL
from peer.sctp import FastInboundStream
from peer.transfer import CHUNK, READ_BLOCK, WRITE_BLOCK


def join(room: str, server, name: str, **options):
    return peer.join(room, server=server.url, name=name, ice_hosts=[LOCAL], **options)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def send_all(server, tmp_path: Path, sizes: list[int], room: str = "sizes",
                   prepare=None) -> dict[str, bytes]:
    """Send a file of each size from alice to bob; check each saved file against what was sent."""
    downloads = tmp_path / "downloads"
    contents = {f"file{n}.bin": os.urandom(size) for n, size in enumerate(sizes)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    async with join(room, server, "alice") as alice, join(room, server, "bob", downloads=downloads) as bob:
        await alice.wait_for_peer()
        await bob.wait_for_peer()
        if prepare is not None:
            prepare(alice, bob)
        for name, data in contents.items():
            sent = await asyncio.wait_for(alice.send_file(tmp_path / name), 120)
            received = await bob.wait_for(peer.FileReceived, lambda event, name=name: event.path.name == name)
            assert sent == received.sha256 == sha256(data), name
            assert received.path.read_bytes() == data, name
    assert sorted(p.name for p in downloads.iterdir()) == sorted(contents), "a leftover beside the files"
    return contents


async def test_files_whose_last_chunk_is_smaller_or_whole_or_empty_arrive_whole(server, tmp_path):
    await send_all(server, tmp_path, [
        3 * CHUNK + 1000,  # the last chunk smaller than the rest
        4 * CHUNK,  # a multiple of the chunk size
        0,  # empty
        READ_BLOCK + 1,  # one byte past a block read
        2 * WRITE_BLOCK + CHUNK // 3,  # writes handed over in blocks, and a rest at the end
        1,
    ])


async def test_a_peer_announcing_small_messages_gets_chunks_it_takes(server, tmp_path, monkeypatch):
    """Both peers announce ``a=max-message-size:16384`` (as a stack with a small limit would):
    the sender's chunks must stay within it, or aiortc refuses to send them."""
    announced = 16384
    monkeypatch.setattr(RTCSctpTransport, "getCapabilities",
                        classmethod(lambda cls: RTCSctpCapabilities(maxMessageSize=announced)))
    seen: list[int] = []

    def watch(alice, bob) -> None:
        call = next(iter(alice.session.calls.values()))
        assert call.pc.sctp._remote_max_message_size == announced
        channel = call._sender.channel
        send = channel.send
        channel.send = lambda data: (seen.append(len(data)), send(data))[1]

    await send_all(server, tmp_path, [5 * announced + 7], room="small-messages", prepare=watch)
    chunks = [size for size in seen if size != 0]
    assert max(chunks) == announced


async def test_a_file_arrives_whole_through_lost_packets(server, tmp_path):
    """One datagram in 50 is dropped on arrival, both ways: lost DATA and lost SACKs must be
    found again (gap reports with SACKs held back, retransmissions, timers)."""
    chance = random.Random(12)

    def lossy(room) -> None:
        for call in room.session.calls.values():
            connection = call.pc.sctp.transport.transport._connection
            receive = connection.data_received
            connection.data_received = lambda data, component: chance.random() < 0.02 or receive(data, component)

    await send_all(server, tmp_path, [2 * 1024 * 1024], room="lossy", prepare=lambda alice, bob: (lossy(alice), lossy(bob)))


# Reassembly, without sockets: FastInboundStream pops what aiortc's InboundStream pops.

def fragments(messages: list[tuple[int, bool]], first_tsn: int) -> list[DataChunk]:
    """DATA chunks for messages of (fragment count, ordered), TSNs and sequence numbers in order."""
    chunks, tsn, seq = [], first_tsn, 0
    for count, ordered in messages:
        for n in range(count):
            chunk = DataChunk(flags=(SCTP_DATA_FIRST_FRAG if n == 0 else 0) |
                              (SCTP_DATA_LAST_FRAG if n == count - 1 else 0) | (0 if ordered else SCTP_DATA_UNORDERED))
            chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = tsn % 2**32, 1, seq, 53
            chunk.user_data = f"{tsn}:{n}/{count};".encode()
            chunks.append(chunk)
            tsn += 1
        if ordered:
            seq += 1
    return chunks


def popped(stream: InboundStream, chunks: list[DataChunk]) -> list[list[bytes]]:
    return [[message for _, _, message in stream.pop_messages()] for chunk in chunks if not stream.add_chunk(chunk)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=8),
       st.integers(0, 2**32 - 1), st.randoms(use_true_random=False), st.integers(0, 8))
def test_fast_reassembly_pops_what_aiortc_pops(messages, first_tsn, rng, shuffle_window):
    chunks = fragments(messages, first_tsn)
    for start in range(0, len(chunks), shuffle_window or 1):  # arrival out of order, within windows
        window = chunks[start:start + (shuffle_window or 1)]
        rng.shuffle(window)
        chunks[start:start + len(window)] = window
    assert popped(FastInboundStream(), chunks) == popped(InboundStream(), chunks)


async def test_streams_an_answering_peer_had_before_the_tuning_reassemble_fast_too():
    """An answering peer is tuned as the channel is announced, after aiortc made the channel's
    stream for its OPEN message: that stream is made a FastInboundStream too, and still
    delivers whole messages."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from peer import sctp
    from peer.ice import use_host_addresses
    use_host_addresses(["127.0.0.1"])
    a, b = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    announced: asyncio.Future = asyncio.get_running_loop().create_future()
    b.on("datachannel", announced.set_result)
    channel = a.createDataChannel("files")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    remote = await asyncio.wait_for(announced, 10)
    try:
        assert b.sctp._inbound_streams, "aiortc made no stream before announcing the channel"
        sctp.tune(b.sctp)
        assert all(isinstance(stream, sctp.FastInboundStream) for stream in b.sctp._inbound_streams.values())
        received: asyncio.Queue = asyncio.Queue()
        remote.on("message", received.put_nowait)
        message = os.urandom(200_000)  # many fragments
        await asyncio.wait_for(opened.wait(), 10)
        channel.send(message)
        assert await asyncio.wait_for(received.get(), 10) == message
    finally:
        await a.close()
        await b.close()
