"""A test network of network namespaces: an "internet", public hosts, hosts behind NAT routers,
coturn, and links that lose, delay or drop packets. Real kernels, real iptables, real coturn.

Needs root, ``ip`` (iproute2), ``iptables`` and ``turnserver`` (coturn). Use the ``netlab``
fixture of ``tests/conftest.py`` (it fails in CI and skips elsewhere when one is missing), or
``with Netlab() as lab:`` after ``check_tools()``.

The API (kept stable; other tests build on it)::

    lab = Netlab()                      # a context manager: everything goes on exit, also on failure
    lab.public_host(name) -> Host       # 203.0.113.N on the internet, default route into it
    lab.nat_host(name, kind="cone")     # 10.N.0.2 behind its own router (MASQUERADE);
                                        # kind="symmetric": --random-fully
    lab.server_host() -> Host           # the public host "server" (made once), for signaling and coturn
    lab.signaling(*flags) -> str        # python -m signaling on the server host; its URL
    lab.turn(user=, password=)          # coturn on the server host, long-term credentials; or
    lab.turn(secret=)                   # coturn's use-auth-secret (static-auth-secret) scheme; port=3478,
                                        # UDP and TCP, no TLS; another port for a second coturn
                                        # -> Turn: .url ("turn:IP:3478"), .stun_url, .user, .password, .secret
    lab.internet                        # the internet's namespace, as a Host (popen, run)
    lab.iptables(*args, ns=None)        # iptables -w in the internet's namespace (or ns)
    lab.prefix                          # this lab's namespace names begin with it

    host.name, host.ns                  # the namespace is host.ns
    host.address                        # its own address (10.N.0.2 behind a NAT)
    host.public_address                 # the address the internet sees (its router's behind a NAT)
    host.popen(args, name=, env=, stdin=) -> conftest.Process   # runs inside the namespace
    host.peer(*flags, name=) -> conftest.Process                # python -m peer --name NAME ...
    host.run(args) -> str               # a short command inside the namespace; its output
    host.command(args) -> list[str]     # args as run inside the namespace (ip netns exec NS ...)
    host.wait_listening(port, "tcp")    # until something listens on port in the namespace (ss)
    host.loss(0.05)                     # drop this share of packets, each way, on the host's link
    host.delay(100, way="both")         # hold every packet this many ms: "both" ways, "out" (as tc netem
                                        # on the host's interface), "in" (tests/nfqueue_delay.py)
    host.link_down() / host.link_up()   # an outage: every packet of the link dropped, then let through
    host.heal()                         # no loss, no delay, link up

Host names: 1 to 16 lowercase letters and digits, one host each ("server" is the server
host's). Processes started with ``popen``/``peer``/``signaling``/``turn`` are stopped on exit.

Layout. The "internet" is one namespace that routes 203.0.113.0/24: each host (or NAT router)
hangs off it on its own veth pair, with proxy ARP making the range look like one LAN, and a
blackhole default route as the silent sink for anything else (coturn needs a default route,
or it tears allocations down on "Network is unreachable"). It routes rather than bridges so
that a link can be impaired in its FORWARD chain: a packet dropped there vanishes as on a real
link, while one dropped in the sender's own OUTPUT chain fails the send with EPERM, which no
real outage does (a bridge's frames never reach iptables here: no br_netfilter).

A NAT router: ``wan0`` on the internet, ``lan0`` 10.N.0.1/24, MASQUERADE out of ``wan0``
(source ports kept: a "cone" NAT; ``--random-fully``: "symmetric"), and NEW/INVALID packets
from outside dropped (without that, an early inbound check makes conntrack pick another port
and the cone is not one).

Names. Namespaces are ``netlab<pid>.<n>-<host>``: the test process's pid and a counter. Each
lab deletes its own on exit; a new lab also deletes those of processes that are gone (a run
that crashed or was killed), and kills what still runs in them. Interface names live inside
the lab's namespaces only, so labs of parallel runs never meet. Nothing is made in the root
namespace.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from conftest import ROOT, Process, child_env, missing

PREFIX = "netlab"
_NAME = re.compile(rf"^{PREFIX}(\d+)\.(\d+)-")
INTERNET = "203.0.113"
GATEWAY = f"{INTERNET}.1"
SIGNALING_PORT = 8080
TURN_PORT = 3478
TURN_REALM = "netlab"
_labs = itertools.count(1)
_WAYS = {"both": "", "out": "-i", "in": "-o"}
"""Which packets of a host's link a delay holds, as an iptables match on the internet's side of it."""


def check_tools() -> None:
    """Fail (CI) or skip (elsewhere) unless root, ip, iptables and turnserver are all here."""
    if os.geteuid() != 0:
        missing("the network tests need root (network namespaces, iptables)")
    for program in ("ip", "iptables", "turnserver"):
        if shutil.which(program) is None:
            missing(f"{program} is not installed (.ci/run installs it)")


def _run(args: list[str], check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(ns: str) -> None:
    """Kill what runs in ``ns``, then delete it (its interfaces, and their veth peers, go too)."""
    for pid in _run(["ip", "netns", "pids", ns], check=False).split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    _run(["ip", "netns", "del", ns], check=False)


def clean_stale() -> None:
    """Delete the namespaces of labs whose process is gone (a crashed or killed run)."""
    for ns in namespaces():
        match = _NAME.match(ns)
        if match and not _alive(int(match.group(1))):
            delete_namespace(ns)


@dataclass(frozen=True)
class Turn:
    """A coturn running on the lab's server host."""

    url: str
    stun_url: str
    user: Optional[str] = None
    password: Optional[str] = None
    secret: Optional[str] = None
    process: Optional[Process] = None


