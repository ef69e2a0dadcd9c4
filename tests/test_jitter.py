"""peer/jitter.py's video jitter buffer, fed RTP packets by hand (no sockets, no clock); then
installed in aiortc's receiver (peer/aiortc_fixes.py), in a real call in VP8 and H.264.

Each scenario is a function of a buffer class. It passes for ``VideoJitterBuffer``; and, so
that it is known to test what it says, ``test_each_scenario_catches_what_it_is_about`` runs it
against aiortc's own buffer or a variant of ours broken in the one rule it is about, and
expects it to fail there.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

import peer
from bench.harness import read_stamp, stamp
from conftest import LOCAL
from peer.aiortc_fixes import complete_video_at_marker, negotiated_codec
from peer.jitter import CAPACITY, MAX_WAIT, VideoJitterBuffer

TICKS = 3000
"""RTP timestamp ticks between frames at 30 fps (90 kHz)."""


def packet(sequence_number: int, frame: int, index: int, marker: bool, base: int = 0) -> RtpPacket:
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=(base + sequence_number) % 65536,
                  timestamp=(frame * TICKS) % (1 << 32))
    p._data = f"{frame}.{index};".encode()  # type: ignore[attr-defined]  # as aiortc's receiver depayloads
    return p


def stream(sizes: list[int], base: int = 0) -> list[list[RtpPacket]]:
    """Frames 0, 1, ... of ``sizes[i]`` packets each, numbered on from ``base``."""
    frames, number = [], 0
    for frame, size in enumerate(sizes):
        frames.append([packet(number + i, frame, i, i == size - 1, base) for i in range(size)])
        number += size
    return frames


def whole(frames: list[list[RtpPacket]], frame: int) -> bytes:
    return b"".join(p._data for p in frames[frame])  # type: ignore[attr-defined]


class Feed:
    """A buffer and what it handed on for each packet fed to it (with ``more()``, as the
    receiver's decoder queue takes them: tests/test_jitter.py's integration part checks that)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.buffer = make()
        self.out: list[tuple[bool, list[bytes]]] = []

    def __call__(self, *packets: RtpPacket) -> list[Any]:
        """Feed ``packets``; for each, the frame (data) it brought out, None, or a tuple of several."""
        said: list[Any] = []
        for p in packets:
            pli, frame = self.buffer.add(p)
            frames = [frame] + getattr(self.buffer, "more", list)() if frame is not None else []
            self.out.append((pli, [f.data for f in frames]))
            data = self.out[-1][1]
            said.append(None if not data else data[0] if len(data) == 1 else tuple(data))
        return said

    @property
    def frames(self) -> list[bytes]:
        return [data for _, frames in self.out for data in frames]

    @property
    def pli(self) -> bool:
        return any(pli for pli, _ in self.out)


def aiortc_video() -> JitterBuffer:
    return JitterBuffer(capacity=512, is_video=True)


# Broken variants, one rule each ---------------------------------------------------------

class Lenient(VideoJitterBuffer):
    """Hands on whatever packets of a frame it holds, holes and all (a base for broken variants)."""

    def _hand_on(self, start: int, end: int) -> None:
        timestamp = next(p.timestamp for n, p in self._packets.items() if start <= n <= end)
        for number in range(start, end + 1):
            if number not in self._packets:
                hole = RtpPacket(sequence_number=number % 65536, timestamp=timestamp)
                hole._data = b""  # type: ignore[attr-defined]
                self._packets[number] = hole
        super()._hand_on(start, end)


class NoContiguity(Lenient):
    """Hands a frame on at its marker packet, holes and all."""

    def _frame_end(self, start: int, timestamp: int) -> Optional[int]:
        ends = [n for n, p in self._packets.items() if n >= start and p.timestamp == timestamp and p.marker]
        return min(ends) if ends else None


class NextFrameAcrossHoles(Lenient):
    """Takes the next frame's first packet as the end of a frame even with a packet missing before it."""

    def _frame_end(self, start: int, timestamp: int) -> Optional[int]:
        end = super()._frame_end(start, timestamp)
        later = [n for n, p in self._packets.items() if n > start and p.timestamp != timestamp]
        return end if end is not None else min(later) - 1 if later else None


