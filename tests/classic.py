"""The classic room-relay pattern of browser tutorials, written as its users write it:
a relay server that knows only ``join`` (a bare string) and ``message``, and a client
that offers on join. The client is raw aiortc plus python-socketio and, like a browser,
survives an offer arriving while its own is pending by answering on a fresh connection
(a browser rolls back implicitly; aiortc cannot)."""

import asyncio
import sys
from pathlib import Path
from typing import Any, Optional

import socketio
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription, RTCConfiguration
from aiortc.contrib.media import MediaPlayer
from aiortc.sdp import candidate_from_sdp

from peer.ice import use_host_addresses


HERE = Path(__file__).resolve().parent
BLANK_PAGE = "<!doctype html><html><head><meta charset=utf-8><title>classic</title></head><body></body></html>"


def relay_app() -> web.Application:
    """The relay, and a blank page with the Socket.IO client for ``classic_page`` to fill."""
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)
    app.router.add_get("/", lambda request: web.Response(text=BLANK_PAGE, content_type="text/html"))
    app.router.add_static("/web/", HERE.parent / "signaling" / "web")
    rooms: dict = {}

    @sio.on("join")
    async def join(sid, room):
        rooms[sid] = room
        await sio.enter_room(sid, room)
        await sio.emit("userInRoom", sum(1 for r in rooms.values() if r == room), room=room)

    @sio.on("message")
    async def message(sid, data):
        if sid in rooms:
            await sio.emit("message", data, room=rooms[sid], skip_sid=sid)

    @sio.on("disconnect")
    async def disconnect(sid, *args):
        rooms.pop(sid, None)

    return app


class ClassicClient:
    """Offers on join, answers offers, trickles nothing (aiortc can't), adds trickled candidates.
    With ``greet``, it says hello on every data channel it is given, as tutorial peers do."""

    GREETING = "hello from a tutorial peer"

    def __init__(self, server: str, room: str, greet: bool = False) -> None:
        self.server, self.room, self.greet = server, room, greet
        self.sio = socketio.AsyncClient()
        self.pc: Optional[RTCPeerConnection] = None
        self.chat = None
        self.frames = 0
        self.received: list = []
        self.connected = asyncio.Event()
        self.sio.on("message", self.on_message)

    def new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        player = MediaPlayer("testsrc=size=320x240:rate=15", format="lavfi")
        pc.addTrack(player.video)

        @pc.on("track")
        def on_track(track):
            asyncio.ensure_future(self.consume(track))

        @pc.on("datachannel")
        def on_datachannel(channel):
            self.use_chat(channel)
            if self.greet:  # aiortc hands the channel over open
                channel.send(self.GREETING)

        @pc.on("connectionstatechange")
        def on_state():
            if pc.connectionState == "connected":
                self.connected.set()

        return pc

    def use_chat(self, channel) -> None:
        self.chat = channel
        channel.on("message", self.received.append)

    async def consume(self, track) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.frames += 1

    async def start(self) -> None:
        await self.sio.connect(self.server, transports=["websocket"])
        await self.sio.emit("join", self.room)
        self.pc = self.new_pc()
        self.use_chat(self.pc.createDataChannel("chat"))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.sio.emit("message", {"type": "offer", "sdp": self.pc.localDescription.sdp})

    async def on_message(self, data) -> None:
        if data["type"] == "offer":
            if self.pc.signalingState != "stable":
                await self.pc.close()  # what a browser's implicit rollback amounts to
                self.pc = self.new_pc()
            await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.sio.emit("message", {"type": "answer", "sdp": self.pc.localDescription.sdp})
        elif data["type"] == "answer" and self.pc.signalingState == "have-local-offer":
            await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        elif data["type"] == "candidate":
            text = (data.get("candidate") or {}).get("candidate", "")
            if text:
                candidate = candidate_from_sdp(text.split(":", 1)[1])
                candidate.sdpMid = data["candidate"].get("sdpMid")
                candidate.sdpMLineIndex = data["candidate"].get("sdpMLineIndex")
                await self.pc.addIceCandidate(candidate)

    async def stop(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        await self.sio.disconnect()


def classic_page(browser: Any, server: str, room: str, audio: bool = False, prelude: str = "") -> Any:
    """A Chromium page running the classic tutorial's client (tests/web/classic.js), joined to
    ``room`` on ``server`` (ours or the relay above); ``window.classic`` holds what it saw.
    ``prelude`` is a script run before the client starts (to bend its world, say its network).
    CSP is bypassed: our server's page policy forbids the script the test injects."""
    context = browser.new_context(bypass_csp=True, viewport={"width": 800, "height": 600})
    page = context.new_page()
    page.goto(server + "/")
    page.set_content(BLANK_PAGE)
    page.add_script_tag(url="/web/socket.io.min.js")
    page.add_script_tag(path=str(HERE / "web" / "classic.js"))
    if prelude:
        page.evaluate(prelude)
    page.evaluate("([room, audio]) => startClassic(room, audio)", [room, audio])
    return page


def loopback_only() -> None:
    """ICE host candidates on 127.0.0.1 only, for this task and those it starts (what a
    tutorial's user would do by patching aioice; that would last for the whole process)."""
    use_host_addresses(["127.0.0.1"])


async def serve_relay(port: int) -> None:
    runner = web.AppRunner(relay_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve_relay(int(sys.argv[1])))
