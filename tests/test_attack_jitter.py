"""Attacks on peer/jitter.py's video jitter buffer by a hostile sender (every RTP field is the
remote peer's to choose once DTLS is up), fed by hand: no sockets, no clock."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

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
