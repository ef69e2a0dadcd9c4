"""Hostile peers on the files channel (issue 8, findings 3, 4 and 7): each attack fails, nothing
outside the transfer's own temporary file is touched, and the victim's other calls go on.

The attacker, mallory, is a real peer whose files channel is written raw (``Hostile``): what
she sends is not checked on her side, and she sees every reply.
"""

import asyncio
import json
import os
import re
import threading
from pathlib import Path

import pytest

import peer
from conftest import LOCAL, Server
from peer.transfer import Downloads, human_size, parse_size, safe_name
from test_api import MB, join, random_file, sha256, until
from test_wire import BAD_FILES_MESSAGES

KB = 1024


# The checks, without a network

@pytest.mark.parametrize("name, saved", [
    ("report.pdf", "report.pdf"), ("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
    (".bashrc", "bashrc"), ("..", "file"), ("", "file"), (" . ", "file"), ("/", "file"),
    ("a\x1b]0;owned\x07b.txt", "a]0;ownedb.txt"), ("\x1b[2J\x1b[Hx", "[2J[Hx"), ("evil\u202etxt.exe", "eviltxt.exe"),
    ("line\u2028break", "linebreak"), ("nul\x00byte", "nulbyte"), ("a:b|c?.txt", "a_b_c_.txt"),
])
def test_file_names_from_peers_are_made_plain(name, saved):
    assert safe_name(name) == saved


def test_long_file_names_are_cut_to_200_bytes_keeping_the_extension():
    cut = safe_name("é" * 500 + ".tar.gz")
    assert len(cut.encode()) <= 200 and cut.endswith(".gz") and set(cut[:-3]) == {"é"}
    assert len(safe_name("x" * 300).encode()) == 200


@pytest.mark.parametrize("text, size", [
    ("1000", 1000), ("500M", 500 * 10**6), ("2G", 2 * 10**9), ("2g", 2 * 10**9), ("1.5GB", 1_500_000_000),
    ("64KiB", 65536), ("1 MiB", 2**20), ("3T", 3 * 10**12),
])
def test_sizes_on_the_command_line(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1e9", "2X", "1.2.3G", "ten"])
def test_sizes_that_are_not(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_sizes_for_people():
    assert [human_size(n) for n in (0, 999, 1234, 1_250_000, 2 * 10**9, 5 * 10**12)] == \
        ["0 bytes", "999 bytes", "1.2 kB", "1.2 MB", "2.0 GB", "5.0 TB"]


def test_quotas_count_each_peer_and_all_together():
    downloads = Downloads("somewhere", max_per_peer=10_000, max_total=15_000)
    assert downloads.over_quota(10_000, from_peer=0) is None
    assert "per peer" in downloads.over_quota(10_001, from_peer=0)
    assert "per peer" in downloads.over_quota(5_000, from_peer=6_000)
    downloads.taken = 12_000
    assert "total" in downloads.over_quota(4_000, from_peer=0)
    assert "per peer" in downloads.over_quota(0, from_peer=9_000), "an empty file costs a block"


def test_accepting_files_needs_a_directory():
    with pytest.raises(ValueError, match="needs a downloads directory"):
        peer.join("x", accept_files=True)
    assert Downloads().accept is False and Downloads("dir").accept is True


# A hostile peer

@pytest.fixture
def server():
    """Rooms of three: the victim, the attacker and a bystander."""
    started = Server("--room-size", "3")
    yield started
    started.stop()


class Hostile:
    """Mallory's raw end of her files channel to ``victim``: she sends what she likes and reads
    every reply."""

    def __init__(self, room: peer.Room, victim: peer.Member) -> None:
        self.call = room.session.calls[victim.id]
        self.channel = self.call._sender.channel
        self.replies: asyncio.Queue = asyncio.Queue()
        self.channel.on("message", lambda message: isinstance(message, str) and self.replies.put_nowait(message))

    @classmethod
    async def toward(cls, room: peer.Room, victim: peer.Member) -> "Hostile":
        hostile = cls(room, victim)
        await asyncio.wait_for(hostile.call._files_open.wait(), 10)
        return hostile

    def send(self, message) -> None:
        self.channel.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def reply(self, timeout: float = 10) -> dict:
        return json.loads(await asyncio.wait_for(self.replies.get(), timeout))

    async def stream(self, total: int) -> None:
        """``total`` bytes of chunks, whatever was announced, at the pace the channel takes."""
        sent = 0
        while sent < total:
            while self.channel.bufferedAmount > MB:
                await asyncio.sleep(0.005)
            self.send(os.urandom(16 * KB))
            sent += 16 * KB


async def in_a_call(*rooms: peer.Room) -> None:
    """Until everyone is connected to everyone else."""
    await until(lambda: all(len(room.connected) == len(rooms) - 1 for room in rooms), 20,
                "everyone connected to everyone")


def member(room: peer.Room, name: str) -> peer.Member:
    return next(m for m in room.connected if m.name == name)


async def still_fine(bob: peer.Room, other: peer.Room, tmp_path: Path, what: str) -> None:
    """Bob's call with ``other`` goes on: chat both ways, and a file from ``other`` arrives whole."""
    other.send_text(f"still there? ({what})")
    await bob.wait_for_message(lambda text: text == f"still there? ({what})")
    bob.send_text(f"yes ({what})")
    await other.wait_for_message(lambda text: text == f"yes ({what})")
    source = random_file(tmp_path / "out" / f"{other.me.name}-{what}.bin", 300 * KB)
    sent = await other.send_file(source, to=member(other, "bob"))
    received = await bob.wait_for(peer.FileReceived, lambda event: event.sha256 == sent)
    assert sha256(received.path) == sha256(source)


def so_far(room: peer.Room, kind: type) -> list:
    """The events of ``kind`` the room has had until now."""
    return [event for event in room._history if isinstance(event, kind)]


async def first(room: peer.Room, kind: type, count: int, predicate=lambda event: True, timeout: float = 15) -> list:
    """The first ``count`` events of ``kind`` that ``predicate`` accepts (those past included)."""
    async def collect() -> list:
        found = []
        async for event in room.events():
            if isinstance(event, kind) and predicate(event):
                found.append(event)
                if len(found) == count:
                    break
        return found
    return await asyncio.wait_for(collect(), timeout)


def files_in(directory: Path) -> dict:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


class DiskWatch:
    """Samples, on a thread, the largest file in ``directory``: what was ever on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.largest = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            try:
                for entry in os.scandir(self.directory):
                    self.seen.add(entry.name)
                    self.largest = max(self.largest, entry.stat().st_size)
            except FileNotFoundError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# Finding 3: one temporary file per transfer

async def test_two_senders_of_the_same_name_each_get_their_own_file(server, tmp_path):
    downloads = tmp_path / "downloads"
    sources = {name: random_file(tmp_path / name / "same.bin", 8 * MB) for name in ("alice", "carol")}
    async with join("same", server, "bob", downloads=downloads) as bob, \
            join("same", server, "alice") as alice, join("same", server, "carol") as carol:
        await in_a_call(bob, alice, carol)
        sent = await asyncio.wait_for(asyncio.gather(
            alice.send_file(sources["alice"], to=member(alice, "bob")),
            carol.send_file(sources["carol"], to=member(carol, "bob"))), 60)
        received = {event.sender.name: event for event in so_far(bob, peer.FileReceived)}
        progress = [event.sender.name for event in so_far(bob, peer.FileProgress)]

    (alice_first, alice_last), (carol_first, carol_last) = (
        (progress.index(name), len(progress) - 1 - progress[::-1].index(name)) for name in ("alice", "carol"))
    assert alice_first < carol_last and carol_first < alice_last, "written one after the other, not at once"
    for name, sha in zip(("alice", "carol"), sent):
        assert sha == sha256(sources[name]) == received[name].sha256 == sha256(received[name].path)
    assert sorted(p.name for p in downloads.iterdir()) == ["same (2).bin", "same.bin"]


# Finding 4: never more than declared, quotas, nothing else touched

async def test_a_sender_that_sends_more_than_it_declared_is_cut_off_at_the_declared_size(server, tmp_path):
    downloads = tmp_path / "downloads"
    async with join("flood", server, "bob", downloads=downloads) as bob, \
            join("flood", server, "mallory") as mallory, join("flood", server, "carol") as carol:
        await in_a_call(bob, mallory, carol)
        hostile = await Hostile.toward(mallory, member(mallory, "bob"))
        hostile.send({"type": "start", "name": "big.bin", "size": MB})
        assert await hostile.reply() == {"type": "accept"}
        watch = DiskWatch(downloads)
        try:
            await hostile.stream(6 * MB)
            refused = await hostile.reply()
            failed = await bob.wait_for(peer.FileFailed)
            await until(lambda: not any(downloads.iterdir()), 3, "the temporary file removed")
        finally:
            watch.stop()
        assert refused == {"type": "failed", "reason": f"more than the {MB} bytes announced"}
        assert failed.sender.name == "mallory" and failed.name == "big.bin"
        assert failed.reason == f"it sent more than the {MB} bytes announced; nothing was saved"
        assert any(re.fullmatch(r"\.big\.bin\.\w+\.part", name) for name in watch.seen), watch.seen
        assert watch.largest <= MB, f"{watch.largest} bytes on disk for a file of {MB}"
        await still_fine(bob, mallory, tmp_path, "after the flood")
        await still_fine(bob, carol, tmp_path, "after the flood")


async def test_a_bad_transfer_named_secret_touches_no_other_file(server, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for name in (".secret.part", "secret", ".secret.0.part", "other.txt"):
        (downloads / name).write_bytes(f"precious {name}".encode())
    before = files_in(downloads)
    async with join("secret", server, "bob", downloads=downloads) as bob, \
            join("secret", server, "carol") as carol:
        async with join("secret", server, "mallory") as mallory:
            await in_a_call(bob, mallory, carol)
            hostile = await Hostile.toward(mallory, member(mallory, "bob"))
            for name in ("secret", "../secret", ".secret.part", "secret\x00"):
                hostile.send({"type": "start", "name": name, "size": 1000})  # too many bytes: fails
                assert await hostile.reply() == {"type": "accept"}
                hostile.send(os.urandom(600))
                hostile.send(os.urandom(600))
                assert await hostile.reply() == {"type": "failed", "reason": "more than the 1000 bytes announced"}
            hostile.send({"type": "start", "name": "secret", "size": 1000})  # a wrong checksum
            assert await hostile.reply() == {"type": "accept"}
            hostile.send(os.urandom(1000))
            hostile.send({"type": "end", "sha256": "0" * 64})
            assert await hostile.reply() == {"type": "failed", "reason": "checksum mismatch"}
            hostile.send({"type": "start", "name": "secret", "size": 10 * MB})  # abandoned for another
            assert await hostile.reply() == {"type": "accept"}
            hostile.send(os.urandom(1000))
            hostile.send({"type": "start", "name": "secret", "size": 10 * MB})  # and that one: she leaves
            assert await hostile.reply() == {"type": "accept"}
            hostile.send(os.urandom(1000))
            await first(bob, peer.FileProgress, 2, lambda event: (event.done, event.size) == (1000, 10 * MB))
        reasons = [event.reason for event in await first(bob, peer.FileFailed, 7)]
        assert reasons[-2:] == ["a new transfer began after 1000 of 10485760 bytes; nothing was saved",
                                "mallory left during the transfer after 1000 of 10485760 bytes; nothing was saved"]
        await until(lambda: files_in(downloads) == before, 3, f"only the files there before: {list(downloads.iterdir())}")
        # Carol's file of the same name takes a new one.
        source = random_file(tmp_path / "out" / "secret", 100 * KB)
        await carol.send_file(source, to=member(carol, "bob"))
        received = await bob.wait_for(peer.FileReceived)
        assert received.path == downloads / "secret (2)" and sha256(received.path) == sha256(source)
        assert files_in(downloads) == {**before, "secret (2)": source.read_bytes()}


async def test_quotas_refuse_a_peer_beyond_its_share_and_everyone_beyond_the_total(server, tmp_path):
    downloads = tmp_path / "downloads"
    files = {name: random_file(tmp_path / "out" / name, size) for name, size in
             (("a.bin", 600_000), ("b.bin", 600_000), ("c.bin", 800_000), ("d.bin", 200_000), ("e.bin", 50_000))}
    async with join("quota", server, "bob", downloads=downloads, max_download_per_peer=1_000_000,
                    max_download_total=1_500_000) as bob, \
            join("quota", server, "alice") as alice, join("quota", server, "carol") as carol:
        await in_a_call(bob, alice, carol)
        to_bob = member(alice, "bob")
        await alice.send_file(files["a.bin"], to=to_bob)
        with pytest.raises(peer.TransferError, match=r"b\.bin: the receiver refused it \(over the quota per peer "
                                                     r"\(1\.0 MB, 400\.0 kB left\)\)"):
            await alice.send_file(files["b.bin"], to=to_bob)
        await carol.send_file(files["c.bin"], to=member(carol, "bob"))  # another peer: up to the total
        with pytest.raises(peer.TransferError, match=r"over the total quota \(1\.5 MB, 100\.0 kB left\)"):
            await carol.send_file(files["d.bin"], to=member(carol, "bob"))
        await carol.send_file(files["e.bin"], to=member(carol, "bob"))  # what fits still does
        failed = [(event.sender.name, event.name, event.reason) for event in so_far(bob, peer.FileFailed)]
    assert failed == [("alice", "b.bin", "refused: over the quota per peer (1.0 MB, 400.0 kB left)"),
                      ("carol", "d.bin", "refused: over the total quota (1.5 MB, 100.0 kB left)")]
    assert sorted(p.name for p in downloads.iterdir()) == ["a.bin", "c.bin", "e.bin"]


# Finding 7: wrong-typed JSON on the files channel

async def test_wrong_typed_messages_on_the_files_channel_leave_the_call_alive(server, tmp_path, caplog):
    downloads = tmp_path / "downloads"
    async with join("garbage", server, "bob", downloads=downloads) as bob, \
            join("garbage", server, "mallory") as mallory, join("garbage", server, "carol") as carol:
        await in_a_call(bob, mallory, carol)
        hostile = await Hostile.toward(mallory, member(mallory, "bob"))
        for message in [*BAD_FILES_MESSAGES, os.urandom(5000), '{"type": "end", "sha256": "' + "0" * 64 + '"}',
                        '{"type": "accept"}', '{"type": "received", "sha256": "' + "0" * 64 + '"}',
                        '{"type": "failed", "reason": 5}']:
            hostile.send(message)
        # A good message after them is still answered: the channel and its handler live.
        hostile.send({"type": "start", "name": "late.bin", "size": 0})
        assert await hostile.reply() == {"type": "accept"}
        hostile.send({"type": "end", "sha256": sha256(Path(os.devnull))})
        assert (await hostile.reply())["type"] == "received"
        await still_fine(bob, mallory, tmp_path, "after the garbage")
        await still_fine(bob, carol, tmp_path, "after the garbage")
        assert not so_far(bob, peer.CallEnded) and not so_far(bob, peer.Retrying), "the call was renewed or ended"
    warnings = [r.getMessage() for r in caplog.records if "files channel from mallory" in r.getMessage()
                and r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings


# Bots decide with a policy

@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_bot_decides_with_accept_files(server, tmp_path, asynchronous):
    downloads = tmp_path / "downloads"
    offers = []

    def decide(offer: peer.FileOffer) -> bool:
        offers.append((offer.sender.name, offer.name, offer.size))
        return offer.name.endswith(".txt") and offer.size < 100 * KB

    async def decide_later(offer: peer.FileOffer) -> bool:
        await asyncio.sleep(0.1)
        return decide(offer)

    notes = random_file(tmp_path / "out" / "notes.txt", 50 * KB)
    big = random_file(tmp_path / "out" / "big.txt", 200 * KB)
    binary = random_file(tmp_path / "out" / "tool.bin", 10 * KB)
    async with join("policy", server, "bob", downloads=downloads,
                    accept_files=decide_later if asynchronous else decide) as bob, \
            join("policy", server, "alice") as alice:
        await in_a_call(bob, alice)
        to_bob = member(alice, "bob")
        assert await alice.send_file(notes, to=to_bob) == sha256(notes)
        for refused in (big, binary):
            with pytest.raises(peer.TransferError, match=rf"{refused.name}: the receiver refused it \(declined\)"):
                await alice.send_file(refused, to=to_bob)
    assert offers == [("alice", "notes.txt", 50 * KB), ("alice", "big.txt", 200 * KB), ("alice", "tool.bin", 10 * KB)]
    assert [p.name for p in downloads.iterdir()] == ["notes.txt"]


async def test_a_bot_without_downloads_refuses_files(server, tmp_path):
    source = random_file(tmp_path / "out" / "x.bin", 10 * KB)
    async with join("nodl", server, "bob") as bob, join("nodl", server, "alice") as alice:
        await in_a_call(bob, alice)
        with pytest.raises(peer.TransferError, match=r"x\.bin: the receiver refused it \(not accepting files\)"):
            await alice.send_file(source, to=member(alice, "bob"))


# The CLI takes files unasked only with --downloads

def cli(room: str, server: Server) -> list[str]:
    return ["--room", room, "--server", server.url, "--video", "none", "--ice-host", LOCAL, "--no-window"]


async def test_the_cli_without_downloads_or_a_terminal_refuses_files_and_says_so_once(server, processes, tmp_path):
    bob = processes.peer(*cli("cli-refuse", server), name="bob", cwd=tmp_path)  # stdin: a pipe
    await asyncio.to_thread(bob.expect, "joined room cli-refuse")
    async with join("cli-refuse", server, "alice") as alice:
        to_bob = await alice.wait_for_peer()
        for name in ("report.bin", "again.bin"):
            with pytest.raises(peer.TransferError, match=rf"{name}: the receiver refused it \(declined\)"):
                await alice.send_file(random_file(tmp_path / "out" / name, 100 * KB), to=to_bob)
    bob.expect(r"^refused report\.bin from alice: start with --downloads DIR to accept files$")
    assert not [line for line in bob.lines if "again.bin" in line or "accept?" in line], bob.output
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "something was written"


async def test_the_cli_with_downloads_takes_files_unasked(server, processes, tmp_path):
    bob = processes.peer(*cli("cli-take", server), "--downloads", "mine", name="bob", cwd=tmp_path)
    await asyncio.to_thread(bob.expect, "joined room cli-take")
    source = random_file(tmp_path / "out" / "report.bin", 100 * KB)
    async with join("cli-take", server, "alice") as alice:
        assert await alice.send_file(source, to=await alice.wait_for_peer()) == sha256(source)
    assert sha256(tmp_path / "mine" / "report.bin") == sha256(source)
    assert not [line for line in bob.lines if "accept?" in line], bob.output


async def test_the_cli_on_a_terminal_asks_and_the_answer_decides(server, processes, tmp_path):
    terminal, its_end = os.openpty()
    try:
        bob = processes.peer(*cli("cli-ask", server), name="bob", cwd=tmp_path, stdin=its_end)
    finally:
        os.close(its_end)
    try:
        await asyncio.to_thread(bob.expect, "joined room cli-ask")
        wanted = random_file(tmp_path / "out" / "report.bin", 1_200_000)
        unwanted = random_file(tmp_path / "out" / "virus.exe", 1000)
        async with join("cli-ask", server, "alice") as alice:
            to_bob = await alice.wait_for_peer()
            sending = asyncio.ensure_future(alice.send_file(wanted, to=to_bob))
            await asyncio.to_thread(bob.expect, r"^alice wants to send you report\.bin \(1\.2 MB\): accept\? \[y/N\]$")
            assert not (tmp_path / "downloads").exists(), "written before the answer"
            os.write(terminal, b"y\n")
            assert await asyncio.wait_for(sending, 20) == sha256(wanted)
            sending = asyncio.ensure_future(alice.send_file(unwanted, to=to_bob))
            await asyncio.to_thread(bob.expect, r"^alice wants to send you virus\.exe \(1\.0 kB\): accept\? \[y/N\]$")
            os.write(terminal, b"n\n")
            with pytest.raises(peer.TransferError, match=r"virus\.exe: the receiver refused it \(declined\)"):
                await asyncio.wait_for(sending, 20)
            os.write(terminal, b"hello alice\n")  # with no question asked, a line is chat again
            await alice.wait_for_message(lambda text: text == "hello alice")
        assert [event.text for event in so_far(alice, peer.ChatMessage)] == ["hello alice"], "an answer went as chat"
        bob.expect(r"^accepted report\.bin from alice$")
        bob.expect(r"^refused virus\.exe from alice$")
        assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["report.bin"]
        assert sha256(tmp_path / "downloads" / "report.bin") == sha256(wanted)
    finally:
        os.close(terminal)
