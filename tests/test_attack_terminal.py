"""Attacks on the terminal: what a hostile peer sends and a hostile environment does to
``python -m peer`` at a prompt (a pseudo-terminal modelled by pyte) and without one."""

import asyncio
import os

import peer
from conftest import LOCAL
from test_api import join
from test_attack_files import so_far
from test_terminal import CLI, ENTER, terminals  # noqa: F401 (a fixture)


async def test_bytes_that_are_not_utf8_typed_at_the_prompt_go_as_chat_and_the_peer_stays(server, terminals):
    """A terminal in Latin-1 sends é as the byte 0xe9: prompt-toolkit decodes it to a lone
    surrogate, which no line may carry to the peer (or out of it)."""
    bob = terminals("--room", "latin", "--server", server.url, *CLI, name="bob")
    async with join("latin", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(bob.expect, "^connected to alice")
        await asyncio.to_thread(bob.expect, "^>$")
        os.write(bob.master, b"caf\xe9" + ENTER.encode())
        bob.type("after it" + ENTER)
        await alice.wait_for_message(lambda text: text == "after it")
        assert [event.text for event in so_far(alice, peer.ChatMessage)] == ["caf\ufffd", "after it"]
        assert bob.proc.poll() is None
        assert not [line for line in bob.shown if "Traceback" in line or "exception" in line]
