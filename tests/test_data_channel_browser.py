"""Chromium's SCTP (usrsctp) and ours at speed (``peer.sctp``: SACKs held back, the sender's
retransmission walk skipped, larger socket buffers; 64 KiB messages): a few megabytes each way
between a Chromium page and an aiortc connection tuned as our peers' are, sha256 checked.

The page is the signaling server's (any page of ours would do); the SDP goes through
Playwright. Traffic stays on 127.0.0.1.
"""

import asyncio
import hashlib
import os
import threading

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from conftest import LOCAL
from peer import sctp
from peer.ice import use_host_addresses
from peer.transfer import CHUNK

SIZE = 4 * 1024 * 1024

ANSWER = """async (offer) => {
    const pc = new RTCPeerConnection({ iceServers: [] });
    window.bulk = new Promise((resolve) => { pc.ondatachannel = (event) => {
        event.channel.binaryType = "arraybuffer"; resolve(event.channel); }; });
    await pc.setRemoteDescription(offer);
    await pc.setLocalDescription();
    if (pc.iceGatheringState !== "complete") {
        await new Promise((resolve) => pc.addEventListener("icegatheringstatechange",
            () => pc.iceGatheringState === "complete" && resolve()));
    }
    window.pc = pc;
    return { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
}"""

RECEIVE = """(size) => { window.receiving = (async () => {
    const channel = await window.bulk;
    const parts = [];
    let got = 0;
    await new Promise((resolve) => {
        channel.onmessage = (event) => { parts.push(new Uint8Array(event.data)); got += event.data.byteLength;
                                         if (got >= size) resolve(); };
    });
    const all = new Uint8Array(got);
    let at = 0;
    for (const part of parts) { all.set(part, at); at += part.length; }
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
    return { got, sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("") };
})(); }"""

SEND = """async ({ size, chunk }) => {
    const channel = await window.bulk;
    const all = new Uint8Array(size);
    for (let at = 0; at < size; at += 65536) crypto.getRandomValues(all.subarray(at, Math.min(size, at + 65536)));
    channel.bufferedAmountLowThreshold = 256 * 1024;
    for (let at = 0; at < size; at += chunk) {
        if (channel.bufferedAmount > 1024 * 1024) {
            await new Promise((resolve) => { channel.onbufferedamountlow = resolve; });
        }
        channel.send(all.subarray(at, Math.min(size, at + chunk)));
    }
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
    return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}"""


class Side:
    """A tuned aiortc connection on an event loop of its own thread (Playwright's API is sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.received = bytearray()

    def do(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def offer(self) -> dict:
        use_host_addresses([LOCAL])
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("bulk")
        self.opened = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self.received.extend)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sctp.tune(self.pc.sctp)
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def accept(self, answer: dict) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(self.opened.wait(), 30)

    async def send(self, data: bytes) -> None:
        drained = asyncio.Event()
        self.channel.bufferedAmountLowThreshold = 256 * 1024
        self.channel.on("bufferedamountlow", drained.set)
        for at in range(0, len(data), CHUNK):
            while self.channel.bufferedAmount > 1024 * 1024:
                drained.clear()
                await drained.wait()
            self.channel.send(data[at:at + CHUNK])

    async def until_received(self, size: int) -> bytes:
        while len(self.received) < size:
            await asyncio.sleep(0.02)
        return bytes(self.received)

    def close(self) -> None:
        self.do(self.pc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def side():
    made = Side()
    yield made
    made.close()


def test_megabytes_both_ways_between_chromium_and_a_tuned_connection(server, chromium, side):
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        answer = page.evaluate(ANSWER, side.do(side.offer()))
        side.do(side.accept(answer))
        assert side.pc.sctp._remote_max_message_size >= CHUNK  # Chromium takes our chunks as they are

        data = os.urandom(SIZE)
        page.evaluate(RECEIVE, SIZE)
        side.do(side.send(data))
        got = page.evaluate("() => window.receiving")
        assert got == {"got": SIZE, "sha256": hashlib.sha256(data).hexdigest()}

        sent = page.evaluate(SEND, {"size": SIZE, "chunk": CHUNK})
        received = side.do(side.until_received(SIZE), 120)
        assert len(received) == SIZE and hashlib.sha256(received).hexdigest() == sent
    finally:
        context.close()