class MarkerOnly(VideoJitterBuffer):
    """Has no fallback: a frame ends at a marker bit and nowhere else."""

    def _frame_end(self, start: int, timestamp: int) -> Optional[int]:
        number = start
        while (p := self._packets.get(number)) is not None:
            if p.marker:
                return number
            number += 1
        return None


class AnyStart(VideoJitterBuffer):
    """Takes any packet for a frame's first."""

    def _starts_frame(self, packet: RtpPacket) -> bool:
        return True


class NoWrap(VideoJitterBuffer):
    """Takes sequence numbers as they are, not wrapping at 65536."""

    def _extend(self, sequence_number: int) -> int:
        return sequence_number


class NeverGivesUp(VideoJitterBuffer):
    """Waits for a lost packet until the capacity overflows, as aiortc does."""

    def _stalled(self) -> bool:
        return False


class TakesLate(VideoJitterBuffer):
    """Takes a packet whose frame went already as if the sender had started again."""

    def _late(self, number: int, timestamp: int) -> bool:
        return False


# Scenarios ------------------------------------------------------------------------------

def marker_completes_at_once(make: Callable[[], Any]) -> None:
    frames = stream([3, 2, 1, 4])
    feed = Feed(make)
    for number, frame in enumerate(frames):
        said = feed(*frame)
        assert said == [None] * (len(frame) - 1) + [whole(frames, number)], f"frame {number}: {said}"
    assert not feed.pli


def marker_never_set_falls_back_to_next_frame(make: Callable[[], Any]) -> None:
    """A sender that does not set the marker bit: each frame ends where the next begins."""
    frames = stream([2, 3, 2])
    for frame in frames:
        for p in frame:
            p.marker = 0
    feed = Feed(make)
    said = feed(*frames[0], *frames[1], *frames[2])
    assert said == [None, None, whole(frames, 0), None, None, whole(frames, 1), None], said


def lost_marker_packet_waits_for_its_retransmission(make: Callable[[], Any]) -> None:
    """Frame 0's marker packet is lost: frame 0 is never handed on without it, nor frame 1 out of
    turn; its retransmission brings frame 0 at once, whole, and frame 1 right after it."""
    frames = stream([3, 2, 2])
    feed = Feed(make)
    said = feed(frames[0][0], frames[0][1], *frames[1])
    assert said == [None] * 4, said
    assert feed(frames[0][2]) == [(whole(frames, 0), whole(frames, 1))]
    assert feed(*frames[2]) == [None, whole(frames, 2)]


def swapped_within_a_frame(make: Callable[[], Any]) -> None:
    frames = stream([3, 2])
    feed = Feed(make)
    a, b, c = frames[0]
    assert feed(a, c, b) == [None, None, whole(frames, 0)]
    assert feed(frames[1][1], frames[1][0]) == [None, whole(frames, 1)]
    assert not feed.pli


def swapped_across_frames(make: Callable[[], Any]) -> None:
    """Frame 1's first packet overtakes frame 0's last: each frame is handed on when whole, in order."""
    frames = stream([2, 2, 2])
    feed = Feed(make)
    assert feed(frames[0][0], frames[1][0], frames[0][1]) == [None, None, whole(frames, 0)]
    assert feed(frames[1][1]) == [whole(frames, 1)]
    assert feed(frames[2][1], frames[2][0]) == [None, whole(frames, 2)]
    feed = Feed(make)  # frame 1 whole before frame 0: both come with frame 0's last packet
    assert feed(frames[0][0], *frames[1], frames[0][1]) == [None, None, None, (whole(frames, 0), whole(frames, 1))]
    assert not feed.pli


