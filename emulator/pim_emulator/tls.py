"""Key material generated on first start into the data directory and reused afterwards.

Files (all mode 0600, like everything in the data directory: files.py):

* ``ca.pem`` / ``ca-key.pem``: the sandbox's own certificate authority (point clients at
  ``ca.pem``; it is ``ca_bundle`` in connection.json).
* ``server.pem`` / ``server-key.pem``: the HTTPS certificate for ``127.0.0.1``, ``::1`` and
  ``localhost``, signed by the CA; re-issued when it is within 30 days of expiry.
* ``signing-key.pem``: the RSA key that signs access tokens (published in the JWKS).
* ``client-cert.pem``: private key AND certificate of the certificate app (the layout
  azure-identity expects for ``AZURE_CLIENT_CERTIFICATE_PATH``); its SHA-1 thumbprint is
  registered on the seed app marked ``certificateApp``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pim_emulator.files import write_private


def _now():
    return dt.datetime.now(dt.timezone.utc)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    # Certificates too are 0600: everything in the data directory is (files.py).
    write_private(path, data)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def self_signed_pem(common_name: str, days: int = 30, key=None, cert_key=None) -> bytes:
    """A PEM with a new (or the given) RSA key and a self-signed certificate, of ``cert_key`` when given.

    The sandbox's certificate app uses one; tests use it for certificates the sandbox never saw.
    """
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert_key = cert_key or key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .sign(cert_key, hashes.SHA256())
    )
    return _key_pem(key) + _cert_pem(cert)


def _load_key(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


class KeyMaterial:
    def __init__(self, data_dir):
        self.dir = Path(data_dir)
        self.ca_path = self.dir / "ca.pem"
        self.ca_key_path = self.dir / "ca-key.pem"
        self.server_cert_path = self.dir / "server.pem"
        self.server_key_path = self.dir / "server-key.pem"
        self.signing_key_path = self.dir / "signing-key.pem"
        self.client_cert_path = self.dir / "client-cert.pem"
        self._ensure_ca()
        self._ensure_server()
        self._ensure_signing_key()
        self._ensure_client_cert()

    # -- CA ------------------------------------------------------------------
    def _ensure_ca(self) -> None:
        if self.ca_path.exists() and self.ca_key_path.exists():
            self.ca_key = _load_key(self.ca_key_path)
            self.ca_cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
            if self.ca_cert.not_valid_after_utc > _now() + dt.timedelta(days=30):
                return
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PIM Sandbox Local CA")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(ski, critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        _write(self.ca_key_path, _key_pem(self.ca_key), private=True)
        _write(self.ca_path, _cert_pem(self.ca_cert))
        for stale in (self.server_cert_path, self.server_key_path):  # a new CA invalidates the old leaf
            if stale.exists():
                stale.unlink()

    # -- server certificate ---------------------------------------------------
    def _ensure_server(self) -> None:
        if self.server_cert_path.exists() and self.server_key_path.exists():
            cert = x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())
            if cert.not_valid_after_utc > _now() + dt.timedelta(days=30) and cert.issuer == self.ca_cert.subject:
                return
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=365))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                        x509.DNSName("localhost"),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        _write(self.server_key_path, _key_pem(key), private=True)
        _write(self.server_cert_path, _cert_pem(cert))

    # -- token signing key ----------------------------------------------------
    def _ensure_signing_key(self) -> None:
        if self.signing_key_path.exists():
            self.signing_key = _load_key(self.signing_key_path)
            return
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(self.signing_key_path, _key_pem(self.signing_key), private=True)

    # -- certificate app's client certificate ---------------------------------
    def _ensure_client_cert(self) -> None:
        if self.client_cert_path.exists():
            data = self.client_cert_path.read_bytes()
            self.client_key = serialization.load_pem_private_key(data, password=None)
            self.client_cert = x509.load_pem_x509_certificate(data)
            return
        data = self_signed_pem("PIM Sandbox certificate app", days=3650)
        _write(self.client_cert_path, data, private=True)
        self.client_key = serialization.load_pem_private_key(data, password=None)
        self.client_cert = x509.load_pem_x509_certificate(data)

    @property
    def client_thumbprint_sha1(self) -> str:
        return self.client_cert.fingerprint(hashes.SHA1()).hex()

    def server_context(self):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.server_cert_path), str(self.server_key_path))
        return ctx
