"""Where the running portal listens, as students are told: its address, both ports and its
certificate's fingerprint. The portal records this when it starts and removes it when it stops;
`class cards` reads it, so a card never names a port the portal is not on."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmlab.adapters.keys import write_private
from swarmlab.config import Config


@dataclass
class Endpoint:
    address: str  # what students type: [portal] address, or `portal --address`
    https_port: int
    ssh_port: int
    fingerprint: str  # SHA-256 of the certificate, AA:BB:...
    listen: str = ""
    pid: int = 0
    running: bool = True  # False: read from the config, no portal runs now

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.https_port}"


def _path(config: Config) -> Path:
    return config.state_dir / "portal" / "endpoint.json"


def record(config: Config, endpoint: Endpoint) -> None:
    write_private(_path(config), json.dumps(asdict(endpoint), indent=2) + "\n")


def forget(config: Config) -> None:
    """Removes the record, unless another portal wrote it since."""
    found = _read(config)
    if found and found.pid == os.getpid():
        _path(config).unlink(missing_ok=True)


def _read(config: Config) -> Endpoint | None:
    try:
        return Endpoint(**json.loads(_path(config).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        return b"swarmlab" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def current(config: Config) -> Endpoint:
    """The running portal's endpoint; else what the config says, marked not running."""
    found = _read(config)
    if found and _alive(found.pid):
        return found
    cert = config.state_dir / "portal" / "portal.crt"
    return Endpoint(config.student_address, config.portal_port, config.gateway_port,
                    fingerprint(cert) if cert.exists() else "", config.portal_listen, 0, False)


def fingerprint(cert: Path) -> str:
    """The SHA-256 fingerprint browsers show for the certificate (of its first PEM block)."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def self_signed_certificate(config: Config, address: str) -> tuple[Path, Path]:
    """A certificate for the portal when the instructor gives none: made once per address,
    kept 0600. Its fingerprint goes on the students' cards."""
    directory = config.state_dir / "portal"
    cert, key = directory / "portal.crt", directory / "portal.key"
    if cert.exists() and key.exists() and _names(cert, address):
        return cert, key
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"swarmlab portal {address}")])
    try:
        alt = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        alt = x509.DNSName(address)
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=365))
                   .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
                   .sign(private, hashes.SHA256()))
    write_private(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode())
    write_private(cert, certificate.public_bytes(serialization.Encoding.PEM).decode())
    return cert, key


def _names(cert: Path, address: str) -> bool:
    """Whether the certificate was made for this address (a new address needs a new one, or
    every browser would warn)."""
    from cryptography import x509
    try:
        found = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return False
    return f"swarmlab portal {address}" in found.subject.rfc4514_string()
