"""An ICE agent waits for the other side's checks (``peer.ice_checks``): real aioice
agents on 127.0.0.1, one of them bound to every address as a browser's is."""

import asyncio

import aioice
import pytest
from aioice import Candidate

from peer.ice import use_host_addresses


async def gathered(controlling: bool, address: str) -> aioice.Connection:
    use_host_addresses([address])
    connection = aioice.Connection(ice_controlling=controlling, components=1)
    await connection.gather_candidates()
    return connection


@pytest.mark.parametrize("controlling", [False, True], ids=["controlled", "controlling"])
async def test_a_pair_that_fails_at_once_does_not_fail_the_agent(controlling):
    """One agent's only pair goes to 127.0.0.2, where the other agent's socket (bound to
    0.0.0.0, as a browser's is) answers from 127.0.0.1: aioice fails it for the source mismatch
    at once, a second before the other agent's own checks arrive. They must still connect it,
    whichever of the two controls."""
    early = await gathered(controlling, "127.0.0.1")
    other = await gathered(not controlling, "0.0.0.0")
    await early.add_remote_candidate(Candidate(
        foundation="other", component=1, transport="udp", priority=1, host="127.0.0.2",
        port=other.local_candidates[0].port, type="host"))
    await early.add_remote_candidate(None)
    for candidate in early.local_candidates:
        await other.add_remote_candidate(candidate)
    await other.add_remote_candidate(None)
    early.remote_username, early.remote_password = other.local_username, other.local_password
    other.remote_username, other.remote_password = early.local_username, early.local_password
    try:
        waiting = asyncio.ensure_future(early.connect())
        await asyncio.sleep(1.0)
        assert not waiting.done(), f"the agent gave up at once: {waiting.exception()!r}"
        await asyncio.wait_for(asyncio.gather(waiting, other.connect()), 10)
        assert early._nominated and other._nominated
    finally:
        await early.close()
        await other.close()


async def test_with_no_check_from_the_other_side_it_still_fails():
    """Patience is bounded: an agent whose pairs all failed and that hears nothing
    gives up (``PATIENCE`` seconds after its checks began), as before."""
    from peer.ice_checks import PATIENCE
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
            await asyncio.wait_for(controlled.connect(), PATIENCE + 5)
        except ConnectionError:
            pass
        else:
            raise AssertionError("connected with nobody checking")
        assert asyncio.get_running_loop().time() - started >= PATIENCE - 0.5
    finally:
        await controlled.close()
        await silent.close()
