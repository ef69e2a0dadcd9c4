"""A video jitter buffer that hands a frame on as soon as its last packet is in.

aiortc 1.16's video receiver (``RTCRtpReceiver``) keeps a private
``JitterBuffer(capacity=512, is_video=True)`` that knows a frame is whole only when the first
packet of the *next* frame arrives: every frame waits one frame interval (33 ms at 30 fps)
before it reaches the decoder, on every call. ``VideoJitterBuffer`` has the same interface
(``add(packet) -> (pli_flag, frame or None)``) and hands a frame on when

- its last packet, the one with the RTP marker bit (RFC 3550; VP8 and H.264 senders set it on a
  frame's last packet, aiortc's included), is in, and
- every packet from the frame's first to that one is in (contiguous sequence numbers), and
- the frame's first packet is known to be one: the packet before it ended the previous frame
  (marker bit) or had another timestamp.

When the marker bit never comes (a sender that does not set it), the next frame's first packet
still ends a frame, as in aiortc. A frame is never handed on with a hole in it: a lost packet
is waited for (aiortc's receiver asks for it again with a NACK, and the sender retransmits it)
for up to ``max_wait`` of media time (RTP timestamps, so this module needs no clock); then the
frames that cannot be whole are dropped, up to a packet proven to start a frame, and a picture
loss indication (PLI) is asked for, since later frames refer to the ones dropped. PLI is also
asked, as aiortc does, when the sequence numbers jump back by ``MAX_MISORDER`` or more (the
sender restarted; not for a retransmission that comes late, see ``_late``) or forward by
``capacity`` or more.

Sans-I/O: no sockets, no event loop, no clock; the unit tests (tests/test_jitter.py, and a
hostile sender's packets in tests/test_attack_jitter.py) feed it packets. Memory is bounded: packets held span fewer than ``capacity`` sequence numbers, and
frames made whole but not yet taken (several may complete at one packet: ``add`` returns the
first, ``more`` the others) are bounded by the packets they were made of.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional, Union

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

CAPACITY = 512
"""Sequence numbers the buffer spans at most, as aiortc's video buffer."""
MAX_MISORDER = 100
"""A packet this far behind the next one expected means the sender started again (aiortc's rule)."""
CLOCK_RATE = 90000
"""The RTP clock of every video codec (RFC 3551)."""
MAX_WAIT = CLOCK_RATE // 2
"""How much later media (RTP timestamp ticks, 500 ms) may arrive while a frame waits for a lost
packet: a NACK and its retransmission take a round trip, and calls run on paths of 250 to 400 ms
(another continent, a mobile network). At 200 ms, every loss on such a path cost a frame and a
keyframe request (tests/test_attack_jitter.py); aiortc's own buffer waits for 512 packets."""
MAX_LATE = CLOCK_RATE * 10
"""How much older than the newest media a packet far behind may be and still be a late
retransmission rather than a sender that started again (10 s of RTP timestamp ticks)."""


@dataclass(frozen=True)
class _Edge:
    """What is known of the packet just before the next one expected."""

    timestamp: int
    marker: bool


_FIRST = "first"
"""Nothing before is known (the stream began, or began again): the earliest packet is taken as a
frame's first, as aiortc does (a stream whose very first packet is lost or overtaken gives the
decoder one partial frame, which it reports; the receiver then asks for a keyframe)."""
_LOST = "lost"
"""The packet before was given up: the next one starts a frame only if that is proven."""


def _later(a: int, b: int) -> int:
    """How many RTP timestamp ticks ``a`` is after ``b`` (negative when before), modulo 2**32."""
    return (a - b + (1 << 31)) % (1 << 32) - (1 << 31)


