"""Player bot: plays a media file into the room, again and again.

    python examples/player_bot.py --room demo --file clip.mp4

The file's video (and its audio, if it has some) goes to everyone who connects; a file
is played in a loop by ``peer.join(video=PATH)`` itself.
"""

import _common
import peer
from signaling.text import printable


async def main(args):
    async with peer.join(args.room, video=args.file, video_size=args.video_size, **_common.options(args)) as room:
        print(f"{args.name}: playing {args.file} in room {args.room}; Ctrl-C to stop", flush=True)
        async for event in room.events():
            if isinstance(event, peer.Connected):
                print(f"playing to {printable(event.member.name)}", flush=True)
            elif isinstance(event, peer.CallEnded):
                print(f"{printable(event.member.name)} left ({event.reason})", flush=True)


if __name__ == "__main__":
    parser = _common.parser("Play a media file into a room, looping.")
    parser.add_argument("--file", required=True, help="the media file (or testsrc, lavfi:GRAPH, a camera)")
    parser.add_argument("--video-size", help="size to send, WIDTHxHEIGHT (default: the file's own)")
    _common.run(main, parser.parse_args())
