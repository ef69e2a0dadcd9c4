"""Where ``python -m peer`` takes its STUN and TURN servers from: flags, environment
variables, a config file.

A password on the command line is there for every user of the machine to read (``ps``,
``/proc/PID/cmdline``) and stays in shell histories; the environment (``PEER_TURN_PASSWORD``)
and a file only its owner reads (``--ice-config``) are not. So every flag has a variable,
and a file holds whole ``RTCIceServer`` lists, as a browser's ``RTCConfiguration`` does:

    {"iceServers": [{"urls": ["turn:turn.example.org:3478", "turns:turn.example.org:5349"],
                     "username": "alice", "credential": "secret"},
                    {"urls": "stun:stun.example.org:3478"}],
     "iceTransportPolicy": "relay"}

or the same in TOML (a file whose name ends in ``.toml``: ``[[iceServers]]`` tables). A flag
wins over its variable; the file's servers come after those of the flags. With none of
them the peer takes the servers the signaling server hands out (``IceSettings.offered``).

Every fault is one line saying where the value came from; the caller prints them all and
exits. No line ever holds a credential.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from signaling.turn import IceServer, check_ice_url, read_ice_server, shown_url

from .ice import IceConfigError, IceSettings

ENV_STUN = "PEER_STUN"
ENV_TURN = "PEER_TURN"
ENV_TURN_USER = "PEER_TURN_USER"
ENV_TURN_PASSWORD = "PEER_TURN_PASSWORD"
ENV_ICE_CONFIG = "PEER_ICE_CONFIG"
MAX_FILE_BYTES = 64 * 1024
"""A config file lists a few servers: a bigger file is not one."""
FILE_KEYS = ("iceServers", "iceTransportPolicy")
SERVER_KEYS = ("urls", "username", "credential")


def add_ice_arguments(parser: argparse.ArgumentParser) -> None:
    """The ICE flags of ``python -m peer`` (``--ice-host`` aside)."""
    parser.add_argument("--stun", action="append", default=[], metavar="URL",
                        help=f"STUN server, e.g. stun:stun.example.org:3478 (repeatable; env {ENV_STUN}, URLs "
                             "separated by commas)")
    parser.add_argument("--turn", action="append", default=[], metavar="URL",
                        help="TURN server: turn:HOST[:PORT] (UDP), turn:HOST[:PORT]?transport=tcp, turns:HOST[:PORT] "
                             f"(TLS) (repeatable; env {ENV_TURN}, URLs separated by commas)")
    parser.add_argument("--turn-user", metavar="USER", help=f"TURN user name (env {ENV_TURN_USER})")
    parser.add_argument("--turn-password", metavar="PASSWORD",
                        help=f"TURN password; others on this machine see it in ps: prefer env {ENV_TURN_PASSWORD} "
                             "or --ice-config")
    parser.add_argument("--ice-config", metavar="FILE",
                        help="STUN/TURN servers from a JSON or .toml file: {\"iceServers\": [{\"urls\": ..., "
                             f"\"username\": ..., \"credential\": ...}}]}} (env {ENV_ICE_CONFIG})")
    parser.add_argument("--relay-only", action="store_true",
                        help="connect through a TURN server only, never directly (hides your address from the "
                             "others; needs a TURN server, from these flags or the signaling server)")


def ice_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Optional[IceSettings], list[str]]:
    """The ICE settings the flags and variables make, or None and a line per fault."""
    problems: list[str] = []
    stun = _urls(args.stun, environ, ENV_STUN, "--stun", problems)
    turn = _urls(args.turn, environ, ENV_TURN, "--turn", problems)
    user = args.turn_user if args.turn_user is not None else environ.get(ENV_TURN_USER)
    password = args.turn_password if args.turn_password is not None else environ.get(ENV_TURN_PASSWORD)
    if turn and (not user or not password):
        problems.append(f"--turn {shown_url(turn[0])} needs --turn-user and --turn-password "
                        f"(or {ENV_TURN_USER} and {ENV_TURN_PASSWORD}, or a server with them in --ice-config)")
    if (args.turn_user is not None or args.turn_password is not None) and not turn:
        problems.append("--turn-user and --turn-password are for a --turn server: give its URL")
    path = args.ice_config or environ.get(ENV_ICE_CONFIG)
    servers: list[IceServer] = []
    relay_only = args.relay_only
    if path:
        try:
            servers, relay_from_file = load(Path(path))
            relay_only = relay_only or relay_from_file
        except IceConfigError as error:
            problems.append(str(error))
    if problems:
        return None, problems
    try:
        ice = IceSettings(host_addresses=tuple(args.ice_host), stun=tuple(stun), turn=tuple(turn), turn_user=user,
                          turn_password=password, relay_only=relay_only, servers=tuple(servers))
    except IceConfigError as error:
        return None, [str(error)]
    return ice, []


def _urls(given: Sequence[str], environ: Mapping[str, str], variable: str, flag: str,
          problems: list[str]) -> list[str]:
    """The URLs of ``flag``, or else of ``variable`` (separated by commas), each checked:
    a fault is a line in ``problems`` naming where the URL came from."""
    urls = list(given) or [url.strip() for url in environ.get(variable, "").split(",") if url.strip()]
    where = flag if given else variable
    for url in urls:
        try:
            check_ice_url(url)
        except ValueError as error:
            problems.append(f"{where}: {error}")
    return urls


def load(path: Path) -> tuple[list[IceServer], bool]:
    """The servers of a config file (see the module's docstring), and whether it asks for
    relay only (``"iceTransportPolicy": "relay"``). IceConfigError with one line naming the
    file and what is wrong in it."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise IceConfigError(f"--ice-config {path}: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise IceConfigError(f"--ice-config {path}: larger than {MAX_FILE_BYTES // 1024} KiB; is it a config file?")
    try:
        text = data.decode("utf-8")
        content = _toml(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise IceConfigError(f"--ice-config {path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} "
                             f"({str(error).splitlines()[0]})") from None
    try:
        return _read(content)
    except ValueError as error:
        raise IceConfigError(f"--ice-config {path}: {error}") from None


def _toml(text: str) -> Any:
    """TOML read with the standard library's ``tomllib``, which Python 3.10 has not."""
    try:
        tomllib = importlib.import_module("tomllib")
    except ImportError:
        raise ValueError("TOML needs Python 3.11 or later: write the file as JSON") from None
    return tomllib.loads(text)


def _read(content: Any) -> tuple[list[IceServer], bool]:
    if not isinstance(content, dict):
        raise ValueError('the file holds an object with "iceServers", a list of servers')
    _known_keys(content, FILE_KEYS, "the file")
    policy = content.get("iceTransportPolicy", "all")
    if policy not in ("all", "relay"):
        raise ValueError('"iceTransportPolicy" is "all" or "relay"')
    listed = content.get("iceServers")
    if not isinstance(listed, list) or not listed:
        raise ValueError('"iceServers" must be a list of at least one server')
    servers = []
    for number, item in enumerate(listed, 1):
        try:
            servers.append(_server(item))
        except ValueError as error:
            raise ValueError(f"server {number}: {error}") from None
    return servers, policy == "relay"


def _server(item: Any) -> IceServer:
    if isinstance(item, dict):
        _known_keys(item, SERVER_KEYS, "a server")
    return read_ice_server(item)


def _known_keys(content: dict[str, Any], keys: Sequence[str], what: str) -> None:
    """ValueError for a key that is not one of ``keys``: a misspelt "credential" (say
    "password") would otherwise be a TURN server without a password, failing much later."""
    for key in content:
        if key not in keys:
            raise ValueError(f"{what} has no key {str(key)[:40]!r} (its keys: {', '.join(keys)})")