class VideoJitterBuffer:
    """Reassembles encoded video frames from RTP packets; see the module's docstring."""

    def __init__(self, capacity: int = CAPACITY, max_wait: int = MAX_WAIT) -> None:
        self._capacity = capacity
        self._max_wait = max_wait
        self._packets: dict[int, RtpPacket] = {}
        """Held packets by extended sequence number (one that does not wrap at 65536)."""
        self._next: Optional[int] = None
        """The extended sequence number of the first packet not yet handed on or dropped."""
        self._before: Union[_Edge, str] = _FIRST
        self._highest = 0
        self._newest = 0
        """The timestamp of the packet with the highest sequence number: how far the media has come."""
        self._ready: deque[JitterFrame] = deque()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def held(self) -> int:
        """Packets held, waiting for the rest of their frames."""
        return len(self._packets)

    def add(self, packet: RtpPacket) -> tuple[bool, Optional[JitterFrame]]:
        """Take ``packet`` (its depayloaded data in ``packet._data``, as aiortc's receiver sets it);
        return whether to ask the sender for a keyframe, and the next whole frame if one is
        (the frames after it that the packet made whole too: ``more()``)."""
        pli = self._take(packet)
        pli = self._collect() or pli
        return pli, self._ready.popleft() if self._ready else None

    def more(self) -> list[JitterFrame]:
        """The frames made whole by the last packet after the one ``add`` returned (a late packet
        that completes several), in order; those not taken come one per ``add``."""
        frames = list(self._ready)
        self._ready.clear()
        return frames

    # Taking packets in

    def _take(self, packet: RtpPacket) -> bool:
        """Hold ``packet`` unless it is late or a duplicate; True when the stream broke (PLI)."""
        if self._next is None:
            self._restart(packet.sequence_number, packet.timestamp)
        assert self._next is not None
        number = self._extend(packet.sequence_number)
        pli = False
        if number < self._next and self._before == _FIRST and self._next - number < MAX_MISORDER \
                and self._highest - number < self._capacity:
            self._next = number  # the stream's first packets came out of order: begin at the earliest
        elif self._late(number, packet.timestamp):
            return False
        elif number < self._next:  # far behind: the sender started again
            self._restart(number, packet.timestamp)
            pli = True
        elif number - self._next >= self._capacity:
            self._make_room(number, packet.timestamp)
            pli = True
        if number not in self._packets:
            self._packets[number] = packet
            if number >= self._highest:
                self._highest, self._newest = number, packet.timestamp
        return pli

    def _late(self, number: int, timestamp: int) -> bool:
        """A packet whose frame was handed on or given up already (a duplicate, a retransmission too late).

        Further behind than aiortc's ``MAX_MISORDER`` too, within the capacity, when its media is
        no newer than the newest and at most ``MAX_LATE`` older: a retransmission asked again
        (aiortc's receiver asks for each missing packet again at every new loss, until 128
        behind) and answered after the frame was given up, or a copy of one answered twice.
        Taken for a restart, as aiortc does, it threw away the frames held, asked a keyframe,
        and began again at the stale packet. A sender that restarts numbers and timestamps
        (both at random) is taken for one all the same, but for about one time in 10**6."""
        assert self._next is not None
        behind = self._next - number
        return 0 < behind < MAX_MISORDER or \
            0 < behind < self._capacity and 0 <= _later(self._newest, timestamp) <= MAX_LATE

    def _extend(self, sequence_number: int) -> int:
        """The extended sequence number nearest to the highest seen (wrap-around at 65536)."""
        step = (sequence_number - self._highest) % 65536
        return self._highest + (step - 65536 if step >= 32768 else step)

    def _restart(self, number: int, timestamp: int) -> None:
        """Begin again at ``number``, as at the stream's first packet."""
        self._packets.clear()
        self._next = self._highest = number
        self._newest = timestamp
        self._before = _FIRST

    def _make_room(self, number: int, timestamp: int) -> None:
        """Give up what is held before ``number`` - capacity + 1; past everything held, start again."""
        assert self._next is not None
        keep = number - self._capacity + 1
        if keep > self._highest:
            self._restart(number, timestamp)
            return
        while self._next < keep:
            self._drop_next()

    # Handing frames on

    def _collect(self) -> bool:
        """Move every frame now whole to ``_ready``; True when frames had to be given up (PLI)."""
        gave_up = False
        while True:
            while self._step():
                pass
            if not self._stalled():
                return gave_up
            self._give_up()
            gave_up = True

    def _step(self) -> bool:
        """Hand on the frame at ``_next``, or drop a packet that cannot start one; False when waiting."""
        assert self._next is not None
        first = self._packets.get(self._next)
        if first is None:
            return False
        if not self._starts_frame(first):
            self._drop_next()  # the rest of a frame whose beginning was given up: no decoder wants it
            return True
        end = self._frame_end(self._next, first.timestamp)
        if end is None:
            return False
        self._hand_on(self._next, end)
        return True

    def _starts_frame(self, packet: RtpPacket) -> bool:
        before = self._before
        if isinstance(before, _Edge):
            return before.marker or before.timestamp != packet.timestamp
        return before == _FIRST

    def _frame_end(self, start: int, timestamp: int) -> Optional[int]:
        """The sequence number of the last packet of the frame beginning at ``start``, once every
        packet of it is in: the one with the marker bit, or (its marker lost) the one before
        the next frame's first packet. None while a packet is missing."""
        number = start
        while (packet := self._packets.get(number)) is not None:
            if packet.timestamp != timestamp:
                return number - 1
            if packet.marker:
                return number
            number += 1
        return None

    def _hand_on(self, start: int, end: int) -> None:
        packets = [self._packets.pop(number) for number in range(start, end + 1)]
        self._ready.append(JitterFrame(data=b"".join(getattr(p, "_data") for p in packets),
                                       timestamp=packets[0].timestamp))
        self._before = _Edge(packets[-1].timestamp, bool(packets[-1].marker))
        self._next = end + 1

    def _drop_next(self) -> None:
        assert self._next is not None
        packet = self._packets.pop(self._next, None)
        self._before = _LOST if packet is None else _Edge(packet.timestamp, bool(packet.marker))
        self._next += 1

    # Giving up on a lost packet

    def _stalled(self) -> bool:
        """A packet is missing at or after ``_next`` and media ``max_wait`` newer has arrived."""
        if not self._packets:
            return False
        assert self._next is not None
        oldest = self._packets.get(self._next)
        if oldest is None:
            oldest = self._packets[min(self._packets)]
        return _later(self._newest, oldest.timestamp) > self._max_wait

    def _give_up(self) -> None:
        """Drop every packet up to and including the first one missing."""
        assert self._next is not None
        while self._next in self._packets:
            self._drop_next()
        self._drop_next()
