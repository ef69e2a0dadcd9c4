"""The verification code: 25 digits both sides of a call read to each other.

It is computed from the certificates DTLS actually used, never from SDP text: the SDP comes
through the signaling server, which can add lines DTLS ignores (aiortc checks only the
fingerprints of hash algorithms it knows, so an ``a=fingerprint:sha-1`` line carrying someone
else's value changes nothing for DTLS but could steer a code read from the SDP).

Someone in the middle holds one DTLS connection with each side, so each side sees the relay's
certificate instead of the other's and the codes differ, unless the relay finds certificates
whose codes collide. It controls both of its own certificates, so that is a birthday search:
about 2^(bits/2) tries. 25 digits are about 83 bits: about 2^41 tries, anew for every call
(each connection has fresh certificates) and while both sides wait for it to connect.
docs/protocol.md states the computation for other clients.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Optional

from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport
from cryptography.hazmat.primitives.serialization import Encoding

LABEL = b"pypeer verification code v1\n"
DIGITS = 25
GROUP = 5


def code_from_digests(digests: Iterable[bytes]) -> str:
    """The code for the SHA-256 digests of a call's certificates (ours and theirs).

    Sorted, so both sides get the same code whichever is theirs; each digest counted once."""
    joined = b"".join(sorted(set(digests)))
    number = int.from_bytes(hashlib.sha256(LABEL + joined).digest()[:16], "big") % 10**DIGITS
    text = f"{number:0{DIGITS}d}"
    return " ".join(text[i:i + GROUP] for i in range(0, DIGITS, GROUP))


def code_from_certificates(certificates: Iterable[bytes]) -> str:
    """The code for a call's certificates in DER (the bytes a ``sha-256`` fingerprint hashes)."""
    return code_from_digests(hashlib.sha256(der).digest() for der in certificates)


def connection_code(pc: RTCPeerConnection) -> Optional[str]:
    """The code of a connection: our certificate and the one the other side proved to hold in
    a DTLS handshake. None until DTLS has completed, and None when its transports disagree.

    An honest call has one DTLS transport (everything bundled) and so two certificates. Should
    the connection run several transports (an offer or answer without BUNDLE), each must show
    the same two: a relay that sits on one transport only, with one certificate of its own
    towards both sides, would otherwise add the same third certificate to both codes and leave
    them equal (the browser page keeps the same rule)."""
    pairs = []
    for transport in _dtls_transports(pc):
        if transport.state != "connected" or transport._ssl is None:
            continue
        local = transport._ssl.get_certificate(as_cryptography=True)
        remote = transport._ssl.get_peer_certificate(as_cryptography=True)
        if local is None or remote is None:
            return None
        pairs.append((local.public_bytes(Encoding.DER), remote.public_bytes(Encoding.DER)))
    return code_from_transports(pairs)


def code_from_transports(pairs: Iterable[tuple[bytes, bytes]]) -> Optional[str]:
    """The code for the (ours, theirs) certificates in DER of each connected DTLS transport of
    a call: only when every transport shows the same two, and they differ; else None."""
    pairs = list(pairs)
    ours = {local for local, _ in pairs}
    theirs = {remote for _, remote in pairs}
    if len(ours) != 1 or len(theirs) != 1 or ours == theirs:
        return None
    return code_from_certificates(ours | theirs)


def _dtls_transports(pc: RTCPeerConnection) -> set[RTCDtlsTransport]:
    transports = {transceiver.receiver.transport for transceiver in pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport)
    return transports
