"""Certificate and key construction with ``cryptography``: pure, no file access.

Owns: key types and generation, building the CA, server and client
certificates with docker:dind's subjects and the extensions TLS peers check,
PEM encoding, and the checks "key matches certificate" and "signed by".
Does not own files (store.py), nor when to issue (certs.py, lifetime.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from supervisor.tls.model import KeyType, parse_key_type
from supervisor.tls.san import SanSet

__all__ = ["KeyType", "parse_key_type"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
Role = Literal["server", "client"]

# docker:dind's subjects, kept so tools that grep for them keep working.
CA_COMMON_NAME = "docker:dind CA"
LEAF_COMMON_NAMES: dict[Role, str] = {
    "server": "docker:dind server",
    "client": "docker:dind client",
}


def generate_key(kind: KeyType) -> PrivateKey:
    if kind is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = int(kind.value.removeprefix("rsa-"))
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_type_of(key: PrivateKey | PublicKey) -> KeyType | None:
    """The KeyType of an existing key, or None for one we would not issue."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return KeyType.ECDSA_P256 if isinstance(key.curve, ec.SECP256R1) else None
    try:
        return KeyType(f"rsa-{key.key_size}")
    except ValueError:
        return None


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certs_to_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _spki(key: PublicKey | x509.Certificate) -> bytes:
    public = key.public_key() if isinstance(key, x509.Certificate) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    return _spki(key.public_key()) == _spki(cert)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer`` names and signed ``cert`` (signature checked)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _sign(
    builder: x509.CertificateBuilder, key: PrivateKey
) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def build_ca(key: PrivateKey, *, not_before: datetime, not_after: datetime) -> x509.Certificate:
    """A self-signed CA for ``key``.

    The subject stays ``CN=docker:dind CA`` across renewals and the key is
    reused, so leaves signed under an earlier CA certificate verify against
    a later one and the other way round: that is what makes the CA overlap
    safe for clients holding an old ca.pem.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return _sign(builder, key)


def build_leaf(
    *,
    role: Role,
    public_key: PublicKey,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    sans: SanSet | None,
) -> x509.Certificate:
    """A server (serverAuth, SANs) or client (clientAuth) certificate signed by the CA."""
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    # RSA key exchange (TLS 1.2) needs keyEncipherment; ECDSA keys only sign.
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LEAF_COMMON_NAMES[role])])
        )
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans is not None and not sans.is_empty():
        builder = builder.add_extension(sans.to_extension(), critical=False)
    return _sign(builder, ca_key)


def extended_key_usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()
