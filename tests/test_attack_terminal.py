"""Attacks on the terminal: what a hostile peer sends and a hostile environment does to
``python -m peer`` at a prompt (a pseudo-terminal modelled by pyte) and without one."""

import asyncio
import os
import re

import peer
from classic import ClassicClient, loopback_only
from test_api import MB, join, random_file
from test_attack_files import so_far
from test_terminal import CLI, COLUMNS, ENTER, terminals  # noqa: F401 (a fixture)


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


async def test_a_dumb_terminal_shows_progress_as_lines_and_chats(server, terminals, tmp_path):
    """TERM=dumb (Emacs' shell, some IDE consoles): prompt-toolkit's prompt there has no
    toolbar, so a file came without any progress, and lines arriving were glued to the line
    being typed after a "> ". There the kernel's line editing serves, as for output to a log."""
    bob = terminals("--room", "dumb", "--server", server.url, *CLI, "--downloads", str(tmp_path / "in"),
                    name="bob", term="dumb")
    async with join("dumb", server, "alice") as alice:
        await shows_quarters(alice, bob, tmp_path)
        assert not [line for line in bob.shown if line.startswith(">")], "a prompt at a dumb terminal"


async def test_a_terminal_without_cursor_position_reports_shows_progress_as_lines(server, terminals, tmp_path,
                                                                                 monkeypatch):
    """prompt-toolkit draws no toolbar until the terminal has said where its cursor is; one
    that does not (PROMPT_TOOLKIT_NO_CPR=1, which prompt-toolkit documents for them) got no
    progress at all."""
    monkeypatch.setenv("PROMPT_TOOLKIT_NO_CPR", "1")
    bob = terminals("--room", "cpr", "--server", server.url, *CLI, "--downloads", str(tmp_path / "in"), name="bob")
    async with join("cpr", server, "alice") as alice:
        await shows_quarters(alice, bob, tmp_path)
        await asyncio.to_thread(bob.expect, "^> hello$")  # typed at the prompt


