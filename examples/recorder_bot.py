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
    if recording.frames_written:
        print(f"saved {recording.path} ({recording.frames_written} frames of {who})", flush=True)
    else:
        recording.path.unlink(missing_ok=True)
        print(f"nothing recorded of {who}", flush=True)


async def main(args):
    directory = Path(args.out)
    directory.mkdir(parents=True, exist_ok=True)
    recordings: dict[str, tuple[peer.Member, peer.Recorder]] = {}
    async with peer.join(args.room, **_common.options(args)) as room:
        print(f"{args.name}: recording room {args.room} into {directory}; Ctrl-C to stop", flush=True)
        try:
            async for event in room.events():
                if isinstance(event, peer.Connected) and event.member.id not in recordings:
                    path = file_for(directory, event.member.name)
                    recordings[event.member.id] = (event.member, room.record(event.member, path))
                    print(f"recording {event.member.name} to {path}", flush=True)
                elif isinstance(event, (peer.CallEnded, peer.PeerLeft)) and event.member.id in recordings:
                    await finish(recordings.pop(event.member.id)[1], event.member.name)
        finally:  # also when cancelled (Ctrl-C); shielded so that a cancel cannot cut a file short
            for member, recording in recordings.values():
                await asyncio.shield(finish(recording, member.name))


if __name__ == "__main__":
    parser = _common.parser("Record the video of each peer who joins to its own file.")
    parser.add_argument("--out", default="recordings", metavar="DIR", help="where the files go (default ./recordings)")
    _common.run(main, parser.parse_args())