def lost_middle_packet_never_yields_a_corrupt_frame(make: Callable[[], Any]) -> None:
    """Frame 0's middle packet never comes: frame 0 is never handed on; once later media goes
    past MAX_WAIT, a keyframe is asked for and the frames after it flow again, whole."""
    frames = stream([3] + [2] * (MAX_WAIT // TICKS + 3))
    feed = Feed(make)
    feed(frames[0][0], frames[0][2])
    for frame in frames[1:]:
        feed(*frame)
    assert feed.frames, "nothing handed on after the loss"
    assert set(feed.frames) <= {whole(frames, n) for n in range(1, len(frames))}, feed.frames
    assert feed.pli


def frame_missing_its_first_packet_is_never_handed_on(make: Callable[[], Any]) -> None:
    """Frame 1's first packet never comes: frame 1 without it is no frame, frame 2 on are."""
    frames = stream([2, 3] + [2] * (MAX_WAIT // TICKS + 3))
    feed = Feed(make)
    feed(*frames[0], *frames[1][1:])
    for frame in frames[2:]:
        feed(*frame)
    assert whole(frames, 0) in feed.frames
    assert not any(data.startswith(b"1.") for data in feed.frames), feed.frames
    assert whole(frames, len(frames) - 2) in feed.frames
    assert feed.pli


def duplicates_change_nothing(make: Callable[[], Any]) -> None:
    frames = stream([2, 2, 2])
    feed = Feed(make)
    assert feed(frames[0][0], frames[0][0], frames[0][1]) == [None, None, whole(frames, 0)]
    assert feed(frames[0][1], frames[0][0]) == [None, None]  # retransmissions come too late
    assert feed(*frames[1], frames[1][1], *frames[2]) == [None, whole(frames, 1), None, None, whole(frames, 2)]
    assert not feed.pli


def wraps_around_at_65535(make: Callable[[], Any]) -> None:
    frames = stream([3, 3, 3], base=65532)
    feed = Feed(make)
    for number, frame in enumerate(frames):
        assert feed(*frame)[-1] == whole(frames, number)
    assert [p.sequence_number for p in frames[1]] == [65535, 0, 1]
    assert not feed.pli


def keyframe_asked_when_the_stream_breaks(make: Callable[[], Any]) -> None:
    """A lost packet for good (above), a sender that starts again (numbers jump back), a jump
    forward past the capacity: each asks for a keyframe, and frames flow again at once after."""
    frames = stream([2, 2])
    feed = Feed(make)
    feed(*frames[0])
    again = stream([2, 2], base=30000)  # 30000 behind the first numbers: the sender started again
    for frame in again:
        for p in frame:
            p.sequence_number = (p.sequence_number - 60000) % 65536
    assert feed(again[0][0])[0] is None and feed.out[-1][0], "a restart asks for a keyframe"
    feed(again[0][1])
    assert feed.frames[-1] == whole(again, 0)
    ahead = stream([2], base=(again[1][0].sequence_number + CAPACITY + 10) % 65536)[0]
    feed(*again[1])
    count = len(feed.out)
    assert feed(*ahead)[-1] == whole([ahead], 0)
    assert any(pli for pli, _ in feed.out[count:]), "a jump past the capacity asks for a keyframe"
    lost_middle_packet_never_yields_a_corrupt_frame(make)


SCENARIOS = {
    marker_completes_at_once: aiortc_video,
    marker_never_set_falls_back_to_next_frame: MarkerOnly,
    lost_marker_packet_waits_for_its_retransmission: NextFrameAcrossHoles,
    swapped_within_a_frame: NoContiguity,
    swapped_across_frames: aiortc_video,
    lost_middle_packet_never_yields_a_corrupt_frame: NoContiguity,
    frame_missing_its_first_packet_is_never_handed_on: AnyStart,
    duplicates_change_nothing: TakesLate,
    wraps_around_at_65535: NoWrap,
    keyframe_asked_when_the_stream_breaks: NeverGivesUp,
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_video_jitter_buffer(scenario: Callable[[Callable[[], Any]], None]) -> None:
    scenario(VideoJitterBuffer)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_each_scenario_catches_what_it_is_about(scenario: Callable[[Callable[[], Any]], None]) -> None:
    with pytest.raises(AssertionError):
        scenario(SCENARIOS[scenario])


def test_aiortc_holds_every_frame_until_the_next_begins() -> None:
    """What the buffer is for: aiortc's own hands frame 0 on only with frame 1's first packet."""
    frames = stream([2, 2])
    feed = Feed(aiortc_video)
    assert feed(*frames[0], frames[1][0]) == [None, None, whole(frames, 0)]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=40), base=st.integers(0, 65535),
       moves=st.lists(st.tuples(st.sampled_from(["drop", "swap", "repeat"]), st.integers(0, 10 ** 6)), max_size=30))
def test_whatever_the_network_does_frames_come_whole_in_order_once(sizes: list[int], base: int,
                                                                   moves: list[tuple[str, int]]) -> None:
    """Packets dropped, swapped with the next and repeated: every frame handed on is one that was
    sent, whole, after the one before it; the buffer never holds more than its capacity."""
    frames = stream(sizes, base)
    packets = [p for frame in frames for p in frame]
    for move, at in moves:
        at = 1 + at % len(packets)  # the first packet to come is taken as a frame's first, as aiortc does
        if at >= len(packets):
            continue
        if move == "drop":
            packets.pop(at)
        elif move == "swap" and at + 1 < len(packets):
            packets[at], packets[at + 1] = packets[at + 1], packets[at]
        elif move == "repeat":
            packets.insert(at, packets[at])
    feed = Feed(lambda: VideoJitterBuffer(capacity=64))
    for p in packets:
        feed(p)
        assert feed.buffer.held < 64
    sent = {whole(frames, n): n for n in range(len(frames))}
    numbers = [sent.get(data) for data in feed.frames]
    assert None not in numbers, feed.frames
    assert numbers == sorted(set(numbers)), numbers  # type: ignore[type-var]
    if not moves:
        assert numbers == list(range(len(frames)))


# Installed in aiortc's receiver ---------------------------------------------------------

async def test_the_installer_swaps_a_new_video_receivers_buffer_and_leaves_others_alone(caplog) -> None:
    pc = RTCPeerConnection()
    try:
        video, audio, odd = (pc.addTransceiver(kind).receiver for kind in ("video", "audio", "video"))
        odd._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=128)  # not aiortc 1.16's video buffer
        for receiver in (video, audio, odd):
            complete_video_at_marker(receiver)
        complete_video_at_marker(video)  # twice changes nothing
        assert isinstance(video._RTCRtpReceiver__jitter_buffer, VideoJitterBuffer)
        assert type(audio._RTCRtpReceiver__jitter_buffer) is JitterBuffer
        assert type(odd._RTCRtpReceiver__jitter_buffer) is JitterBuffer
        assert "not as expected" in caplog.text
    finally:
        await pc.close()


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_a_call_receives_video_whole_and_in_order_through_our_buffer(server, codec, caplog) -> None:
    """Two bots in a real call: the receiver's video goes through VideoJitterBuffer, every
    picture decodes (aiortc logs each frame it fails to decode) and the numbers stamped into
    them come back in order."""
    source = peer.FrameSource(fps=30, size=(320, 240))

    async def count_up() -> None:
        for number in range(1 << 20):
            picture = np.full((240, 320, 3), 100, np.uint8)
            picture[80:] = np.random.default_rng(number).integers(0, 255, (160, 320, 3), np.uint8)  # a few packets a frame
            stamp(picture, number)
            source.push(picture)
            await asyncio.sleep(1 / 30)

    async with peer.join("jitter", server=server.url, name="sender", video=source, codec=codec,
                         ice_hosts=[LOCAL]), \
            peer.join("jitter", server=server.url, name="receiver", codec=codec, ice_hosts=[LOCAL]) as receiver:
        counting = asyncio.ensure_future(count_up())
        member = await receiver.wait_for_peer()
        numbers = []
        async for picture in receiver.frames(member, latest=False):
            numbers.append(read_stamp(picture))
            if len(numbers) == 60:
                break
        counting.cancel()
        pc = receiver.session.calls[member.id].pc
        receivers = [t.receiver for t in pc.getTransceivers() if t.kind == "video"]
        assert receivers and all(isinstance(r._RTCRtpReceiver__jitter_buffer, VideoJitterBuffer) for r in receivers)
        assert negotiated_codec(pc, "video") == {"vp8": "VP8", "h264": "H264"}[codec]
    steps = [(b - a) % 256 for a, b in zip(numbers[1:], numbers[2:])]  # the first may be black
    assert all(0 <= step <= 4 for step in steps), numbers
    assert "failed to decode" not in caplog.text
