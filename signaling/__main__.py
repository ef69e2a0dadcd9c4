"""``python -m signaling``: run the signaling server. Every flag also reads an environment variable."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from typing import Any, Coroutine, Optional, Union, overload

from .embedded import DEFAULT_PORT
from .server import ServerConfig, SignalingServer, advertised_urls
from .store import StoreUnavailable, redacted
from .text import log_to_stderr
from .turn import DEFAULT_TTL, MAX_TTL, TurnGrant, check_ice_url, is_turn


@overload
def _env(name: str, default: str) -> str: ...


@overload
def _env(name: str, default: None = None) -> Optional[str]: ...


def _env(name: str, default: Optional[str] = None) -> Optional[str]:
    return os.environ.get(f"SIGNALING_{name}", default)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m signaling", description="Socket.IO signaling server for WebRTC rooms.")
    parser.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="address to listen on (env SIGNALING_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(_env("PORT", str(DEFAULT_PORT))),
                        help=f"port (env SIGNALING_PORT, default {DEFAULT_PORT})")
    parser.add_argument("--room-size", type=int, default=int(_env("ROOM_SIZE", "2")),
                        help="members per room; 2 is a one-to-one call, up to 4 for mesh calls (env SIGNALING_ROOM_SIZE)")
    parser.add_argument("--allowed-origins", default=_env("ALLOWED_ORIGINS", "*"),
                        help="comma-separated browser origins allowed to connect, '*' for any (env SIGNALING_ALLOWED_ORIGINS)")
    parser.add_argument("--token-secret", default=_env("TOKEN_SECRET"),
                        help="require room tokens made with this secret (env SIGNALING_TOKEN_SECRET; see python -m signaling.token)")
    parser.add_argument("--cert", default=_env("CERT"), help="TLS certificate file (env SIGNALING_CERT)")
    parser.add_argument("--key", default=_env("KEY"), help="TLS private key file (env SIGNALING_KEY)")
    parser.add_argument("--redis", default=_env("REDIS"), metavar="URL",
                        help="run as one node of several sharing rooms in this Redis, e.g. redis://127.0.0.1:6379/0 "
                             "(env SIGNALING_REDIS; docs/deploy.md)")
    parser.add_argument("--node-name", default=_env("NODE_NAME"), metavar="NAME",
                        help="this node's name in the health check (env SIGNALING_NODE_NAME, default HOSTNAME:PORT)")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"],
                        help="(env SIGNALING_LOG_LEVEL)")
    turn = parser.add_argument_group("TURN", "hand every member a TURN server with credentials of its own "
                                     "(coturn's use-auth-secret; see docs/deploy.md)")
    turn.add_argument("--turn-server", action="append", metavar="URL",
                      help="a TURN URL of coturn, e.g. turn:turn.example.org:3478, turn:...?transport=tcp, "
                           "turns:...:5349 (repeatable; env SIGNALING_TURN_SERVER, URLs separated by commas)")
    turn.add_argument("--turn-secret", default=_env("TURN_SECRET"), metavar="SECRET",
                      help="coturn's static-auth-secret (env SIGNALING_TURN_SECRET; best there: not in ps)")
    turn.add_argument("--turn-ttl", type=int, default=_env("TURN_TTL", str(DEFAULT_TTL)), metavar="SECONDS",
                      help=f"seconds a handed-out credential works (env SIGNALING_TURN_TTL, default {DEFAULT_TTL})")
    limits = parser.add_argument_group("limits", "what one client may take; see docs/deploy.md")
    for flag, kind, help_text in LIMIT_FLAGS:
        name = flag.replace("-", "_")
        default = getattr(ServerConfig, name)
        limits.add_argument(f"--{flag}", type=kind, default=_env(name.upper(), str(default)),
                            help=f"{help_text} (env SIGNALING_{name.upper()}, default {default})")
    args = parser.parse_args(argv)
    for flag, kind, _ in LIMIT_FLAGS:
        if getattr(args, flag.replace("-", "_")) <= 0:
            parser.error(f"--{flag} must be more than 0")
    if args.room_size < 1:
        parser.error("--room-size must be at least 1")
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.token_secret is not None and not args.token_secret.strip():
        # Demanding tokens that anyone can sign with the empty key protects nothing. One line,
        # no usage text: the flag is right, its value (perhaps from the environment) is not.
        parser.exit(2, "python -m signaling: the token secret (--token-secret or SIGNALING_TOKEN_SECRET) is empty or blank; "
                       "give a long random one, or none to admit everyone\n")
    if not origins(args.allowed_origins):
        # python-engineio reads an empty list as "check nothing": refuse it rather than allow all
        parser.error("--allowed-origins needs '*' or at least one origin")
    args.turn = _turn_grant(parser, args)
    return args


def _turn_grant(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[TurnGrant]:
    """The TURN servers to hand out, from --turn-server/--turn-secret/--turn-ttl or their
    variables; every fault in a line of its own, no usage text (a value may come from the
    environment), and never the secret."""
    urls = args.turn_server or [url.strip() for url in _env("TURN_SERVER", "").split(",") if url.strip()]
    problems = []
    for url in urls:
        try:
            if not is_turn(check_ice_url(url)):
                problems.append(f"--turn-server {url}: a TURN URL starts with turn: or turns:")
        except ValueError as error:
            problems.append(f"--turn-server: {error}")
    secret = args.turn_secret
    if urls and (secret is None or not secret.strip()):
        problems.append("--turn-server needs --turn-secret (or SIGNALING_TURN_SECRET): coturn's static-auth-secret")
    if secret is not None and not urls:
        problems.append("--turn-secret needs at least one --turn-server (or SIGNALING_TURN_SERVER)")
    if not 0 < args.turn_ttl <= MAX_TTL:
        problems.append(f"--turn-ttl must be from 1 to {MAX_TTL} seconds")
    if problems:
        parser.exit(2, "".join(f"python -m signaling: {problem}\n" for problem in problems))
    return TurnGrant(tuple(urls), secret, args.turn_ttl) if urls and secret else None


LIMIT_FLAGS = [
    ("max-connections", int, "TCP connections and Socket.IO sessions open at once, overall"),
    ("max-per-address", int, "the same, from one client address"),
    ("max-attachments", int, "binary attachments one Socket.IO packet may declare"),
    ("max-queue-bytes", int, "bytes waiting for one client before it is dropped"),
    ("handshake-timeout", float, "seconds for a connection to send a request and to connect to Socket.IO"),
    ("idle-timeout", float, "seconds a client may leave a ping unanswered or our data unread"),
    ("join-rate", float, "joins per second from one address, after the burst"),
    ("join-burst", int, "joins one address may make at once"),
    ("shutdown-timeout", float, "seconds a stop (SIGTERM, Ctrl-C) may take, whatever the clients do"),
]
"""Flags for ``ServerConfig``'s limits: (flag, type, help); the field is the flag with '_'."""