async def shows_quarters(alice, bob, tmp_path) -> None:
    """alice sends bob a file: bob's screen has a line at each quarter; then he chats."""
    source = random_file(tmp_path / "report.bin", 8 * MB)
    await alice.wait_for_peer()
    await asyncio.to_thread(bob.expect, "^connected to alice")
    await alice.send_file(source)
    running = r"^receiving report\.bin from alice: \[[# ]{20}\] +(\d+)% .*, \d\d:\d\d left$"
    await asyncio.to_thread(bob.expect, r"^received report\.bin from alice")
    quarters = [re.search(running, line) for line in bob.lines]
    assert [int(match.group(1)) // 25 for match in quarters if match] == [1, 2, 3], "\n".join(bob.lines)
    bob.type("hello" + ENTER)
    await alice.wait_for_message(lambda text: text == "hello")


async def test_a_long_file_name_leaves_the_progress_in_view(server, terminals, tmp_path):
    """The toolbar is cut at the terminal's right edge: a long file name (or a sender's name
    of escaped characters, six columns each) pushed the percentage, rate and time left out of it."""
    source = random_file(tmp_path / ("a" * 180 + ".bin"), 8 * MB)
    bob = terminals("--room", "long-name", "--server", server.url, *CLI, "--downloads", str(tmp_path / "in"),
                    name="bob")
    async with join("long-name", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(bob.expect, "^connected to alice")
        await alice.send_file(source)
        await asyncio.to_thread(bob.expect, r"\.bin \(sha256 \w{16}…\)$")  # the line "received ..." wraps
        shown = bob.expect(r"^receiving a+…\s*: \[[# ]{20}\] +\d+% .*, \d\d:\d\d left$", ever=True)
        assert len(shown.string) <= COLUMNS


async def test_logs_sent_to_a_file_stay_there_while_the_prompt_is_up(server, terminals, tmp_path):
    """``python -m peer -v 2>peer.log`` at a terminal: prompt-toolkit's patch_stdout sends
    stderr where stdout goes, and the log handler was moved there too: the log came on the
    screen, and the file missed it."""
    log = tmp_path / "peer.log"
    with log.open("w") as stderr:
        bob = terminals("--room", "log", "--server", server.url, *CLI, "-v", name="bob", stderr=stderr)
    async with join("log", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(bob.expect, "^connected to alice")
        await asyncio.to_thread(bob.expect, "^>$")  # the prompt is up
        assert alice.send_text("hello")
        await asyncio.to_thread(bob.expect, r"^\[alice\] hello$")
    await asyncio.to_thread(bob.expect, "^waiting for someone")
    assert not [line for line in bob.shown if " DEBUG: " in line], "\n".join(bob.lines)
    assert "connection with alice: closed" in log.read_text()  # logged while the prompt was up


async def test_a_piped_line_that_grows_past_64_kib_as_utf8_is_dropped_and_the_next_goes(server, processes):
    """Latin-1 text piped in: each byte that is not UTF-8 goes as U+FFFD, three bytes. A line of
    30,000 such bytes passed the 64 KiB check on the bytes read and went as 90,000; to a peer
    that announces no a=max-message-size (65,536 then, aiortc's default) aiortc's send raises
    ValueError, which ended chat input."""
    robot = processes.peer("--room", "latin1", "--server", server.url, *CLI, name="robot")
    async with join("latin1", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(robot.expect, "^connected to alice")
        robot.proc.stdin.buffer.write(b"\xe9" * 30_000 + b"\n")
        robot.send("after it")
        await alice.wait_for_message(lambda text: text == "after it")
        assert [event.text for event in so_far(alice, peer.ChatMessage)] == ["after it"]
        robot.expect(r"^\(a line over 64 KiB was dropped, not sent\)$")


async def test_a_peer_that_takes_only_tiny_messages_cannot_make_a_line_typed_end_the_session(server, terminals):
    """mallory's offer says ``a=max-message-size:10``: aiortc's send raises ValueError for a
    longer line, which ended chat input, and at a terminal left the room without a word.
    The line is not sent to her (and it is said); the session and chat with her go on."""
    loopback_only()
    bob = terminals("--room", "tiny", "--server", server.url, *CLI, name="bob")
    await asyncio.to_thread(bob.expect, "^joined room tiny")
    mallory = ClassicClient(server.url, "tiny")
    emit = mallory.sio.emit

    async def announcing_tiny_messages(event, data=None, **options):
        if event == "message" and isinstance(data, dict) and "sdp" in data:
            data = {**data, "sdp": re.sub(r"a=max-message-size:\d+", "a=max-message-size:10", data["sdp"])}
        return await emit(event, data, **options)

    mallory.sio.emit = announcing_tiny_messages
    await mallory.start()
    try:
        await asyncio.to_thread(bob.expect, "^connected to")
        bob.type("a line of more than ten bytes" + ENTER)
        bob.type("hi" + ENTER)
        for _ in range(100):
            if "hi" in mallory.received:
                break
            await asyncio.sleep(0.1)
        assert mallory.received == ["hi"]
        assert bob.proc.poll() is None, "\n".join(bob.lines)
        await asyncio.to_thread(bob.expect, "only supports messages up to 10 bytes")
    finally:
        await mallory.stop()


async def test_markup_in_a_senders_name_shows_as_written_in_the_toolbar(server, terminals, tmp_path):
    """prompt-toolkit renders HTML and ANSI formatted text; the toolbar is given plain text, so
    a sender's name of markup is shown as written (it held; this keeps it so)."""
    name = "<style bg='ansired'>al</style>&lt;<b>"
    source = random_file(tmp_path / "report.bin", 8 * MB)
    bob = terminals("--room", "markup", "--server", server.url, *CLI, "--downloads", str(tmp_path / "in"),
                    name="bob")
    async with join("markup", server, name) as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(bob.expect, "^connected to")
        await alice.send_file(source)
        await asyncio.to_thread(bob.expect, r"^received report\.bin from")
        bob.expect(rf"^receiving report\.bin from {re.escape(name)}: \[[# ]{{20}}\] .* left$", ever=True)
