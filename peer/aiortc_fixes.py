"""Workarounds for aiortc's behaviour, in one place: each says what it works around.

Written against aiortc 1.16.0 and aioice 0.13.0. Some reach into their private parts (a
coroutine's frame, ``RTCSctpTransport``'s receive steps and streams, and for the call
statistics a transceiver's codecs, a receiver's packet handler and streams, aioice's nominated pair
and check list);
when aiortc or aioice changes, this module is the one to check, and its tests are the attack
tests on oversized and undecodable messages (tests/test_attack_more.py,
tests/test_attack_moved.py), every call that is renewed, tests/test_stats.py,
tests/test_network_no_path.py, and for the
audio receiver's hold bench/latency.py (with the sound tests, which hear its sound), for the
video receiver's buffer tests/test_jitter.py and bench/frame_latency.py. The
statistics' reaches fail soft: a figure they cannot read is None, a path "unknown".
"""

from __future__ import annotations

import asyncio
import logging
import queue
import weakref
from typing import Any, Callable, Optional

from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcsctptransport import (SCTP_DATA_FIRST_FRAG, SCTP_DATA_LAST_FRAG, DataChunk, RTCSctpTransport,
                                     tsn_plus_one)

from .jitter import VideoJitterBuffer
from .reach import IceChecks, candidate_types

logger = logging.getLogger(__name__)

MAX_MESSAGE_FRAGMENTS = 1024
"""SCTP fragments of one data channel message (about 1.2 MB). We announce
``a=max-message-size:65536`` (some 55 fragments), so an honest sender never comes near it;
aiortc itself would reassemble a message of any size, rescanning its fragments on each new
one, so a peer sending one of hundreds of megabytes would cost the victim that much memory
and CPU time on the event loop. Past it, the connection is cut."""
AUDIO_PREFETCH = 1
"""Audio packets aiortc's receiver holds before it hands one to the decoder: its own 4 are
80 ms of delay on every call (bench/latency.py), where the speaker's jitter buffer
(peer/media/speaker.py) already rides over uneven arrival."""
MAX_HELD_CHUNKS = 16384
"""SCTP fragments one stream may hold in all (about 19 MB): a message sent out of order evades
the count above, and a lost chunk honestly holds back up to a congestion window of later ones."""


