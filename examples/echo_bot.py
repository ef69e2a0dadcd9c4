"""Echo bot: sends every peer its own video back, mirrored, and echoes chat.

    python examples/echo_bot.py --room demo

In a room of more than two, each peer sees the mirrored pictures of everyone side by side
(a bot publishes one video track, which every peer receives).
"""

import _common
import cv2
import peer


async def main(args):
    source = peer.FrameSource(fps=args.fps, size=(320, 240))
    mirrored = {}  # member id -> its newest picture, mirrored

    async def mirror(room, member):
        try:
            async for picture in room.frames(member, latest=True):
                mirrored[member.id] = cv2.flip(picture, 1)  # 1: around the vertical axis
                source.push(_common.mosaic(list(mirrored.values())))
        finally:
            mirrored.pop(member.id, None)

    async with peer.join(args.room, video=source, **_common.options(args)) as room, _common.PerPeer() as per_peer:
        print(f"{args.name}: in room {args.room}; Ctrl-C to stop", flush=True)
        async for event in room.events():
            if isinstance(event, peer.Connected):
                print(f"echoing {event.member.name}", flush=True)
                per_peer.start(event.member, mirror(room, event.member))
            elif isinstance(event, (peer.CallEnded, peer.PeerLeft)):
                per_peer.stop(event.member)
            elif isinstance(event, peer.ChatMessage):
                room.send_text(f"echo: {event.text}")


if __name__ == "__main__":
    parser = _common.parser("Send every peer its own video back, mirrored, and echo chat.")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the video sent back (default 15)")
    _common.run(main, parser.parse_args())
