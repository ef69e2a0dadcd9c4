"""A SACK that peer.sctp held back (a timer sends it) finds the connection closed: nothing is
owed any more, and nothing may be left behind (a task failing with ConnectionError printed
"Task exception was never retrieved" and a traceback into a peer's terminal)."""

import asyncio
import gc

from aiortc import RTCConfiguration, RTCPeerConnection

from peer import sctp
from peer.ice import use_host_addresses


async def connected_pair() -> tuple[RTCPeerConnection, RTCPeerConnection, object]:
    use_host_addresses(["127.0.0.1"])
    a, b = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    channel = a.createDataChannel("chat")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await asyncio.wait_for(opened.wait(), 10)
    return a, b, channel


async def test_a_sack_held_back_when_the_connection_closes_goes_quietly():
    loop = asyncio.get_running_loop()
    failures: list[dict] = []
    loop.set_exception_handler(lambda _, context: failures.append(context))
    a, b, _ = await connected_pair()
    receiver = b.sctp
    sctp.tune(receiver)
    queue = sctp._receive_queue(receiver)
    assert queue is not None, "aioice's receive queue not found: peer.sctp holds no SACK back"
    queue.put_nowait(b"")  # a datagram waits: the next SACK is held for the timer
    receiver._sack_needed = True
    await receiver._send_sack()
    queue.get_nowait()
    await b.close()
    await asyncio.sleep(sctp.SACK_DELAY * 5)
    await a.close()
    gc.collect()  # a failed task nobody awaited is reported when it is collected
    await asyncio.sleep(0)
    assert failures == [], failures