async def close_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc`` for good.

    aiortc 1.16.0 connects in a task of its own (``RTCPeerConnection.__connect``) that
    ``close()`` does not stop: closed half-way through connecting, that task then starts ICE
    consent checks and RTCP loops on the closed connection that never end (or fails,
    "RTCIceTransport is closed"). So it is cancelled first; aiortc keeps no handle on it, so
    it is found among all tasks by its coroutine's name and the ``self`` of its frame.

    ``close()`` itself is shielded: cancelled half-way, it would leave the connection marked
    closing for good, and every later ``close()`` of it (the call hanging up, or renewing the
    connection) would wait forever. A connection cut for an oversized message is closed by a
    task of its own that the call may cancel so.
    """
    connecting = [task for task in asyncio.all_tasks() if _connects(task, pc)]
    for task in connecting:
        task.cancel()
    await asyncio.gather(*connecting, return_exceptions=True)
    await asyncio.shield(pc.close())


def _connects(task: asyncio.Task, pc: RTCPeerConnection) -> bool:
    coroutine = task.get_coro()
    frame = getattr(coroutine, "cr_frame", None)
    return getattr(coroutine, "__qualname__", "") == "RTCPeerConnection.__connect" and \
        frame is not None and frame.f_locals.get("self") is pc


_guarded: "weakref.WeakSet[RTCSctpTransport]" = weakref.WeakSet()


def guard_receipt(transport: RTCSctpTransport, complain: Callable[[Exception], None],
                  oversized: Callable[[], None]) -> None:
    """Make a data channel message that cannot be handled cost that message, not the connection.

    aiortc 1.16.0 decodes text messages and runs the channels' ``message`` handlers inside its
    DTLS receive loop; any exception on the way (text that is not UTF-8, a handler's error, a
    second open of one stream) ends that loop, and with it the whole connection. So the
    transport's receive step (``_data_channel_receive``) is wrapped, once per transport: the
    exception is logged and the message dropped.

    Its receipt of data chunks (``_receive_data_chunk``) is bounded too, since aiortc
    reassembles messages of any size: once a stream receives a message of more than
    ``MAX_MESSAGE_FRAGMENTS`` fragments in a row, or holds more than ``MAX_HELD_CHUNKS``
    fragments of unfinished messages, they are dropped, nothing more is taken on that
    transport, and ``oversized`` is called once.
    """
    if transport in _guarded:
        return
    receive = transport._data_channel_receive
    receive_chunk = transport._receive_data_chunk
    runs: dict[int, tuple[int, int]] = {}
    """Per stream: the last chunk's TSN, and how many fragments in a row its message has had."""
    cut = False

    async def bounded(chunk: DataChunk) -> None:
        nonlocal cut
        if cut:
            return
        await receive_chunk(chunk)
        last, count = runs.get(chunk.stream_id, (chunk.tsn, 0))
        if chunk.flags & SCTP_DATA_FIRST_FRAG:
            count = 1
        elif count and chunk.tsn == tsn_plus_one(last):
            count += 1
        if chunk.flags & SCTP_DATA_LAST_FRAG:
            count = 0
        runs[chunk.stream_id] = (chunk.tsn, count)
        stream = transport._inbound_streams.get(chunk.stream_id)
        if count > MAX_MESSAGE_FRAGMENTS or stream is not None and len(stream.reassembly) > MAX_HELD_CHUNKS:
            cut = True
            if stream is not None:
                stream.reassembly.clear()
            oversized()

    async def guarded(stream_id: int, pp_id: int, data: bytes) -> None:
        try:
            await receive(stream_id, pp_id, data)
        except Exception as error:
            complain(error)

    transport._data_channel_receive = guarded  # type: ignore[method-assign]
    transport._receive_data_chunk = bounded  # type: ignore[method-assign]
    _guarded.add(transport)


PATHS = {"host": "direct", "srflx": "through NAT", "prflx": "through NAT", "relay": "relayed"}
"""What a pair of ICE candidates says of the path, by the candidates' types: the pair's path
is the farthest of its two ("relayed" over "through NAT" over "direct")."""
UNKNOWN_PATH = "unknown"


def _ice_connection(pc: RTCPeerConnection) -> Any:
    """aioice's ``Connection`` of ``pc``, which aiortc does not expose: behind
    ``RTCIceTransport._connection``, of the data channels' transport or else the first
    transceiver's (one for all with bundle). None before there is one."""
    try:
        transport = pc.sctp.transport.transport if pc.sctp is not None else \
            next(t.sender.transport.transport for t in pc.getTransceivers() if t.sender.transport is not None)
        return transport._connection
    except (AttributeError, StopIteration, TypeError) as error:
        logger.debug("no ICE connection to read: %r", error)
        return None


def selected_path(pc: RTCPeerConnection) -> str:
    """"direct", "through NAT", "relayed" (or "unknown"), from the ICE candidate pair the
    connection uses: aioice's ``Connection._nominated`` (component 1, the only one with bundle
    and rtcp-mux)."""
    try:
        pair = _ice_connection(pc)._nominated.get(1)
        if pair is None:
            return UNKNOWN_PATH
        paths = [PATHS.get(candidate.type, UNKNOWN_PATH) for candidate in (pair.local_candidate, pair.remote_candidate)]
    except (AttributeError, TypeError) as error:
        logger.debug("no ICE path to read: %r", error)
        return UNKNOWN_PATH
    for path in (UNKNOWN_PATH, "relayed", "through NAT"):
        if path in paths:
            return path
    return "direct"


