"""Room tokens: an HMAC of the room and an expiry, so a server can admit only invited peers.

A token is ``"<expiry unix seconds>.<hex HMAC-SHA256(secret, room + '\\n' + expiry)>"``.
Make one with ``python -m signaling.token --secret S --room demo --ttl 3600``.

A token lives at most ``MAX_TTL`` seconds: a leaked one cannot stay useful for years, and a
token whose expiry lies further ahead than that is refused, whoever made it.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time
from typing import Optional

MAX_TTL = 7 * 24 * 3600
"""A week: long enough for a standing weekly meeting's invitation, short enough to expire."""


def make_token(secret: str, room: str, ttl: float = 3600, now: Optional[float] = None) -> str:
    """A token admitting its holder to ``room`` for ``ttl`` seconds (at most ``MAX_TTL``) from ``now``."""
    if not secret:
        raise ValueError("the token secret must not be empty")
    if not ttl <= MAX_TTL:  # a negative ttl is allowed: an expired token, for tests
        raise ValueError(f"ttl must be at most {MAX_TTL} seconds (7 days)")
    expiry = int((time.time() if now is None else now) + ttl)
    return f"{expiry}.{_mac(secret, room, expiry)}"


def check_token(secret: str, room: str, token: Optional[str], now: Optional[float] = None) -> Optional[str]:
    """None when the token admits to ``room``; otherwise the reason it does not."""
    if not secret:  # an empty key signs for anyone who guesses it is empty
        return "this server has no usable token secret"
    if not token:
        return "this server needs a room token: ask the room's owner for one"
    expiry_text, _, mac = token.partition(".")
    if not (expiry_text.isascii() and expiry_text.isdigit()) or not mac or not mac.isascii():
        return "malformed token"
    if not hmac.compare_digest(mac, _mac(secret, room, int(expiry_text))):
        return "token is not valid for this room"
    now = time.time() if now is None else now
    if int(expiry_text) < now:
        return "token has expired: ask for a new one"
    if int(expiry_text) > now + MAX_TTL:
        return "token lives longer than the 7-day maximum: ask for a new one"
    return None


def _mac(secret: str, room: str, expiry: int) -> str:
    return hmac.new(secret.encode(), f"{room}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m signaling.token", description="Print a room token.")
    parser.add_argument("--secret", default=os.environ.get("SIGNALING_TOKEN_SECRET"),
                        help="the server's --token-secret (env SIGNALING_TOKEN_SECRET)")
    parser.add_argument("--room", required=True)
    parser.add_argument("--ttl", type=float, default=3600,
                        help=f"seconds the token stays valid (default 3600, at most {MAX_TTL}: 7 days)")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("give --secret or set SIGNALING_TOKEN_SECRET")
    if not 0 < args.ttl <= MAX_TTL:
        parser.error(f"--ttl must be more than 0 and at most {MAX_TTL} (7 days)")
    print(make_token(args.secret, args.room, args.ttl))


if __name__ == "__main__":
    main()
