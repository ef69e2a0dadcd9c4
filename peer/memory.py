"""The peer process's memory: video frames freed go back to the system at once.

A call moves pictures of one to three megabytes, 30 times a second each way, allocated and
freed on several threads (PyAV's player, the encoders and decoders, the conversions). glibc's
malloc serves blocks that big with ``mmap`` at first, but the first one freed raises its
threshold to that size (its "dynamic mmap threshold"): from then on every picture comes from
the heaps of the threads' arenas, and each arena keeps what was freed (up to twice that
threshold at its top, and the holes between). At 1280x720 that was some 90 MB a peer
(bench/call.py: peak memory 288 MB, 193 MB with the threshold fixed; the CPU did not move
beyond the noise). Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``) turns the dynamic
one off: big blocks are mapped and unmapped, and the peak stays near what is in use.

Only where the C library is glibc; elsewhere nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from typing import Any, Optional

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter (malloc.h)."""
MMAP_THRESHOLD = 128 * 1024
"""glibc's own starting value: blocks from 128 KiB are mapped, always."""


def return_big_buffers(libc: Optional[Any] = None) -> bool:
    """Make blocks of ``MMAP_THRESHOLD`` and more come from ``mmap`` and go back to the system
    when freed, for the whole process; True when done (glibc), False where it cannot be."""
    if libc is None:
        if platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    try:
        return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, ctypes.ArgumentError) as error:
        logger.debug("mallopt failed: %s", error)
        return False