def ice_checks(pc: RTCPeerConnection) -> Optional[IceChecks]:
    """Where ``pc``'s ICE checks stand (``peer.reach``), from aioice's check list
    (``Connection._check_list``, its pairs' ``state``), its nominated pairs, its candidates,
    and whether ``connect()`` began the checks (``_early_checks_done``). None where that cannot
    be read (before there is a connection, or aioice changed)."""
    connection = _ice_connection(pc)
    try:
        states = [pair.state.name for pair in connection._check_list]
        return IceChecks(
            started=bool(connection._early_checks_done), pairs=len(states),
            succeeded=states.count("SUCCEEDED") + len(connection._nominated),
            ours=candidate_types(c.type for c in connection.local_candidates),
            theirs=candidate_types(c.type for c in connection.remote_candidates))
    except (AttributeError, TypeError) as error:
        logger.debug("no ICE checks to read: %r", error)
        return None


def negotiated_codec(pc: RTCPeerConnection, kind: str) -> Optional[str]:
    """The codec (``VP8``, ``H264``, ``opus``) of the first ``kind`` transceiver: the first of its
    negotiated codecs that is not retransmission, which is the one aiortc's sender encodes
    with (``RTCRtpTransceiver._codecs``, set from the descriptions). None before negotiation."""
    for transceiver in pc.getTransceivers():
        if transceiver.kind != kind:
            continue
        codecs: Any = getattr(transceiver, "_codecs", ())
        for codec in codecs:
            name = str(getattr(codec, "mimeType", "")).partition("/")[2]
            if name and name.lower() != "rtx":
                return name
    return None


_received: "weakref.WeakKeyDictionary[RTCRtpReceiver, list[int]]" = weakref.WeakKeyDictionary()


