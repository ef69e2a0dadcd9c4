"""Echo bot: sends every peer its own video back, mirrored, and echoes chat.

    python examples/echo_bot.py --room demo

In a room of more than two, each peer sees the mirrored pictures of everyone side by side
(a bot publishes one video track, which every peer receives).
"""

import _common
import cv2


def mirror(picture):
    return cv2.flip(picture, 1)  # 1: around the vertical axis


def echo(room, message):
    room.send_text(f"echo: {message.text}")


async def main(args):
    await _common.send_back(args, mirror, "echoing", on_chat=echo)


if __name__ == "__main__":
    parser = _common.parser("Send every peer its own video back, mirrored, and echo chat.")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the video sent back (default 15)")
    _common.run(main, parser.parse_args())
