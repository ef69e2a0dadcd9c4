"""Recorder bot: records each peer who joins (video, and audio if sent) to its own file.

    python examples/recorder_bot.py --room demo --out recordings

A peer named alice goes to ``recordings/alice.mp4`` (``alice-2.mp4`` if that exists). The
file is finished when the peer leaves, and on Ctrl-C. ``room.record`` encodes on a thread
of each recording's own, so the event loop never waits for the encoder.
"""

import asyncio
import re
from pathlib import Path

import _common
import peer
from signaling.text import printable


def file_for(directory: Path, name: str) -> Path:
    stem = re.sub(r"[^\w@.-]+", "_", name).strip("._") or "peer"
    path, number = directory / f"{stem}.mp4", 1
    while path.exists():
        number += 1
        path = directory / f"{stem}-{number}.mp4"
    path.touch()  # claims the name
    return path


async def finish(recording: peer.Recorder, who: str) -> None:
    await recording.stop()
    if recording.file_started:
        print(f"saved {recording.path} ({recording.frames_written} frames of {who})", flush=True)
    else:
        recording.path.unlink(missing_ok=True)
        print(f"nothing recorded of {who}", flush=True)


async def record(room: peer.Room, member: peer.Member, directory: Path) -> None:
    path = file_for(directory, member.name)
    try:
        recording = room.record(member, path)
    except ValueError as error:  # the peer sends no media
        path.unlink()
        print(f"nothing to record: {error}", flush=True)
        return
    print(f"recording {printable(member.name)} to {path}", flush=True)
    try:
        await recording.wait()  # until the peer's tracks end
    finally:  # also when cancelled (the peer left, Ctrl-C); shielded so that a cancel cannot cut the file short
        await asyncio.shield(finish(recording, printable(member.name)))


async def main(args):
    directory = Path(args.out)
    directory.mkdir(parents=True, exist_ok=True)
    async with peer.join(args.room, **_common.options(args)) as room, _common.PerPeer() as per_peer:
        print(f"{args.name}: recording room {args.room} into {directory}; Ctrl-C to stop", flush=True)
        async for event in room.events():
            if isinstance(event, peer.Connected):  # again after a renewed connection: a new file
                per_peer.start(event.member, record(room, event.member, directory))
            elif isinstance(event, (peer.CallEnded, peer.PeerLeft)):
                per_peer.stop(event.member)


if __name__ == "__main__":
    parser = _common.parser("Record the video of each peer who joins to its own file.")
    parser.add_argument("--out", default="recordings", metavar="DIR", help="where the files go (default ./recordings)")
    _common.run(main, parser.parse_args())