def received_bytes(receiver: RTCRtpReceiver) -> Optional[int]:
    """The RTP payload bytes ``receiver`` has taken since this was first asked of it (0 then),
    or None where aiortc's receiver is not as expected.

    aiortc 1.16.0's inbound-rtp statistics have no ``bytesReceived`` (outbound-rtp has
    ``bytesSent``): so its packet handler (``_handle_rtp_packet``, looked up on the receiver
    for each packet) is wrapped to count, once per receiver.
    """
    if receiver in _received:
        return _received[receiver][0]
    handle = getattr(receiver, "_handle_rtp_packet", None)
    if handle is None:
        return None
    total = [0]

    async def counted(packet: Any, arrival_time_ms: int) -> None:
        total[0] += len(packet.payload)
        await handle(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = counted  # type: ignore[method-assign]
    _received[receiver] = total
    return 0


def received_packets(receiver: RTCRtpReceiver) -> Optional[tuple[int, int]]:
    """The packets ``receiver`` has taken and lost, over its streams but the retransmissions
    (RTX), or None where aiortc's receiver is not as expected.

    aiortc 1.16.0's inbound-rtp statistics are one per receiver, of whichever of its streams
    (by SSRC) came last: once a packet is asked again and comes on its own retransmission
    stream, that stream's, which loses nothing, or a stranger's that leaps its numbers. So its
    streams are read (``RTCRtpReceiver.__remote_streams``), less those the other side named
    as retransmissions (``__rtx_ssrc``)."""
    streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", None)
    retransmissions = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", None)
    if not isinstance(streams, dict) or not isinstance(retransmissions, dict):
        return None
    try:
        media = [stream for ssrc, stream in list(streams.items()) if ssrc not in retransmissions]
        return sum(s.packets_received for s in media), sum(max(0, s.packets_lost) for s in media)
    except (AttributeError, TypeError) as error:
        logger.debug("no packet counts to read: %r", error)
        return None


def hold_less_audio(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver``, if it receives audio, hold AUDIO_PREFETCH packets instead of aiortc's 4.

    aiortc 1.16.0 gives each audio receiver a private ``JitterBuffer(capacity=16, prefetch=4)``
    that passes a packet on only once 4 later ones came: 80 ms of mouth-to-ear delay, 60 of
    them more than needed (one is the least it can hold: a packet is known complete when the
    next begins; bench/latency.py measured 161.5 ms before, 101.5 after). Swapped before any packet arrives
    (on the ``track`` event); a receiver not as expected is left as it is.
    """
    name = "_RTCRtpReceiver__jitter_buffer"
    if getattr(receiver, "_RTCRtpReceiver__kind", None) == "audio" and \
            isinstance(getattr(receiver, name, None), JitterBuffer):
        setattr(receiver, name, JitterBuffer(capacity=16, prefetch=AUDIO_PREFETCH))


def complete_video_at_marker(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver``, if it receives video, hand each frame to its decoder as soon as the
    frame's last packet is in (``peer.jitter.VideoJitterBuffer``), not when the next frame begins.

    Written against aiortc 1.16.0 (read in its ``rtcrtpreceiver.py`` and ``jitterbuffer.py``;
    pyproject.toml pins the versions checked): each video receiver keeps a private
    ``JitterBuffer(capacity=512, is_video=True)`` as ``__jitter_buffer``, calls its
    ``add(packet)`` once per RTP packet (RTX unwrapped, depayloaded into ``packet._data``) and
    takes ``(pli_flag, frame or None)`` back, sending a PLI on the flag; a frame gets its
    timestamp from ``__timestamp_mapper`` and goes to ``__decoder_queue``, which its decoder
    thread, started by ``receive()``, reads. aiortc's buffer holds every frame until the next
    frame's first packet arrives: 33 ms at 30 fps (bench/frame_latency.py).

    Ours can make several frames whole with one packet (a late one), where aiortc takes one
    frame per packet: the decoder queue is swapped too, for one that queues the others
    (``VideoJitterBuffer.more``) right after the one ``add`` returned. Both are swapped before the
    receiver starts (on the ``track`` event); a receiver not as expected, or already started, is
    left as it is.
    """
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "video":
        return
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    decoding = getattr(receiver, "_RTCRtpReceiver__decoder_queue", None)
    mapper = getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None)
    if isinstance(buffer, VideoJitterBuffer):
        return
    if type(buffer) is not JitterBuffer or not getattr(buffer, "_is_video", False) or \
            type(decoding) is not queue.Queue or not callable(getattr(mapper, "map", None)) or \
            getattr(receiver, "_RTCRtpReceiver__started", True):
        logger.warning("aiortc's video receiver is not as expected: frames wait for the next one")
        return
    ours = VideoJitterBuffer(capacity=buffer.capacity)
    receiver._RTCRtpReceiver__jitter_buffer = ours  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_queue = _DecoderQueue(ours, mapper)  # type: ignore[attr-defined]


class _DecoderQueue(queue.Queue):
    """aiortc's decoder queue (``(codec, frame)``, or None to stop), that queues the frames the
    buffer made whole after each one handed to it, with their timestamps mapped as aiortc maps
    the first."""

    def __init__(self, buffer: VideoJitterBuffer, mapper: Any) -> None:
        super().__init__()
        self._buffer = buffer
        self._mapper = mapper

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        super().put(item, block, timeout)
        if item is not None:
            codec = item[0]
            for frame in self._buffer.more():
                frame.timestamp = self._mapper.map(frame.timestamp)
                super().put((codec, frame), block, timeout)


def packets_arrived(pc: RTCPeerConnection) -> Optional[int]:
    """How many datagrams ``pc``'s DTLS transports have taken from the other side (RTP, RTCP,
    SCTP: everything after ICE), or None where aiortc is not as expected: a sign of life that
    a lossy, slow link does not hide. aiortc counts them for its transport statistics
    (``RTCDtlsTransport.__rx_packets``); with bundle there is one transport."""
    try:
        transports = {t.receiver.transport for t in pc.getTransceivers()}
        if pc.sctp is not None:
            transports.add(pc.sctp.transport)
        counts = [getattr(t, "_RTCDtlsTransport__rx_packets", None) for t in transports if t is not None]
    except AttributeError as error:
        logger.debug("no packet count to read: %r", error)
        return None
    numbers = [count for count in counts if isinstance(count, int)]
    return sum(numbers) if numbers and len(numbers) == len(counts) else None
