"""The controlled ICE agent waits for the other side's checks (``peer.ice_checks``): real aioice
agents on 127.0.0.1, one of them bound to every address as a browser's is."""

import asyncio

import aioice
from aioice import Candidate

from peer.ice import use_host_addresses


async def gathered(controlling: bool, address: str) -> aioice.Connection:
    use_host_addresses([address])
    connection = aioice.Connection(ice_controlling=controlling, components=1)
    await connection.gather_candidates()
    return connection


async def test_a_pair_that_fails_at_once_does_not_fail_the_controlled_agent():
    """The controlled agent's only pair goes to 127.0.0.2, where the controlling agent's socket
    (bound to 0.0.0.0) answers from 127.0.0.1: aioice fails it for the source mismatch at once,
    a second before the controlling agent's own checks arrive. They must still connect it."""
    controlled = await gathered(False, "127.0.0.1")
    controlling = await gathered(True, "0.0.0.0")
    await controlled.add_remote_candidate(Candidate(
        foundation="other", component=1, transport="udp", priority=1, host="127.0.0.2",
        port=controlling.local_candidates[0].port, type="host"))
    await controlled.add_remote_candidate(None)
    for candidate in controlled.local_candidates:
        await controlling.add_remote_candidate(candidate)
    await controlling.add_remote_candidate(None)
    controlled.remote_username, controlled.remote_password = controlling.local_username, controlling.local_password
    controlling.remote_username, controlling.remote_password = controlled.local_username, controlled.local_password
    try:
        waiting = asyncio.ensure_future(controlled.connect())
        await asyncio.sleep(1.0)
        assert not waiting.done(), f"the controlled agent gave up at once: {waiting.exception()!r}"
        await asyncio.wait_for(asyncio.gather(waiting, controlling.connect()), 10)
        assert controlled._nominated and controlling._nominated
    finally:
        await controlled.close()
        await controlling.close()


async def test_with_no_check_from_the_other_side_it_still_fails():
    """Patience is bounded: a controlled agent whose pairs all failed and that hears nothing
    gives up (``CONTROLLED_PATIENCE`` seconds after its checks began), as before."""
    from peer.ice_checks import CONTROLLED_PATIENCE
    controlled = await gathered(False, "127.0.0.1")
    silent = await gathered(True, "0.0.0.0")  # gathered, never connects: it answers, never checks
    await controlled.add_remote_candidate(Candidate(
        foundation="other", component=1, transport="udp", priority=1, host="127.0.0.2",
        port=silent.local_candidates[0].port, type="host"))
    await controlled.add_remote_candidate(None)
    controlled.remote_username, controlled.remote_password = silent.local_username, silent.local_password
    silent.remote_username, silent.remote_password = controlled.local_username, controlled.local_password
    try:
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(controlled.connect(), CONTROLLED_PATIENCE + 5)
        except ConnectionError:
            pass
        else:
            raise AssertionError("connected with nobody checking")
        assert asyncio.get_running_loop().time() - started >= CONTROLLED_PATIENCE - 0.5
    finally:
        await controlled.close()
        await silent.close()
