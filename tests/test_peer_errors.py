"""The errors a person will hit, driven as they would hit them: one line, an exit code, no hang."""

import subprocess
import sys

from conftest import LOCAL, ROOT, Server, child_env, free_port

CALL = ["--video", "testsrc", "--ice-host", LOCAL, "--no-window"]


def run_peer(*flags: str, env=None, timeout: float = 30) -> subprocess.CompletedProcess:
    """The peer as a person runs it; with ``--audio none`` unless a test gives ``--audio``: where
    there is no microphone the peer says so in a line of its own, and these errors are not about sound."""
    sound = [] if "--audio" in flags else ["--audio", "none"]
    result = subprocess.run([sys.executable, "-m", "peer", *flags, *sound], cwd=ROOT, env=env or child_env(),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    return lines[0]


def test_missing_camera_device():
    result = run_peer("--room", "x", "--server", "http://127.0.0.1:9", "--video", "/dev/video9", "--no-window")
    assert result.returncode == 1
    assert one_line(result) == "peer: no camera /dev/video9 found. Plug one in, or use --video testsrc."


def test_missing_media_file():
    result = run_peer("--room", "x", "--video", "/nonexistent/clip.mp4", "--no-window")
    assert result.returncode == 1
    assert "no such camera or file: /nonexistent/clip.mp4" in one_line(result)


def test_no_display_says_use_no_window():
    env = child_env()
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    result = run_peer("--room", "x", "--video", "testsrc", env=env)
    assert result.returncode == 1
    assert "no display" in one_line(result) and "--no-window" in one_line(result)


def test_display_that_does_not_exist():
    result = run_peer("--room", "x", "--video", "testsrc", "--server", "http://127.0.0.1:9",
                      env=child_env(DISPLAY=":77"))
    assert result.returncode == 1
    line = one_line(result)
    assert "could not open a window on display ':77'" in line and "--no-window" in line


def test_wrong_server_port():
    port = free_port()
    result = run_peer("--room", "x", "--server", f"http://127.0.0.1:{port}", *CALL)
    assert result.returncode == 1
    assert one_line(result).startswith(f"peer: cannot reach the signaling server at http://127.0.0.1:{port}")


def test_an_empty_server_is_a_wrong_server_not_the_default():
    """``--server ""`` (a script's unset variable) names no server: it must not join whatever
    answers at the default address, nor host one."""
    result = run_peer("--room", "x", "--server", "", "--video", "none", "--no-window")
    assert result.returncode == 1
    assert one_line(result).startswith("peer: cannot reach the signaling server at  ("), result.stderr


def test_full_room(server, processes):
    alice = processes.peer("--room", "full", "--server", server.url, *CALL, name="alice")
    bob = processes.peer("--room", "full", "--server", server.url, *CALL, name="bob")
    alice.expect("connected to bob")
    result = run_peer("--room", "full", "--server", server.url, "--name", "carol", *CALL)
    assert result.returncode == 2
    assert one_line(result) == "peer: room 'full' is full (2 members). Pick another room with --room."
    alice.send("still here")
    bob.expect(r"\[alice\] still here")


def test_bad_token():
    server = Server("--token-secret", "s3cret")
    try:
        result = run_peer("--room", "x", "--server", server.url, "--token", "123.abc", *CALL)
        assert result.returncode == 2
        assert "token" in one_line(result) and "--token" in one_line(result)
    finally:
        server.stop()


def test_server_that_drops_mid_call(processes):
    server = Server()
    alice = processes.peer("--room", "drop", "--server", server.url, *CALL, name="alice")
    bob = processes.peer("--room", "drop", "--server", server.url, *CALL, name="bob")
    alice.expect("connected to bob")
    server.stop()
    alice.expect("lost the signaling server")
    alice.send("over the data channel")
    bob.expect(r"\[alice\] over the data channel")
    alice.interrupt()
    assert alice.wait() == 0
    assert "Traceback" not in alice.output + bob.output
