"""``python -m peer`` without a person at a terminal: started by systemd, ``docker run`` without
``-i``, ``nohup ... &`` or ``< /dev/null``, its stdin ends at once. That end only ends chat input:
the peer stays in the room until a signal. At a terminal, Ctrl-D still leaves."""

import asyncio
import os
import subprocess

import peer
from conftest import LOCAL
from test_api import join
from test_attack_files import so_far

CLI = ["--video", "testsrc", "--fps", "10", "--video-size", "160x120", "--ice-host", LOCAL, "--no-window"]


async def still_in_the_call(room: peer.Room, robot) -> peer.Member:
    """The CLI peer ``robot`` connects to ``room`` and, its input long ended, still sends
    frames and reads chat: it did not leave."""
    member = await room.wait_for_peer()
    sent = await room.wait_for_frames(1, member)
    await room.wait_for_frames(sent + 20, member)  # two more seconds of video at 10 fps
    assert room.send_text("are you there?")
    await asyncio.to_thread(robot.expect, r"^\[alice\] are you there\?$")
    assert not so_far(room, peer.CallEnded) and not so_far(room, peer.PeerLeft), robot.output
    return member


async def leaves_on_sigint(room: peer.Room, robot, name: str) -> None:
    robot.interrupt()
    await room.wait_for(peer.CallEnded)
    assert await asyncio.to_thread(robot.wait) == 0
    robot.expect(f"^left room {name}$")
    assert "Traceback" not in robot.output


async def test_a_peer_with_stdin_at_dev_null_stays_until_sigint(server, processes):
    robot = processes.peer("--room", "headless", "--server", server.url, *CLI, name="robot",
                           stdin=subprocess.DEVNULL)
    await asyncio.to_thread(robot.expect, "joined room headless")
    async with join("headless", server, "alice") as alice:
        await still_in_the_call(alice, robot)
        await leaves_on_sigint(alice, robot, "headless")


async def test_a_peer_fed_by_a_pipe_sends_its_lines_and_stays_after_the_pipe_ends(server, processes):
    """A script pipes a line of chat in and closes the pipe: the line is sent, the peer stays."""
    robot = processes.peer("--room", "piped", "--server", server.url, *CLI, name="robot")
    async with join("piped", server, "alice") as alice:
        await alice.wait_for_peer()
        robot.send("hello from a script")
        await alice.wait_for_message(lambda text: text == "hello from a script")
        robot.end_input()
        await still_in_the_call(alice, robot)
        await leaves_on_sigint(alice, robot, "piped")


async def test_ctrl_d_at_a_terminal_leaves(server, processes):
    terminal, its_end = os.openpty()
    try:
        robot = processes.peer("--room", "ctrl-d", "--server", server.url, *CLI, name="robot", stdin=its_end)
    finally:
        os.close(its_end)
    try:
        async with join("ctrl-d", server, "alice") as alice:
            await alice.wait_for_frames(10, await alice.wait_for_peer())
            os.write(terminal, b"\x04")  # Ctrl-D at the start of a line: end of input
            await alice.wait_for(peer.CallEnded)
            assert await asyncio.to_thread(robot.wait) == 0
            robot.expect("^left room ctrl-d$")
    finally:
        os.close(terminal)
