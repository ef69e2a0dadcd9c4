"""Issue 8, attacks the first round of fixes let through. Each attacker is written here, as a
real peer (raw aiortc underneath our API) against real peers and the real server on
127.0.0.1; each test checks the attack fails and the victim's other calls go on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conftest import Server
from peer.api import ChatMessage
from peer.call import MAX_HELD_CHUNKS
from test_attack_moved import chat_passes, join, our_call, until

KB = 1024


@pytest.fixture
def server_of_three():
    started = Server("--room-size", "3")
    yield started
    started.stop()


async def test_a_chat_message_larger_than_announced_is_cut_off_not_reassembled(server_of_three, caplog):
    """mallory lifts her own aiortc's limit and sends one chat message of 5 MB, far over the
    64 KiB every peer announces: the victim's aiortc would hold and rescan every fragment of it
    and hand it over whole. The victim cuts mallory's connection instead, and its call with bob
    goes on; a message of the largest honest size still passes."""
    caplog.set_level(logging.WARNING, logger="peer.call")
    async with join(server_of_three, "oversized", "victim") as victim, \
               join(server_of_three, "oversized", "bob") as bob, \
               join(server_of_three, "oversized", "mallory") as mallory:
        attack = await our_call(mallory, victim)
        await our_call(victim, bob)
        largest = "h" * (64 * KB - 100)
        attack.send_chat(largest)
        await victim.wait_for_message(lambda text: text == largest, timeout=10)

        attack.chat.transport._remote_max_message_size = 0  # let mallory send what aiortc would not
        attack.chat.send("A" * 5_000_000)
        await until(lambda: any("connection cut" in r.getMessage() for r in caplog.records),
                    "the victim to cut mallory off", timeout=20)

        await chat_passes(victim, bob, "bystander")
        longest = max((len(e.text) for e in victim._history if isinstance(e, ChatMessage)), default=0)
        assert longest <= 64 * KB, f"the victim took a chat message of {longest} characters"
        cuts = [r.getMessage() for r in caplog.records if "connection cut" in r.getMessage()]
        assert cuts == [f"'mallory' sent a data channel message of more than {MAX_HELD_CHUNKS} fragments: "
                        "connection cut"], cuts
