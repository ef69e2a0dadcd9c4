"""Attacks on peer/jitter.py's video jitter buffer by a hostile sender (every RTP field is the
remote peer's to choose once DTLS is up), fed by hand: no sockets, no clock."""

from __future__ import annotations

from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.jitter import VideoJitterBuffer


def packet(sequence_number: int, timestamp: int = 0, marker: bool = False) -> RtpPacket:
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=sequence_number % 65536,
                  timestamp=timestamp % (1 << 32))
    p._data = b"x" * 1000  # type: ignore[attr-defined]  # as aiortc's receiver depayloads
    return p


def test_numbers_walking_down_at_the_start_stay_within_the_capacity() -> None:
    """Before its first frame, the buffer lets a packet that comes before the earliest one held
    (the stream's first packets swapped) become the start. A sender that numbers each packet one
    below the last, one timestamp, no marker bit, moved that start down for ever: every packet
    held (tens of thousands, megabytes), and each one rescanning all held for the frame's end, so
    32,768 packets took minutes of the event loop. aiortc's own buffer drops them."""
    buffer = VideoJitterBuffer(capacity=64)
    for number in range(2000):
        buffer.add(packet(40000 - number))
        assert buffer.held <= 64, number
    buffer.add(packet(40001, 3000, True))  # the stream then goes on as it should
    assert buffer.held <= 64


TICKS = 3000
"""RTP timestamp ticks between frames at 30 fps."""


def frames(count: int, size: int = 5) -> list[list[RtpPacket]]:
    """``count`` frames of ``size`` packets each at 30 fps, numbered from 0, the marker bit on each one's last."""
    return [[packet(frame * size + index, frame * TICKS, index == size - 1) for index in range(size)]
            for frame in range(count)]


def test_a_retransmission_far_behind_after_its_frame_was_given_up_changes_nothing() -> None:
    """aiortc's receiver asks again for a missing packet at every new loss until it is 128
    behind, and its sender answers each time: an answer can come after the buffer gave the
    frame up and went 100 packets or more past it (a lossy path with a long round trip, a
    high packet rate). Taken for a sender that started again (aiortc's rule), it threw away
    the frame being received, asked for a keyframe, and began again at the stale packet; on
    a simulated path (5 % loss, 150 ms round trip, 30 packets a frame) a third of the frames
    were lost that way, and some stale tails were handed to the decoder as frames."""
    sent = frames(30)
    lost = sent[0].pop(2)
    buffer = VideoJitterBuffer(max_wait=3 * TICKS)
    got = []
    for frame in sent[:26]:
        for p in frame:
            got.append(buffer.add(p)[1])
    assert got[-1] is not None and got[-1].timestamp == 25 * TICKS  # the frame given up, the others flow
    for p in sent[26][:3]:
        assert buffer.add(p) == (False, None)
    assert buffer.add(lost) == (False, None), "a stale retransmission is no restart"
    buffer.add(sent[26][3])
    pli, frame = buffer.add(sent[26][4])
    assert not pli and frame is not None and frame.timestamp == 26 * TICKS and len(frame.data) == 5000


def test_a_retransmission_after_a_long_round_trip_completes_its_frame() -> None:
    """A lost packet comes again one round trip after it was missed; paths of 250 ms round trip
    (another continent, a mobile network) carry calls. Given up after 200 ms of media, every
    loss on such a path became a lost frame and a keyframe request (2 % loss: 3 a second, each
    a keyframe for the sender to make), where aiortc's buffer waited and lost nothing."""
    sent = frames(12)
    lost = sent[0].pop(2)
    buffer = VideoJitterBuffer()
    said = [buffer.add(p) for frame in sent[:9] for p in frame]  # up to 250 ms of media later
    assert not any(pli for pli, _ in said) and all(frame is None for _, frame in said)
    pli, frame = buffer.add(lost)
    assert not pli and frame is not None and frame.timestamp == 0 and len(frame.data) == 5000
    assert [f.timestamp for f in buffer.more()] == [n * TICKS for n in range(1, 9)]


def test_a_sender_that_starts_again_a_little_behind_is_still_taken_for_one() -> None:
    """What tells a late retransmission from a sender that started again: its media is no newer
    than what came, and not much older. Numbers 200 behind with timestamps of their own are a
    new start: a keyframe is asked for and its frames flow at once."""
    buffer = VideoJitterBuffer()
    for frame in frames(60):
        for p in frame:
            buffer.add(p)
    again = [packet(100 + frame * 2 + index, 123456789 + frame * TICKS, index == 1)
             for frame in range(2) for index in range(2)]
    said = [buffer.add(p) for p in again]
    assert said[0][0], "a keyframe asked"
    assert [f.timestamp for _, f in said if f is not None] == [123456789, 123456789 + TICKS]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from([1, -1, 0, 2, -150, 300, 40000]), st.booleans(),
                                st.sampled_from([0, 0, TICKS, -TICKS, 40000, 1 << 31]), st.integers(1, 40)),
                      max_size=40))
def test_whatever_a_sender_numbers_the_buffer_stays_bounded_and_hands_on_one_timestamp_a_frame(
        steps: list[tuple[int, bool, int, int]]) -> None:
    """Runs of numbers stepping on, back, repeating, leaping; timestamps still, back, leaping;
    marker bits anywhere: nothing is raised, the packets held span less than the capacity, and
    each frame handed on is made of packets of one timestamp, in their order."""
    buffer = VideoJitterBuffer(capacity=16, max_wait=2 * TICKS)
    number, timestamp = 1000, 0
    for step, marker, leap, run in steps:
        timestamp = (timestamp + leap) % (1 << 32)
        for _ in range(run):
            number += step
            feed(buffer, number, timestamp, marker)
            if buffer.held:
                assert max(buffer._packets) - min(buffer._packets) < 16


def feed(buffer: VideoJitterBuffer, number: int, timestamp: int, marker: bool) -> None:
    """Add a packet whose data names its timestamp and number; check what it brings out."""
    p = packet(number, timestamp, marker)
    p._data = b"%d,%d;" % (timestamp, number % 65536)  # type: ignore[attr-defined]
    _, frame = buffer.add(p)
    for made in ([frame] + buffer.more() if frame is not None else []):
        parts = [part.split(b",") for part in made.data.split(b";")[:-1]]
        assert {int(ts) for ts, _ in parts} == {made.timestamp}, made.data
        numbers = [int(n) for _, n in parts]
        assert numbers == [(numbers[0] + i) % 65536 for i in range(len(numbers))], made.data
