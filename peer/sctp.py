"""Data channel speed: less work per SCTP packet in aiortc's ``RTCSctpTransport``.

Written against aiortc 1.16.0 and aioice 0.13.0; it reaches into their private parts
(``RTCSctpTransport._send_sack``, ``_transmit`` with ``_receive_sack_chunk``, ``_t3_expired`` and ``_local_tsn``,
``_get_inbound_stream`` and ``_inbound_streams``, ``InboundStream``; aioice's
``Connection._queue`` and ``_protocols``). With another aiortc than 1.16 nothing is changed, and
a reach that finds aiortc not as expected leaves the transport as aiortc made it (slower,
never wrong). Its tests: tests/test_data_channel.py and tests/test_data_channel_browser.py. The guards of
``peer.aiortc_fixes.guard_receipt`` wrap other steps of the same transport and stay in force.

Profiled between two processes (bench/transfer.py, py-spy), a file moving over a bare aiortc
channel costs a fixed amount of Python per SCTP packet of 1.2 kB on each side (DTLS through
pyOpenSSL, the event loop, the SCTP bookkeeping), with both processes near a full core. Two
costs per packet are aiortc's own choices, not the protocol's:

- **A SACK for every packet.** aiortc acknowledges each packet with DATA at once, so the
  receiver encrypts and sends one SACK per packet and the sender decrypts and handles each.
  RFC 9260 (6.2) asks for a SACK for at least every second packet, as usrsctp (Chrome,
  Firefox) sends them. ``delay_sacks`` keeps aiortc's SACK for a packet that leaves no other
  packet waiting to be read, or that shows a gap or duplicate, and otherwise sends one for every
  ``SACK_EVERY`` packets: never later than the next packet read, or ``SACK_DELAY`` at worst.
- **A small socket receive buffer.** The kernel's default for a UDP socket (208 KiB on Linux,
  some 90 packets) overflows whenever the receiving process waits for the CPU a few
  milliseconds; each packet dropped there costs aiortc a fast retransmit, or a timeout of a
  second or more with its congestion window back to one packet. On a loaded 2-core machine
  this, not the CPU, set the rate. ``widen_receive_buffers`` asks for RECEIVE_BUFFER on the
  ICE sockets once DATA flows (the kernel caps it at ``net.core.rmem_max``).
- **The sender looks through every chunk in flight for one to retransmit, each time it
  sends.** aiortc's ``_transmit`` (run for each SACK) walks its whole sent queue: some 900
  chunks with a congestion window of 1 MB, a quarter of the sender's time. A chunk is marked
  for retransmission only by a SACK that reports gaps or by the T3 timer expiring;
  ``skip_needless_retransmit_scans`` makes ``_transmit`` walk the queue only after one of those,
  until a walk has sent every marked chunk. On the way it drops SACKs whose gap blocks report
  TSNs never sent (``forged_gaps``), which cost aiortc seconds of the event loop each.
- **Reassembly rescans every fragment of a message for each new fragment** (quadratic in the
  fragments of a message: a 64 KiB message is 57 fragments). ``FastInboundStream`` scans only
  when a message may be complete: when a last fragment is among those held.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import weakref
from typing import Any, Iterator, Optional, cast

import aiortc
from aiortc.rtcsctptransport import (SCTP_DATA_LAST_FRAG, SCTP_TSN_MODULO, USERDATA_MAX_LENGTH, DataChunk,
                                     InboundStream, RTCSctpTransport, SackChunk)

logger = logging.getLogger(__name__)

WRITTEN_FOR = "1.16."
"""The aiortc versions whose private parts this module knows: with another, nothing is tuned
(``skip_needless_retransmit_scans`` carries a copy of 1.16's ``_transmit``)."""
SACK_EVERY = 2
"""Packets with DATA acknowledged by one SACK while more packets wait to be read (RFC 9260's
"at least every second packet"; aiortc's sender sends at most 4 packets per SACK, so more would
starve it)."""
SACK_DELAY = 0.02
"""The longest a SACK waits for the next packet (RFC 9260 allows 200 ms): when what was waiting
was no SCTP packet (a STUN check, RTP)."""

RECEIVE_BUFFER = 4 * 1024 * 1024
"""Bytes of UDP datagrams the kernel may hold for us (some 1,800 packets): a quarter of a second
of the fastest transfer."""

_tuned: "weakref.WeakSet[RTCSctpTransport]" = weakref.WeakSet()


def tune(transport: RTCSctpTransport) -> None:
    """Apply this module's changes to ``transport`` (once; any time, before or during a transfer)."""
    if transport in _tuned or not aiortc.__version__.startswith(WRITTEN_FOR):
        return
    _tuned.add(transport)
    try:
        fast_reassembly(transport)
        delay_sacks(transport)
        skip_needless_retransmit_scans(transport)
    except AttributeError as error:  # an aiortc not as written against: it stays as it is
        logger.debug("SCTP transport left untuned: %r", error)


class FastInboundStream(InboundStream):
    """aiortc's inbound stream, which looks for complete messages only when a last fragment is
    held: a message is complete only with its last fragment (``pop_messages`` yields nothing
    otherwise), so skipping the scan changes nothing but the time it took."""

    def __init__(self) -> None:
        super().__init__()
        self.may_pop = False
        """A last fragment may be held (set when one comes, kept while one is left unpopped)."""

    def add_chunk(self, chunk: DataChunk) -> None:
        super().add_chunk(chunk)
        if chunk.flags & SCTP_DATA_LAST_FRAG:
            self.may_pop = True

    def pop_messages(self) -> Iterator[tuple[int, int, bytes]]:
        if not self.may_pop:
            return
        yield from super().pop_messages()
        self.may_pop = any(chunk.flags & SCTP_DATA_LAST_FRAG for chunk in self.reassembly)


def fast_reassembly(transport: RTCSctpTransport) -> None:
    """Make the streams of ``transport`` ``FastInboundStream``s: those it creates from now on,
    and those it has. An answering peer has one already when it is tuned: aiortc makes a stream
    as the channel's OPEN message arrives, and announces the channel only then. (The class is
    swapped in place: the state is aiortc's, and ``may_pop`` set makes the first pop scan.)"""
    streams: dict[int, InboundStream] = transport._inbound_streams
    for stream in streams.values():
        if type(stream) is InboundStream:
            stream.__class__ = FastInboundStream
            cast(FastInboundStream, stream).may_pop = True

    def get(stream_id: int) -> InboundStream:
        stream = streams.get(stream_id)
        if stream is None:
            stream = streams[stream_id] = FastInboundStream()
        return stream

    transport._get_inbound_stream = get  # type: ignore[method-assign]


def delay_sacks(transport: RTCSctpTransport) -> None:
    """Send a SACK for every ``SACK_EVERY`` packets with DATA while more packets wait to be
    read; at once for a packet that leaves none waiting, or after a gap or duplicate (RFC 9260
    6.2 and 6.7, which want those reported at once).

    aiortc 1.16.0 calls ``_send_sack`` at the end of handling each packet that held DATA (or a
    FORWARD-TSN) and keeps ``_sack_needed`` set until one goes; a SACK held back here goes with
    the next packet handled, or from a timer (``SACK_DELAY``) if none comes."""
    send_sack = transport._send_sack
    waiting = _receive_queue(transport)
    if waiting is None:
        return
    held = 0
    timer: Optional[asyncio.TimerHandle] = None
    widened = False
    sending: set[asyncio.Future] = set()

    def flush() -> None:
        nonlocal timer
        timer = None
        if held and transport._sack_needed:
            task = asyncio.ensure_future(delayed())
            sending.add(task)  # the loop holds tasks weakly
            task.add_done_callback(sending.discard)

    async def delayed() -> None:
        """The timer's SACK: the connection may have closed meanwhile, and then none is owed."""
        if held and transport._sack_needed:
            try:
                await sack()
            except ConnectionError:  # closed since (a hang-up without bye): nobody awaits this task
                logger.debug("held SACK not sent: the connection closed")

    async def sack() -> None:
        nonlocal held, timer
        held = 0
        if timer is not None:
            timer.cancel()
            timer = None
        await send_sack()

    async def maybe_sack() -> None:
        nonlocal held, timer, widened
        if not widened:  # the first DATA: ICE has its sockets now
            widened = True
            widen_receive_buffers(transport)
        held += 1
        if held >= SACK_EVERY or not waiting.qsize() or transport._sack_misordered or transport._sack_duplicates:
            await sack()
        elif timer is None:
            timer = asyncio.get_running_loop().call_later(SACK_DELAY, flush)

    transport._send_sack = maybe_sack  # type: ignore[method-assign]


def skip_needless_retransmit_scans(transport: RTCSctpTransport) -> None:
    """Replace ``transport._transmit`` with aiortc 1.16.0's own, whose walk of the sent queue for
    chunks to retransmit runs only when some may be marked: after a SACK with gap reports or T3
    expiring (the only places aiortc marks them), until a walk completes (it then sent them all).
    It walks too whenever no T3 timer runs (nothing in flight, or a timer just expired): a timer
    armed before this replacement calls aiortc's ``_t3_expired``, which marks every chunk
    unseen by ``on_t3_expired``; without the walk they would wait for a gap report that may
    never come."""
    t: Any = transport
    receive_sack, t3_expired = t._receive_sack_chunk, t._t3_expired
    marked = False

    async def on_sack(chunk: SackChunk) -> None:
        nonlocal marked
        if chunk.gaps:
            if forged_gaps(t, chunk):
                logger.debug("SACK dropped: its gap blocks report TSNs never sent")
                return
            marked = True
        await receive_sack(chunk)

    def on_t3_expired() -> None:
        nonlocal marked
        marked = True
        t3_expired()

    async def transmit() -> None:
        """aiortc 1.16.0's ``RTCSctpTransport._transmit``, with its retransmission walk guarded."""
        nonlocal marked
        if t._forward_tsn_chunk is not None:
            await t._send_chunk(t._forward_tsn_chunk)
            t._forward_tsn_chunk = None
            if not t._t3_handle:
                t._t3_start()
        burst_size = (2 if t._fast_recovery_exit is not None else 4) * USERDATA_MAX_LENGTH
        cwnd = min(t._flight_size + burst_size, t._cwnd)
        if marked or t._t3_handle is None:  # no timer: one armed before us may have marked
            marked = False  # a chunk marked while this walk awaits a send is walked for again
            retransmit_earliest = True
            for chunk in t._sent_queue:
                if chunk._retransmit:
                    if t._fast_recovery_transmit:
                        t._fast_recovery_transmit = False
                    elif t._flight_size >= cwnd:
                        marked = True  # some are left marked: the next call walks again
                        return
                    t._flight_size_increase(chunk)
                    chunk._misses = 0
                    chunk._retransmit = False
                    chunk._sent_count += 1
                    await t._send_chunk(chunk)
                    if retransmit_earliest:
                        t._t3_restart()
                retransmit_earliest = False
        while t._outbound_queue and t._flight_size < cwnd:
            chunk = t._outbound_queue.popleft()
            t._sent_queue.append(chunk)
            t._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            await t._send_chunk(chunk)
            if not t._t3_handle:
                t._t3_start()

    t._receive_sack_chunk = on_sack
    t._t3_expired = on_t3_expired
    t._transmit = transmit


def forged_gaps(transport: Any, chunk: SackChunk) -> bool:
    """Whether ``chunk``'s gap blocks report TSNs past the last we assigned, or more TSNs than
    we assigned past its cumulative TSN: no SACK of a real peer does (RFC 9260 3.3.4), and
    aiortc 1.16 walks every TSN a block spans (up to 65,535 each, a packet holds hundreds)."""
    assigned = (transport._local_tsn - 1 - chunk.cumulative_tsn) % SCTP_TSN_MODULO
    if assigned >= SCTP_TSN_MODULO // 2:  # a cumulative TSN past every TSN assigned
        return True
    return any(end > assigned for _, end in chunk.gaps) or \
        sum(end - start + 1 for start, end in chunk.gaps) > assigned


def widen_receive_buffers(transport: RTCSctpTransport, size: int = RECEIVE_BUFFER) -> None:
    """Ask for ``size`` bytes of receive buffer on the UDP sockets of ``transport``'s ICE
    connection (where the kernel allows less, it gives what it allows)."""
    connection = getattr(getattr(transport.transport, "transport", None), "_connection", None)
    for protocol in list(getattr(connection, "_protocols", ())):
        sock = getattr(protocol, "transport", None) and protocol.transport.get_extra_info("socket")
        if sock is None:
            continue
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError as error:
            logger.debug("receive buffer left as it is: %r", error)


def _receive_queue(transport: RTCSctpTransport) -> Optional[Any]:
    """aioice's queue of datagrams received and not yet read, under ``transport`` (DTLS, then
    ICE); None where it is not there (no SACK is then held back)."""
    queue = getattr(getattr(getattr(transport.transport, "transport", None), "_connection", None), "_queue", None)
    return queue if isinstance(queue, asyncio.Queue) else None
