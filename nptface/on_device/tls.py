"""HTTPS for the demo server, so a phone on the network gets a secure context.

Browsers give a page the camera and ``crypto.subtle`` only in a secure context: https, or http
from localhost. A phone opening ``http://<this machine>:8765`` has neither, so ``nptface demo
serve`` can serve TLS with the user's certificate or a self-signed one made here (EC P-256,
``cryptography``). The phone will warn that it does not know the issuer; the certificate's SHA-256
fingerprint is printed so the user can compare it with the one the browser shows before trusting
it. The self-signed certificate is kept (key readable by its owner only) and reused while it is
valid and names the addresses served, so a phone that accepted it once keeps accepting it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

CERT_FILE = "demo-cert.pem"
KEY_FILE = "demo-key.pem"
VALID_DAYS = 365
ANY_ADDRESS = ("0.0.0.0", "::", "")


def default_tls_dir() -> Path:
    """Where the self-signed certificate is kept: ``$XDG_CACHE_HOME/nptface`` (``~/.cache/nptface``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nptface"


def fingerprint(cert: str | Path) -> str:
    """SHA-256 of the certificate's DER bytes, as browsers show it (``AB:CD:…``)."""
    der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def primary_address() -> str | None:
    """This machine's address on its default route (a UDP socket is only pointed, nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return None


def served_names(host: str) -> list[str]:
    """Names and addresses a browser may use to reach a server bound to ``host``."""
    names = ["localhost", "127.0.0.1", "::1"]
    if host in ANY_ADDRESS:
        names += [socket.gethostname(), *filter(None, [primary_address()])]
    else:
        names.append(host)
    return list(dict.fromkeys(names))


def _san(name: str):  # -> x509.GeneralName
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _reusable(cert_path: Path, key_path: Path, names: Iterable[str]) -> bool:
    from cryptography import x509

    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        listed = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    fresh = cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)
    return fresh and all(_san(name) in listed for name in names)


def self_signed_certificate(directory: str | Path, names: Iterable[str]) -> tuple[Path, Path]:
    """(certificate, key) PEM files in ``directory`` naming ``names``: reused when still good, else made."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    names = list(names)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if _reusable(cert_path, key_path, names):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nptface demo (self-signed)")])
    now = datetime.now(UTC)
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign"),
        False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, encipher_only=False, decipher_only=False, **usage), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``cert``/``key``; a clear error naming the files if they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error.filename or cert}: no such certificate or key file") from error
    except ssl.SSLError as error:
        raise ValueError(f"{cert} / {key}: not a PEM certificate and its matching private key: {error}") from error
    return context
