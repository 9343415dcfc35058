"""Certificates, chains and CRLs made in the test, with Python's
`cryptography` (Debian: python3-cryptography), for the verification tests
(test_verify.py): issuer names in the encodings real CAs use (IA5String
domain components, as Active Directory Certificate Services writes them),
names with NUL bytes, several CNs or over-long values, chains with
intermediates, chosen key usages, validity and revocations.

And the one question every refusal test asks: which TLS alert did the
server send (refusal_alert)?
"""

import datetime
import re
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import build_request, unique_name

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)


def name(*attrs):
    """An x509.Name from (oid, value) or (oid, value, asn1-type) tuples, one
    RDN each, in DER order. cryptography writes domainComponent as
    IA5String."""
    rdns = []
    for a in attrs:
        if len(a) == 3:
            rdns.append(x509.RelativeDistinguishedName(
                [x509.NameAttribute(a[0], a[1], _type=a[2])]))
        else:
            rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(a[0], a[1])]))
    return x509.Name(rdns)


def cn(value):
    return name((NameOID.COMMON_NAME, value))


class Cert:
    """A certificate with its key; `pem` also names the files once written."""

    def __init__(self, cert, key):
        self.cert = cert
        self.key = key

    @property
    def serial_hex(self):
        return format(self.cert.serial_number, "X")

    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self):
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def fingerprint(self):
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def write(self, directory, stem, chain=()):
        """Writes STEM.pem (this certificate, then `chain`) and STEM.key
        (mode 0600); returns (cert path, key path)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        crt, key = d / f"{stem}.pem", d / f"{stem}.key"
        crt.write_bytes(self.pem() + b"".join(c.pem() for c in chain))
        key.write_bytes(self.key_pem())
        key.chmod(0o600)
        return crt, key


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(subject, issuer=None, *, ca=False, path_len=None, not_before=None,
              not_after=None, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), digital_signature=True,
              san=None, serial=None, sig_hash=None):
    """A certificate for `subject` (an x509.Name) signed by `issuer` (a Cert;
    None: self-signed). A CA gets keyCertSign and cRLSign; a leaf gets
    digitalSignature unless told not to (then keyEncipherment), and the
    extended key usages `eku` (None: no extension). `san`: a list of
    x509.GeneralName. `sig_hash`: the issuer's signature hash (default
    SHA-256; hashes.SHA1() for a weak one)."""
    key = _key()
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subject
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_name)
         .public_key(key.public_key())
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(not_before or NOW - DAY)
         .not_valid_after(not_after or NOW + 30 * DAY)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False))
    if issuer:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), False)
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_len), True)
        b = b.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), True)
    else:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        b = b.add_extension(x509.KeyUsage(
            digital_signature=digital_signature, content_commitment=False,
            key_encipherment=not digital_signature, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
            decipher_only=False), True)
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), False)
    return Cert(b.sign(signer_key, sig_hash or hashes.SHA256()), key)


def make_ca(subject, issuer=None, **kw):
    return make_cert(subject, issuer, ca=True, **kw)


def make_crl(issuer, revoked=(), *, last_update=None, next_update=None):
    """A PEM CRL signed by `issuer` (a Cert) listing the Certs in `revoked`."""
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(issuer.cert.subject)
         .last_update(last_update or NOW - DAY)
         .next_update(next_update or NOW + 7 * DAY)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), False)
         .add_extension(x509.CRLNumber(1), False))
    for c in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(c.cert.serial_number)
            .revocation_date(NOW - DAY).build())
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------
# What the server answered


def alert_name(err):
    """'certificate_revoked' for an SSLError whose reason is
    SSLV3_ALERT_CERTIFICATE_REVOKED (OpenSSL's name for a received alert),
    or None when the error is not a received alert."""
    m = re.search(r"ALERT_([A-Z_]+)", getattr(err, "reason", None) or "")
    return m.group(1).lower() if m else None


def client_ctx(cert_path, key_path, server_ca, version=None, weak_chain=False):
    """`weak_chain`: let the client present a chain signed with SHA-1 (its
    OpenSSL refuses to load one at the default security level)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if weak_chain:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_verify_locations(str(server_ca))
    ctx.load_cert_chain(str(cert_path), str(key_path))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def refusal_alert(server, ctx, timeout=10.0, session=None):
    """Connects with `ctx`, PUTs a small upload and returns what the server
    answered: the name of the TLS alert it sent ('certificate_revoked'), or
    'http <status>' when it answered HTTP, or 'no alert: ...' for anything
    else (a reset, a timeout, a close without an alert). TLS 1.3 clients
    finish their handshake before the server judges their certificate, so
    the alert may come on the first read. `session`: a session to offer
    for resumption."""
    raw = socket.create_connection((server.host, server.port), timeout=timeout)
    tls = None
    try:
        try:
            tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        except ssl.SSLError as e:
            return alert_name(e) or f"no alert: {e!r}"
        except OSError as e:
            return f"no alert: {e!r}"
        try:
            tls.sendall(build_request("PUT", f"/ManageSoftRL/Inventories/{unique_name('vfy')}",
                                      body=b"should not be stored\n"))
            data = b""
            while b"\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    return f"no alert: closed after {data!r}"
                data += chunk
            return "http " + data.split(b" ", 2)[1].decode(errors="replace")
        except ssl.SSLError as e:
            return alert_name(e) or f"no alert: {e!r}"
        except OSError as e:
            return f"no alert: {e!r}"
    finally:
        if tls is not None:
            tls.close()
        raw.close()