class Host:
    """A machine of the lab: a namespace with one link (``eth0``) toward the internet."""

    def __init__(self, lab: "Netlab", name: str, ns: str, address: str, public_address: str, uplink: str,
                 index: int) -> None:
        self.lab = lab
        self.name = name
        self.ns = ns
        self.address = address
        self.public_address = public_address
        self._uplink = uplink
        """The internet's side of the link that carries this host's traffic (its router's, behind a NAT)."""
        self._index = index
        self._chain = f"LINK-{uplink}"
        self._delay: Optional[Process] = None
        self._delay_way = ""
        self._impaired = False

    def __repr__(self) -> str:
        return f"Host({self.name} {self.address} in {self.ns})"

    def command(self, args: list[str]) -> list[str]:
        """``args`` as run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *args]

    def run(self, args: list[str], check: bool = True) -> str:
        return _run(self.command(args), check)

    def popen(self, args: list[str], name: str = "", env: Optional[dict] = None, **options: Any) -> Process:
        """Start ``args`` in this namespace as a ``conftest.Process`` (lines awaitable with
        ``expect``); stopped when the lab closes. ``options``: ``cwd``, ``stdin``."""
        process = Process(self.command(args), env=env or child_env(), name=name or Path(args[0]).name, **options)
        self.lab.processes.append(process)
        return process

    def peer(self, *flags: str, name: str, env: Optional[dict] = None, **options: Any) -> Process:
        """``python -m peer --name NAME FLAGS`` on this host (the worktree's peer: cwd and PYTHONPATH)."""
        return self.popen([sys.executable, "-m", "peer", "--name", name, *flags], name=name, env=env, **options)

    def wait_listening(self, port: int, protocol: str = "tcp", process: Optional[Process] = None,
                       timeout: float = 15) -> None:
        """Wait until something listens on ``port`` in this namespace (``ss``); ``process``
        ending first fails at once, with its output."""
        deadline = time.monotonic() + timeout
        while not self.run(["ss", "-H", "-ln", "--udp" if protocol == "udp" else "--tcp", f"sport = :{port}"]).strip():
            if process is not None and process.proc.poll() is not None:
                raise AssertionError(f"{process.name} ended before listening on {port}:\n{process.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {protocol} port {port} in {self.ns} after {timeout} s"
                                     + (f":\n{process.output}" if process else ""))
            time.sleep(0.05)

    # The link

    def _rules(self) -> None:
        """This host's chain in the internet's FORWARD chain, both ways, made on first use."""
        if self._impaired:
            return
        lab = self.lab
        lab.iptables("-N", self._chain)
        lab.iptables("-A", "FORWARD", "-i", self._uplink, "-j", self._chain)
        lab.iptables("-A", "FORWARD", "-o", self._uplink, "-j", self._chain)
        self._impaired = True

    def _set(self, tag: str, rule: list[str], first: bool = False) -> None:
        """Replace the rule commented ``tag`` in this host's chain by ``rule`` (none: removed)."""
        self._rules()
        self._drop_rule(tag)
        if rule:
            where = ["-I", self._chain, "1"] if first else ["-A", self._chain]
            self.lab.iptables(*where, *rule, "-m", "comment", "--comment", tag)

    def _drop_rule(self, tag: str) -> None:
        listing = self.lab.iptables("-S", self._chain)
        for line in listing.splitlines():
            if f"--comment {tag}" in line or f'--comment "{tag}"' in line:
                self.lab.iptables("-D", *shlex.split(line)[1:])

    def loss(self, share: float) -> None:
        """Drop ``share`` (0 to 1) of the packets each way at random; 0 stops it."""
        self._set("loss", ["-m", "statistic", "--mode", "random", "--probability", f"{share:.4f}", "-j", "DROP"]
                  if share > 0 else [])
        if self._delay is not None:  # loss before delay: a packet lost is not queued
            self._set("delay", self._delay_rule())

    def delay(self, ms: float, way: str = "both") -> None:
        """Hold every packet ``ms`` milliseconds (an NFQUEUE helper in the internet namespace,
        ``tests/nfqueue_delay.py``): ``way`` "both", "out" (from the host: what ``tc netem``
        on its interface does) or "in"; 0 stops it."""
        if way not in _WAYS:
            raise ValueError(f"way {way!r}: both, out or in")
        self._delay_way = _WAYS[way]
        if self._delay is not None:
            self._set("delay", [])
            self._delay.stop()
            self._delay = None
        if ms <= 0:
            return
        self._delay = self.lab.internet.popen(
            [sys.executable, str(ROOT / "tests" / "nfqueue_delay.py"), "--queue", str(self._index), "--delay-ms", str(ms)],
            name=f"delay-{self.name}")
        self._delay.expect("^ready", timeout=10)
        self._set("delay", self._delay_rule())

    def _delay_rule(self) -> list[str]:
        way = [self._delay_way, self._uplink] if self._delay_way else []
        return [*way, "-j", "NFQUEUE", "--queue-num", str(self._index), "--queue-bypass"]

    def link_down(self) -> None:
        """An outage: every packet of this host's link dropped, silently, until ``link_up``."""
        self._set("down", ["-j", "DROP"], first=True)

    def link_up(self) -> None:
        self._set("down", [])

    def heal(self) -> None:
        """No loss, no delay, the link up."""
        if self._impaired:
            self.link_up()
            self.loss(0)
            self.delay(0)


class Netlab:
    """The lab: see the module docstring."""

    def __init__(self, prefix: Optional[str] = None) -> None:
        self.prefix = prefix or f"{PREFIX}{os.getpid()}.{next(_labs)}-"
        self.processes: list[Process] = []
        self._namespaces: list[str] = []
        self._hosts: dict[str, Host] = {}
        self._links = itertools.count(1)
        self._server: Optional[Host] = None
        self._signaling: Optional[str] = None
        self._dir = Path(tempfile.mkdtemp(prefix="netlab-"))
        self.internet: Host
        self._opened = False

    def __enter__(self) -> "Netlab":
        clean_stale()
        try:
            ns = self._namespace("internet")
            self.internet = Host(self, "internet", ns, GATEWAY, GATEWAY, "lo", 0)
            self._sysctl(ns, "net.ipv4.ip_forward=1")
            _run(["ip", "-n", ns, "route", "add", "blackhole", "default"])
        except BaseException:
            self.close()
            raise
        self._opened = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process the lab started, delete its namespaces and files."""
        for process in reversed(self.processes):
            try:
                process.stop(grace=3)
            except Exception:  # noqa: BLE001 - go on deleting the rest
                pass
        for ns in reversed(self._namespaces):
            delete_namespace(ns)
        self._namespaces.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    # Building

    def _namespace(self, name: str) -> str:
        ns = f"{self.prefix}{name}"
        _run(["ip", "netns", "add", ns])
        self._namespaces.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    @staticmethod
    def _sysctl(ns: str, setting: str) -> None:
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting])

    def iptables(self, *args: str, ns: Optional[str] = None) -> str:
        """iptables in the internet namespace (or ``ns``), waiting for the xtables lock."""
        return _run(["ip", "netns", "exec", ns or self.internet.ns, "iptables", "-w", *args])

    def _attach(self, ns: str, inside: str) -> tuple[str, str, int]:
        """A veth from the internet to ``ns`` (named ``inside`` there), with the next public
        address; returns (address, the internet's interface, link number)."""
        number = next(self._links)
        if number > 240:
            raise RuntimeError("a lab holds at most 240 links")
        address, outside = f"{INTERNET}.{number + 9}", f"h{number}"
        inet = self.internet.ns
        _run(["ip", "-n", inet, "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns])
        self._sysctl(inet, f"net.ipv4.conf.{outside}.proxy_arp=1")
        self._sysctl(inet, f"net.ipv4.neigh.{outside}.proxy_delay=0")  # else answers wait up to 0.8 s
        _run(["ip", "-n", inet, "addr", "add", f"{GATEWAY}/32", "dev", outside])
        _run(["ip", "-n", inet, "link", "set", outside, "up"])
        _run(["ip", "-n", inet, "route", "add", f"{address}/32", "dev", outside])
        _run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", inside])
        _run(["ip", "-n", ns, "link", "set", inside, "up"])
        _run(["ip", "-n", ns, "route", "add", "default", "via", GATEWAY])
        return address, outside, number

    def _new_name(self, name: str) -> None:
        if name in self._hosts or name in ("internet",) or not re.fullmatch(r"[a-z][a-z0-9]{0,15}", name):
            raise ValueError(f"host name {name!r}: taken, or not 1 to 16 lowercase letters and digits")

    def public_host(self, name: str) -> Host:
        """A host with a public address on the internet."""
        self._new_name(name)
        ns = self._namespace(name)
        address, outside, number = self._attach(ns, "eth0")
        host = self._hosts[name] = Host(self, name, ns, address, address, outside, number)
        return host

    def nat_host(self, name: str, kind: str = "cone") -> Host:
        """A host on its own LAN 10.N.0.0/24 behind its own NAT router ("cone" or "symmetric")."""
        if kind not in ("cone", "symmetric"):
            raise ValueError(f"kind {kind!r}: cone or symmetric")
        self._new_name(name)
        router = self._namespace(f"{name}-nat")
        public, outside, number = self._attach(router, "wan0")
        ns = self._namespace(name)
        lan = f"10.{number}.0"
        _run(["ip", "-n", router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "-n", router, "addr", "add", f"{lan}.1/24", "dev", "lan0"])
        _run(["ip", "-n", router, "link", "set", "lan0", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{lan}.2/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "route", "add", "default", "via", f"{lan}.1"])
        self._sysctl(router, "net.ipv4.ip_forward=1")
        masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"]
        self.iptables(*masquerade, *(["--random-fully"] if kind == "symmetric" else []), ns=router)
        for chain in ("INPUT", "FORWARD"):
            self.iptables("-A", chain, "-i", "wan0", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP",
                          ns=router)
        host = self._hosts[name] = Host(self, name, ns, f"{lan}.2", public, outside, number)
        return host

    def server_host(self) -> Host:
        """The public host "server" (made on first use): where ``signaling`` and ``turn`` run."""
        if self._server is None:
            self._server = self.public_host("server")
        return self._server

    # Services

    def signaling(self, *flags: str) -> str:
        """``python -m signaling`` on the server host, listening; its URL (one server per lab)."""
        if self._signaling is not None:
            raise RuntimeError("the lab runs one signaling server: use its URL")
        host = self.server_host()
        server = host.popen([sys.executable, "-m", "signaling", "--host", host.address, "--port", str(SIGNALING_PORT),
                             *flags], name="signaling")
        server.expect("listening: peers use --server", timeout=15)
        self._signaling = f"http://{host.address}:{SIGNALING_PORT}"
        return self._signaling

    def turn(self, user: Optional[str] = None, password: Optional[str] = None, secret: Optional[str] = None,
             port: int = TURN_PORT) -> Turn:
        """coturn on the server host, UDP and TCP on ``port``: long-term credentials
        (``user``/``password``) or the use-auth-secret scheme (``secret``)."""
        if (secret is None) == (user is None or password is None):
            raise ValueError("give user and password, or secret")
        host = self.server_host()
        data = self._dir / f"turn-{port}"
        data.mkdir()
        auth = ["--use-auth-secret", f"--static-auth-secret={secret}"] if secret is not None else \
            ["--lt-cred-mech", f"--user={user}:{password}"]
        process = host.popen(
            ["turnserver", "-n", *auth, f"--realm={TURN_REALM}", f"--listening-ip={host.address}",
             f"--relay-ip={host.address}", f"--listening-port={port}", "--no-tls", "--no-dtls", "--no-cli",
             "--no-rfc5780", "--no-software-attribute", "--fingerprint", "--log-file=stdout", "--simple-log",
             f"--userdb={data / 'turndb'}", f"--pidfile={data / 'pid'}"], name=f"turnserver-{port}")
        host.wait_listening(port, "udp", process)
        host.wait_listening(port, "tcp", process)
        address = f"{host.address}:{port}"
        return Turn(url=f"turn:{address}", stun_url=f"stun:{address}", user=user, password=password,
                    secret=secret, process=process)
