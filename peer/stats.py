"""The statistics of each call: what ``Room.stats()`` returns, the window's overlay shows, the
CLI's status line sums up and ``--stats`` writes.

aiortc's ``getStats()`` and our frame counts are totals since a connection began; the rates
(frames and bits a second, the share of packets lost) are the differences between two
readings, taken a second apart at least. Reading is cheap (counters, no I/O, nothing sent),
and a room reads its connections at most once a second however often it is asked.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from aiortc import RTCPeerConnection

from signaling.protocol import Member

from .aiortc_fixes import negotiated_codec, received_bytes, received_packets, selected_path

logger = logging.getLogger(__name__)

INTERVAL = 1.0
"""Seconds between two readings at least: rates over less would jitter with every frame."""

Size = tuple[int, int]


class FrameMeter:
    """The frames a video track passed on and the size of the last: fps and resolution, as
    what is sent and what is shown (aiortc's statistics count packets, not frames)."""

    def __init__(self) -> None:
        self.count = 0
        self.size: Optional[Size] = None

    def saw(self, frame: Any) -> None:
        self.count += 1
        self.size = (frame.width, frame.height)


@dataclass(frozen=True)
class CallStats:
    """One call's figures at ``time``; rates are over the second or so before it. A figure
    that cannot be known (nothing sent that way, no report from the other side yet) is None.

    ``path`` is "direct" (host candidates), "through NAT" (server or peer reflexive),
    "relayed" (TURN) or "unknown". ``loss_in`` is the share of the packets sent to us that were
    lost; ``loss_out`` the share of ours the other side last reported lost. Bitrates count
    the media's RTP payload, sound and video, in bits a second.
    """

    member: Member
    time: float
    """When read: seconds since the epoch."""
    path: str
    codec: Optional[str]
    """The video codec negotiated (``VP8``, ``H264``)."""
    resolution_in: Optional[Size]
    resolution_out: Optional[Size]
    fps_in: Optional[float]
    fps_out: Optional[float]
    bitrate_in: Optional[float]
    bitrate_out: Optional[float]
    rtt_ms: Optional[float]
    loss_in: Optional[float]
    loss_out: Optional[float]

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON takes them (the ``--stats`` lines): the member's name and id,
        the time in ISO 8601 (UTC), resolutions as ``640x480``, rates rounded."""
        moment = datetime.datetime.fromtimestamp(self.time, datetime.timezone.utc)
        return {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "member": self.member.name, "member_id": self.member.id, "path": self.path, "codec": self.codec,
            "resolution_in": _size(self.resolution_in), "resolution_out": _size(self.resolution_out),
            "fps_in": _round(self.fps_in, 1), "fps_out": _round(self.fps_out, 1),
            "bitrate_in": _round(self.bitrate_in), "bitrate_out": _round(self.bitrate_out),
            "rtt_ms": _round(self.rtt_ms, 1), "loss_in": _round(self.loss_in, 4), "loss_out": _round(self.loss_out, 4),
        }

    def lines(self) -> list[str]:
        """The figures for people, a few short lines (the window's overlay)."""
        return [
            f"in  {_size(self.resolution_in) or '-'} {_number(self.fps_in, ' fps')} {_bits(self.bitrate_in)}",
            f"out {_size(self.resolution_out) or '-'} {_number(self.fps_out, ' fps')} {_bits(self.bitrate_out)}",
            f"rtt {_milliseconds(self.rtt_ms)}  loss {_percent(self.loss_in)} in, {_percent(self.loss_out)} out",
            f"{self.codec or 'no video'}, path: {self.path}",
        ]

    def summary(self) -> str:
        """One short line for people (the CLI's status line), the name left out."""
        rates = f"{_number(self.fps_in)}/{_number(self.fps_out)} fps in/out"
        return f"{rates}, rtt {_milliseconds(self.rtt_ms)}, {self.path}"


@dataclass(frozen=True)
class Watched:
    """A connection to read: whose it is, and the meter of the video shown from it (if any)."""

    member: Member
    pc: RTCPeerConnection
    frames_in: Optional[FrameMeter]


@dataclass(frozen=True)
class _Reading:
    """One connection's totals at ``at`` (monotonic seconds)."""

    at: float
    pc: RTCPeerConnection
    bytes_in: Optional[int]
    bytes_out: int
    packets_in: Optional[tuple[int, int]]
    """Packets taken and lost."""
    frames_in: Optional[FrameMeter]
    count_in: int
    frames_out: Optional[FrameMeter]
    count_out: int
    rtt_ms: Optional[float]
    loss_out: Optional[float]


class StatsSampler:
    """Reads a room's connections, at most about once an ``interval``, and keeps each one's last
    reading to take the next one's differences from.

    Asked again within half an interval, it gives the figures it has: a status line, the
    window's overlay and ``--stats`` ask in the same second and share one reading. Half, not
    a whole one: a caller that asks once a second after ``asyncio.sleep(1)`` is woken up to a
    millisecond early by uvloop (libuv's timers count whole milliseconds), which with a whole
    interval got the last second's figures again, a line repeated in ``--stats``."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self._interval = interval
        self._readings: dict[str, _Reading] = {}
        self._latest: list[CallStats] = []
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def sample(self, watched: Callable[[], Sequence[Watched]]) -> list[CallStats]:
        """The figures of each connection ``watched()`` names. Asked again within the interval,
        the same figures; a connection never read before is read twice, an interval apart."""
        async with self._lock:
            if time.monotonic() - self._read_at < self._interval / 2:
                return self._latest
            new = [call for call in watched() if not self._known(call)]
            if new:
                for call, reading in zip(new, await asyncio.gather(*(_read(call) for call in new))):
                    if reading is not None:
                        self._readings[call.member.id] = reading
                await asyncio.sleep(self._interval)
            calls = list(watched())
            readings = await asyncio.gather(*(_read(call) for call in calls))
            self._latest = [_compare(call, self._readings.get(call.member.id), reading)
                            for call, reading in zip(calls, readings) if reading is not None]
            self._readings = {call.member.id: reading for call, reading in zip(calls, readings) if reading is not None}
            self._read_at = time.monotonic()
            return self._latest

    def _known(self, call: Watched) -> bool:
        before = self._readings.get(call.member.id)
        return before is not None and before.pc is call.pc


async def _read(call: Watched) -> Optional[_Reading]:
    """The connection's totals; None when it cannot be read (closed under our feet)."""
    pc = call.pc
    try:
        report = await pc.getStats()
        received = [received_bytes(receiver) for receiver in pc.getReceivers()]
        packets = [received_packets(receiver) for receiver in pc.getReceivers()]
        sender = next((s for s in pc.getSenders() if s.kind == "video" and s.track is not None), None)
    except Exception as error:  # a connection closing as it is read
        logger.debug("could not read the statistics of the call with %s: %r", call.member.name, error)
        return None
    stats = list(report.values())
    remote_inbound = sorted((s for s in stats if s.type == "remote-inbound-rtp"), key=lambda s: s.kind != "video")
    # aiortc takes the round trip from the other side's reports as they come (a smoothed
    # average); a forged delay since our report makes it negative, for a minute and more of
    # reports after: not known then, rather than 0.
    rtts = [s.roundTripTime for s in remote_inbound if s.roundTripTime is not None and s.roundTripTime > 0]
    meter_out = getattr(sender.track, "meter", None) if sender is not None else None
    meter_out = meter_out if isinstance(meter_out, FrameMeter) else None
    return _Reading(
        at=time.monotonic(), pc=pc,
        bytes_in=None if None in received else sum(b for b in received if b is not None),
        bytes_out=sum(s.bytesSent for s in stats if s.type == "outbound-rtp"),
        packets_in=None if None in packets else (sum(p[0] for p in packets if p), sum(p[1] for p in packets if p)),
        frames_in=call.frames_in, count_in=call.frames_in.count if call.frames_in else 0,
        frames_out=meter_out, count_out=meter_out.count if meter_out else 0,
        rtt_ms=rtts[0] * 1000 if rtts else None,
        loss_out=max((s.fractionLost / 256 for s in remote_inbound), default=None),
    )


def _compare(call: Watched, before: Optional[_Reading], now: _Reading) -> CallStats:
    """The figures of ``now``, its rates taken from ``before`` when that is of the same connection."""
    if before is None or before.pc is not now.pc or now.at <= before.at:
        before = None

    def per_second(old: Optional[float], new: Optional[float]) -> Optional[float]:
        if before is None or old is None or new is None or new < old:
            return None
        return (new - old) / (now.at - before.at)

    def fps(old_meter: Optional[FrameMeter], old: int, meter: Optional[FrameMeter], new: int) -> Optional[float]:
        return per_second(old, new) if meter is not None and meter is old_meter else None

    def bits(old: Optional[int], new: Optional[int]) -> Optional[float]:
        rate = per_second(old, new)
        return None if rate is None else rate * 8

    loss_in = None
    if before is not None and before.packets_in is not None and now.packets_in is not None:
        packets, lost = now.packets_in[0] - before.packets_in[0], max(0, now.packets_in[1] - before.packets_in[1])
        loss_in = lost / (packets + lost) if packets >= 0 and packets + lost > 0 else None
    return CallStats(
        member=call.member, time=time.time(), path=selected_path(now.pc), codec=negotiated_codec(now.pc, "video"),
        resolution_in=now.frames_in.size if now.frames_in else None,
        resolution_out=now.frames_out.size if now.frames_out else None,
        fps_in=fps(before.frames_in, before.count_in, now.frames_in, now.count_in) if before else None,
        fps_out=fps(before.frames_out, before.count_out, now.frames_out, now.count_out) if before else None,
        bitrate_in=bits(before.bytes_in, now.bytes_in) if before else None,
        bitrate_out=bits(before.bytes_out, now.bytes_out) if before else None,
        rtt_ms=now.rtt_ms, loss_in=loss_in, loss_out=now.loss_out,
    )


def _size(size: Optional[Size]) -> Optional[str]:
    return f"{size[0]}x{size[1]}" if size else None


def _round(value: Optional[float], digits: int = 0) -> Optional[float]:
    return None if value is None else round(value, digits)


def _number(value: Optional[float], unit: str = "") -> str:
    return "-" if value is None else f"{value:.0f}{unit}"


def _milliseconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1%}"


def _bits(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f} Mbit/s" if value >= 1e6 else f"{value / 1e3:.0f} kbit/s"
