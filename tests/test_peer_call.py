"""``python -m peer`` as people run it: two processes, a server, chat, media, leaving."""

import time

from conftest import LOCAL
from media_check import recorded_frames, likeness_to_testsrc

CALL = ["--video", "testsrc", "--ice-host", LOCAL, "--no-window"]


def test_call_media_chat_and_leaving(server, processes, tmp_path):
    alice = processes.peer("--room", "demo", "--server", server.url, *CALL,
                           "--record", str(tmp_path / "alice-got.mp4"), name="alice")
    alice.expect("waiting for someone to join room demo")
    bob = processes.peer("--room", "demo", "--server", server.url, *CALL,
                         "--record", str(tmp_path / "bob-got.mp4"), name="bob")
    code_a = alice.expect(r"connected to bob; verification code (\d{5}(?: \d{5}){4})").group(1)
    code_b = bob.expect(r"connected to alice; verification code (\d{5}(?: \d{5}){4})").group(1)
    assert code_a == code_b

    alice.send("hello bob")
    bob.expect(r"^\[alice\] hello bob$")
    bob.send("hi alice, héllo ✓")
    alice.expect(r"^\[bob\] hi alice, héllo ✓$")
    time.sleep(2)  # two seconds of video each way

    started = time.monotonic()
    bob.interrupt()  # Ctrl-C: bob leaves
    alice.expect(r"call with bob ended", timeout=2)
    assert time.monotonic() - started < 2.0
    assert bob.wait() == 0
    bob.expect("left room demo")
    alice.expect("waiting for someone to join room demo", times=2)  # again, after bob

    # a newcomer calls alice again
    carol = processes.peer("--room", "demo", "--server", server.url, *CALL, name="carol")
    alice.expect("connected to carol")
    carol.expect("connected to alice")
    carol.send("me too")
    alice.expect(r"^\[carol\] me too$")
    time.sleep(1.5)  # some video of carol too
    carol.interrupt()
    assert carol.wait() == 0
    alice.interrupt()
    assert alice.wait() == 0
    alice.expect(r"recorded carol to .*alice-got-2\.mp4")

    for path, least in ((tmp_path / "alice-got.mp4", 30), (tmp_path / "bob-got.mp4", 30), (tmp_path / "alice-got-2.mp4", 15)):
        frames = recorded_frames(str(path))
        assert len(frames) > least, f"{path.name}: only {len(frames)} frames"
        for picture in frames[5::15]:
            assert likeness_to_testsrc(picture) > 0.98, f"{path.name} holds something other than testsrc"
    for process in (alice, bob, carol):
        assert "Traceback" not in process.output


def test_ctrl_c_leaves_cleanly(server, processes):
    import signal

    alice = processes.peer("--room", "ctrl-c", "--server", server.url, *CALL, name="alice")
    bob = processes.peer("--room", "ctrl-c", "--server", server.url, *CALL, name="bob")
    alice.expect("connected to bob")
    bob.expect("connected to alice")
    alice.interrupt()
    assert alice.wait() == 0
    bob.expect("call with alice ended", timeout=2)
    assert "Traceback" not in alice.output + bob.output


def test_embedded_server_when_nothing_answers(processes):
    from conftest import wait_healthy

    host = processes.peer("--room", "embedded", *CALL, name="host")
    host.expect(r"hosts one on port 8080")
    command = host.expect(r"On the other machine run: (python -m peer --room embedded --server http://\S+:8080)").group(1)
    assert "ADDRESS" not in command
    wait_healthy("http://127.0.0.1:8080")
    guest = processes.peer("--room", "embedded", *CALL, name="guest")
    guest.expect("joined room embedded")
    assert "hosts one" not in guest.output
    guest.expect("connected to host")
    host.expect("connected to guest")
    guest.interrupt()
    assert guest.wait() == 0
    host.interrupt()
    assert host.wait() == 0
