"""TLS and mTLS: a CA made here with `cryptography`; the same files serve and dial peers."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .conftest import Agents, make_request, params, stub

pytestmark = pytest.mark.integration


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA and one certificate for 127.0.0.1 usable as server and client (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("hatswarm test CA"))
        .issuer_name(_name("hatswarm test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("agent"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": folder / "ca.pem", "cert": folder / "agent.pem", "key": folder / "agent.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def test_mtls_between_client_gateway_and_peer(
    agents: Agents, identity_model: Path, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    tls = ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]), "--tls-ca", str(pki["ca"])]
    b = agents.start(["--model", f"ident={identity_model}", "--node-name", "b", *tls])
    a = agents.start(["--gateway", "--node-name", "a", "--peer", f"ident={b.address}", *tls])
    client = grpc.ssl_channel_credentials(
        pki["ca"].read_bytes(), pki["key"].read_bytes(), pki["cert"].read_bytes()
    )
    resp = stub(a.address, client).ModelInfer(make_request(), timeout=10)
    assert params(resp) == {"hatswarm.node": "b", "hatswarm.route": "peer"}
    # no client certificate: the handshake fails
    anonymous = grpc.ssl_channel_credentials(pki["ca"].read_bytes())
    with pytest.raises(grpc.RpcError) as err:
        stub(a.address, anonymous).ModelInfer(make_request(), timeout=2)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # plaintext: refused
    with pytest.raises(grpc.RpcError):
        stub(a.address).ModelInfer(make_request(), timeout=2)