def origins(value: str) -> Union[str, list[str]]:
    return "*" if value.strip() == "*" else [o.strip() for o in value.split(",") if o.strip()]


async def serve(args: argparse.Namespace) -> None:
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    server = SignalingServer(ServerConfig(room_size=args.room_size, allowed_origins=origins(args.allowed_origins),
                                          token_secret=args.token_secret, turn=args.turn, redis=args.redis,
                                          node_name=args.node_name or f"{socket.gethostname()}:{args.port}",
                                          **{flag.replace("-", "_"): getattr(args, flag.replace("-", "_"))
                                             for flag, _, _ in LIMIT_FLAGS}))
    port = await server.start(args.host, args.port, context)
    for url in advertised_urls(args.host, port, "https" if context else "http"):
        logging.getLogger("signaling").info("listening: peers use --server %s", url)
    if args.turn is not None:
        logging.getLogger("signaling").info("handing out TURN %s with credentials valid %d s",
                                            ", ".join(args.turn.urls), args.turn.ttl)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # as Ctrl-C: a clean goodbye
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop where it is installed (not on Windows): its socket I/O and
    scheduling are in C, part of what cut the CPU a relayed message costs (docs/benchmarks.md);
    asyncio's own loop otherwise, the same server."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    log_to_stderr(args.log_level.upper(), "%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run(serve(args))
    except KeyboardInterrupt:
        return 0
    except OSError as error:
        print(f"signaling: cannot listen on {args.host}:{args.port}: {error.strerror or error}. "
              "Pick another --port or stop what uses it.", file=sys.stderr)
        return 1
    except ssl.SSLError as error:
        print(f"signaling: cannot use --cert/--key: {error}", file=sys.stderr)
        return 1
    except StoreUnavailable as error:
        print(f"signaling: cannot reach Redis at {redacted(args.redis or '')}: {error.cause}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
