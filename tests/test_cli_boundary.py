"""``python -m peer`` is a bot like any other: it uses only the public API. Read from its source
(no sockets), so a new import of the peer's insides fails here, not in a later reshaping."""

import ast
import inspect
import socket
import sys

import aiohttp
import pytest

import peer
import signaling
from conftest import ROOT
from peer.cli import parse_args

PUBLIC_MODULES = {
    "peer": set(peer.__all__),
    "peer.media.window": None,  # the CLI's own front end: the window it shows
    "peer.terminal": None,  # and the terminal it reads and prints on
    "peer.ice_config": None,  # and its ICE flags, PEER_* variables and --ice-config files
    "signaling": set(signaling.__all__),
    "signaling.protocol": None,  # the wire protocol, documented in docs/protocol.md
    "signaling.text": None,  # text from others made safe to print (docs/api.md)
}
"""What the CLI may import from our packages: every name of a module (None), or these only."""


def private_imports(source: str, package: str = "peer") -> list[str]:
    """The imports of ``source`` (a module of ``package``) that reach past the public API."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join([package, *([module] if module else [])])
            modules = [(module, [alias.name for alias in node.names])]
        else:
            continue
        for module, names in modules:
            if module.split(".")[0] in sys.stdlib_module_names:
                continue
            if module not in PUBLIC_MODULES:
                found.append(f"line {node.lineno}: {module}")
                continue
            allowed = PUBLIC_MODULES[module]
            found += [f"line {node.lineno}: {module}.{name}" for name in names or ["*"]
                      if allowed is not None and name not in allowed]
    return found


def test_the_cli_imports_only_public_names():
    assert private_imports((ROOT / "peer" / "cli.py").read_text()) == []


def test_the_check_sees_what_the_cli_used_to_import():
    before = ("from signaling.server import ServerConfig, advertised_urls\n"
              "from .call import MAX_TRIES\n"
              "from . import Room, _Joining\n"
              "import peer.session\n")
    assert private_imports(before) == ["line 1: signaling.server", "line 2: peer.call",
                                       "line 3: peer._Joining", "line 4: peer.session"]


def test_the_cli_reads_no_room_insides():
    """``room.session`` is the room's machinery; what the CLI needs of it is public (``room.name``)."""
    tree = ast.parse((ROOT / "peer" / "cli.py").read_text())
    assert [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "session"] == []


def test_one_default_server(monkeypatch):
    """The default URL has one home: the port a peer hosts on, ``join()``'s default and the
    examples' come from it (the CLI's is None: that server, or one hosted here)."""
    assert peer.DEFAULT_SERVER == f"http://localhost:{signaling.DEFAULT_PORT}"
    assert inspect.signature(peer.join).parameters["server"].default == peer.DEFAULT_SERVER
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import _common
    assert _common.parser("an example").parse_args(["--room", "r"]).server == peer.DEFAULT_SERVER
    assert parse_args(["--room", "r"]).server is None


async def test_a_hosted_server_says_where_it_is_reached():
    hosted = await signaling.host_server(0)
    try:
        assert hosted.port > 0 and hosted.url.endswith(f":{hosted.port}") and hosted.url.startswith("http://")
        assert hosted.local_url == f"http://127.0.0.1:{hosted.port}"
        async with aiohttp.ClientSession() as http, http.get(f"{hosted.local_url}/healthz") as response:
            assert response.status == 200
    finally:
        await hosted.stop()


async def test_hosting_on_a_taken_port_raises_oserror():
    """What the CLI relies on to use the server of someone who started hosting a moment before."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        with pytest.raises(OSError):
            await signaling.host_server(taken.getsockname()[1])
