"""Delay every packet of an NFQUEUE queue by a fixed time: ``tc netem``'s delay for a kernel
without ``sch_netem``, in pure Python over a netlink socket (no libnetfilter_queue).

    python tests/nfqueue_delay.py --queue K --delay-ms N     # inside a network namespace

iptables ``-j NFQUEUE --queue-num K --queue-bypass`` hands it the packets; it holds each for N
ms and then accepts it. The delay is the same for all, so packets leave in the order they came,
and one batch verdict (``NFQNL_MSG_VERDICT_BATCH``: every id up to this one) lets through all
that are due; a notice lost to a full socket buffer is let through with the next batch. It
prints ``ready`` once bound; on exit the kernel drops what it holds and, with
``--queue-bypass``, lets later packets pass unqueued. Single-threaded: ``select`` with the time
to the next release as its timeout.

The message layouts are those of ``linux/netfilter/nfnetlink_queue.h``.
"""

from __future__ import annotations

import argparse
import collections
import errno
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NF_ACCEPT = 1
QUEUE_LENGTH = 16384
"""Packets the kernel holds for us; past it (fail-open) they pass undelayed rather than drop."""
RECEIVE_BUFFER = 16 << 20


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(kind: int, queue: int, attributes: bytes, seq: int, flags: int = 0) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attributes
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, NLM_F_REQUEST | flags, seq, 0) + body


def _messages(data: bytes):
    """(type, payload after the nlmsghdr) of each netlink message in ``data``."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        yield kind, data[offset + 16:offset + length]
        offset += (length + 3) & ~3


def _packet_id(payload: bytes) -> int | None:
    """The id in a packet notice's NFQA_PACKET_HDR (after the 4-byte nfgenmsg)."""
    offset = 4
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            return None
        if kind & 0x7FFF == NFQA_PACKET_HDR:
            return struct.unpack_from("!I", payload, offset + 4)[0]
        offset += (length + 3) & ~3
    return None


class DelayQueue:
    def __init__(self, queue: int, delay: float) -> None:
        self.queue = queue
        self.delay = delay
        self.held: collections.deque[tuple[float, int]] = collections.deque()
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE: root may exceed rmem_max
        self.sock.bind((0, 0))

    def _configure(self, attributes: bytes) -> None:
        self.seq += 1
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, attributes, self.seq, NLM_F_ACK))
        for kind, payload in _messages(self.sock.recv(65536)):
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, f"NFQUEUE {self.queue}: {errno.errorcode.get(code, code)}")

    def bind(self) -> None:
        self._configure(_attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._configure(_attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
        self._configure(_attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_LENGTH)))
        self._configure(_attribute(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
                        + _attribute(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)))
        self.sock.setblocking(False)

    def _receive(self) -> None:
        now = time.monotonic()
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno == errno.ENOBUFS:  # notices lost: the next batch verdict lets them through
                    continue
                raise
            for kind, payload in _messages(data):
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET and (packet := _packet_id(payload)) is not None:
                    self.held.append((now + self.delay, packet))

    def _release(self) -> None:
        now = time.monotonic()
        last = None
        while self.held and self.held[0][0] <= now:
            last = self.held.popleft()[1]
        if last is not None:
            self.seq += 1
            verdict = _attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last))
            self.sock.send(_message(NFQNL_MSG_VERDICT_BATCH, self.queue, verdict, self.seq))

    def run(self) -> None:
        while True:
            timeout = max(0.0, self.held[0][0] - time.monotonic()) if self.held else None
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if readable:
                self._receive()
            self._release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True, help="the NFQUEUE number (iptables --queue-num)")
    parser.add_argument("--delay-ms", type=float, required=True, help="how long each packet is held")
    args = parser.parse_args()
    queue = DelayQueue(args.queue, args.delay_ms / 1000)
    queue.bind()
    print("ready", flush=True)
    try:
        queue.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
