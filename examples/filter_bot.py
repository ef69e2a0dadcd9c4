"""Filter bot: applies an OpenCV effect to the video it receives and sends it back.

    python examples/filter_bot.py --room demo --effect cartoon

Frames arrive as BGR numpy arrays and an effect is a function from one array to another;
``_common.send_back`` (shared with the echo bot) runs it on a worker thread for every
connected peer and publishes the result, with ``latest=True`` so a slow effect skips frames
instead of falling behind.
"""


import _common
import cv2
import numpy as np


def edges(picture: np.ndarray) -> np.ndarray:
    """White edges on black."""
    gray = cv2.GaussianBlur(cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    return cv2.cvtColor(cv2.Canny(gray, 50, 150), cv2.COLOR_GRAY2BGR)


def blur(picture: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(picture, (31, 31), 0)


def cartoon(picture: np.ndarray) -> np.ndarray:
    """Flat colours inside dark outlines."""
    flat = cv2.bilateralFilter(picture, 7, 60, 60) // 64 * 64 + 32  # four levels a channel
    gray = cv2.medianBlur(cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY), 5)
    outlines = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    return cv2.bitwise_and(flat, flat, mask=outlines)


EFFECTS = {"edges": edges, "cartoon": cartoon, "blur": blur}


async def main(args):
    await _common.send_back(args, EFFECTS[args.effect], args.effect)


if __name__ == "__main__":
    parser = _common.parser("Apply an OpenCV effect to the video received and send it back.")
    parser.add_argument("--effect", choices=sorted(EFFECTS), default="edges", help="the effect (default edges)")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the video sent back (default 15)")
    _common.run(main, parser.parse_args())
