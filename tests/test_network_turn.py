"""TURN between two machines behind symmetric NATs (tests/netlab.py), two ways:

- relay-only with the peer's own TURN flags (a coturn with a long-term user);
- no ICE flags at all: the signaling server, started with ``--turn-server``/``--turn-secret``,
  hands out credentials of coturn's use-auth-secret scheme in its join acknowledgement.

Each a full call of two ``python -m peer`` (video both ways, chat both ways), reported
"relayed" by both sides' ``--stats``. One lab, one signaling server for both: the first
pair's flags also show that servers of one's own win over the server's. Both calls run at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from netlab import Netlab, check_tools
from test_network_paths import CONNECTED_WITHIN, full_call, start_call

SECRET = "netlab-static-auth-secret-7c1e"
USER, PASSWORD = "relayer", "netlab-own-turn-password-93a0"
CASES = ("own TURN, relay only", "handed out by the server")


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """Both calls started at once; ``calls[case]`` is a future of (the call, seconds to connect)."""
    check_tools()
    folder = tmp_path_factory.mktemp("turn")
    with Netlab() as lab, ThreadPoolExecutor(2) as pool:
        handed = lab.turn(secret=SECRET)
        own = lab.turn(user=USER, password=PASSWORD, port=3479)
        server = lab.signaling("--turn-server", handed.url, "--turn-server", f"{handed.url}?transport=tcp",
                               "--turn-secret", SECRET)
        flags = {
            CASES[0]: ("--relay-only", "--turn", own.url, "--turn-user", USER, "--turn-password", PASSWORD),
            CASES[1]: (),
        }
        started = {}
        for number, case in enumerate(CASES):
            hosts = (lab.nat_host(f"t{number}a", "symmetric"), lab.nat_host(f"t{number}b", "symmetric"))
            started[case] = start_call(hosts, (f"{hosts[0].name}-peer", f"{hosts[1].name}-peer"), f"turn-{number}",
                                       server, folder, *flags[case])
        futures = {case: pool.submit(full_call, call, "relayed") for case, call in started.items()}
        yield {case: (started[case], futures[case]) for case in CASES}


def check(calls, case: str) -> None:
    call, future = calls[case]
    took = future.result(timeout=2 * CONNECTED_WITHIN)
    print(f"{case}: connected {took:.1f} s after the peers started")
    for peer in call.peers:
        assert SECRET not in peer.output and PASSWORD not in peer.output
        assert "Traceback" not in peer.output and "never retrieved" not in peer.output  # the losing allocation released


def test_symmetric_nats_relay_only_with_turn_flags(calls):
    check(calls, CASES[0])


def test_symmetric_nats_with_turn_handed_out_by_the_signaling_server(calls):
    check(calls, CASES[1])
