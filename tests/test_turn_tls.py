"""``turns:``: TURN over TLS, with a real coturn on 127.0.0.1 and a certificate of our own.

The test makes a throwaway CA and a certificate for 127.0.0.1 signed by it (``cryptography``,
which aiortc itself depends on), and starts coturn with long-term credentials and TLS on a
port of its own. aioice opens the TLS connection with ``ssl=True``, that is asyncio's
``ssl.create_default_context()``: the system's trust store, with the host name checked. A
private CA is trusted the way OpenSSL lets any program trust one, ``SSL_CERT_FILE`` in the
peer's environment; verification stays on. Two relay-only peers call through ``turns:``
(``--stats`` says "relayed", aioice's debug lines show a TLS transport); a peer that does not
trust the CA says so in one line and never connects, rather than falling back to plain TCP.
"""

import cv2  # noqa: F401  -- before av: see FIELD-NOTES

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import LOCAL, Server, child_env
from peer.ice import turn_fault
from test_turn_credentials import PEER, Coturn, full_call, stats_paths

USER, PASSWORD = "tls-user", "pw-tls-7c2e-never-shown"


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
                 ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOCAL)),
                                                                             x509.DNSName("localhost")]),
                                        critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it, as PEM files:
    (the CA's certificate, the server's certificate, the server's key)."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("peer tests CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer tests CA")]),
                      ca_key, ca=True)
    server = _certificate(LOCAL, key, ca.subject, ca_key, ca=False)
    paths = directory / "ca.pem", directory / "turn-cert.pem", directory / "turn-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return paths


def coturn_over_tls(processes, directory: Path) -> tuple[Coturn, Path]:
    """coturn with a long-term user and TLS on ``tls_port``; and the CA's certificate file."""
    ca, certificate, key = make_certificates(directory)
    return processes.add(Coturn(directory, "--lt-cred-mech", f"--user={USER}:{PASSWORD}", tls=(certificate, key))), ca


def test_a_relay_only_call_through_turns_with_a_private_ca(processes, tmp_path):
    turn, ca = coturn_over_tls(processes, tmp_path)
    server = processes.add(Server())
    common = ["--room", "tls", "--server", server.url, "--relay-only", "--turn-user", USER, *PEER]
    trusting = child_env(SSL_CERT_FILE=str(ca), PEER_TURN_PASSWORD=PASSWORD)
    # ann names the server (its certificate is checked for that name), bob gives its address
    a = processes.peer(*common, "--turn", f"turns:localhost:{turn.tls_port}", "-v",
                       "--stats", str(tmp_path / "a.jsonl"), name="ann", env=trusting)
    b = processes.peer(*common, "--turn", f"turns:{LOCAL}:{turn.tls_port}?transport=tcp",
                       "--stats", str(tmp_path / "b.jsonl"), name="bob", env=trusting)
    full_call(a, b)
    a.expect("status: 1 connected .* relayed", timeout=15)
    b.expect("status: 1 connected .* relayed", timeout=15)
    assert stats_paths(tmp_path / "a.jsonl") == stats_paths(tmp_path / "b.jsonl") == {"relayed"}
    # aioice's debug line names the transport: TLS, to the TLS port, never the plain one
    assert "turn/tcp connection_made(<asyncio.sslproto._SSLProtocolTransport" in a.output
    assert f":{turn.port}" not in a.output
    assert PASSWORD not in a.output + b.output


def test_a_certificate_of_an_unknown_ca_is_said_in_a_line(processes, tmp_path):
    turn, _ = coturn_over_tls(processes, tmp_path)
    server = processes.add(Server())
    flags = ["--room", "untrusted", "--server", server.url, "--relay-only", "--turn", f"turns:{LOCAL}:{turn.tls_port}",
             "--turn-user", USER, *PEER]
    env = child_env(PEER_TURN_PASSWORD=PASSWORD)  # the system's trust store only: it does not know our CA
    a = processes.peer(*flags, name="ann", env=env)
    a.expect("joined room")
    b = processes.peer(*flags, name="bob", env=env)
    # bob, the newcomer, offers and so gathers at once
    b.expect(rf"^peer: no relay from the TURN server {LOCAL}:{turn.tls_port}: its TLS certificate is not trusted "
             r"\(unable to get local issuer certificate; for a private CA, set SSL_CERT_FILE to its "
             r"certificate: see the README\)$", timeout=10)
    # and no other way round it: the first connection finds no path
    b.expect(r"could not connect to ann \(not connected after 10 s\)", timeout=20)
    assert "connected to" not in a.output + b.output


def test_a_certificate_for_another_name_is_said_as_such():
    """Only a chain that ends at no known CA gets the hint about private CAs."""
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code, error.verify_message = 62, "Hostname mismatch, certificate is not valid for '203.0.113.9'."
    assert turn_fault(error) == ("its TLS certificate is not trusted "
                                 "(Hostname mismatch, certificate is not valid for '203.0.113.9'.)")
