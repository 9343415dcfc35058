"""Hand-made DER for certificates and CRLs that no well-behaved library would
write: any string type in a name, several attributes in one RDN, a NUL in a
CN, a critical flag anywhere, a signature algorithm the issuer's key family
allows but nobody should use. The `cryptography` package (Debian 12's 38.x
is enough) provides only keys and raw signatures.
"""

import datetime
import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

# ---- primitives -------------------------------------------------------------


def _length(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, content):
    return bytes([tag]) + _length(len(content)) + content


def seq(*items):
    return tlv(0x30, b"".join(items))


def set_of(*items):
    return tlv(0x31, b"".join(sorted(items)))  # DER sorts SET OF


def integer(v):
    if v < 0:
        raise ValueError("negative INTEGER")
    return tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def oid(dotted):
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


NULL = b"\x05\x00"
TRUE = b"\x01\x01\xff"


def octets(b):
    return tlv(0x04, b)


def bits(b):
    return tlv(0x03, b"\x00" + b)


def explicit(n, content):
    return tlv(0xA0 | n, content)


def der_time(t):
    """UTCTime before 2050, GeneralizedTime from then on (RFC 5280)."""
    t = t.astimezone(datetime.timezone.utc)
    if t.year < 2050:
        return tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())


# ---- names ------------------------------------------------------------------

CN, O, OU, C, DC = "2.5.4.3", "2.5.4.10", "2.5.4.11", "2.5.4.6", "0.9.2342.19200300.100.1.25"
PRINTABLE, UTF8, IA5, BMP = 0x13, 0x0C, 0x16, 0x1E


def string(tag, text):
    """A directory string of `tag`; `text` may be bytes (written as is)."""
    if isinstance(text, bytes):
        return tlv(tag, text)
    return tlv(tag, text.encode("utf-16-be" if tag == BMP else "utf-8"))


def name(rdns):
    """Name from [[(attribute OID, string tag, value), ...], ...]: one inner
    list per RDN, so an RDN may be multi-valued."""
    return seq(*(set_of(*(seq(oid(a), string(t, v)) for a, t, v in rdn)) for rdn in rdns))


# ---- extensions ---------------------------------------------------------------

KU_BITS = {"digitalSignature": 0, "nonRepudiation": 1, "keyEncipherment": 2,
           "dataEncipherment": 3, "keyAgreement": 4, "keyCertSign": 5, "cRLSign": 6}
EKU_OIDS = {"serverAuth": "1.3.6.1.5.5.7.3.1", "clientAuth": "1.3.6.1.5.5.7.3.2",
            "codeSigning": "1.3.6.1.5.5.7.3.3", "anyExtendedKeyUsage": "2.5.29.37.0"}


def extension(ext_oid, value, critical=False):
    return seq(oid(ext_oid), *([TRUE] if critical else []), octets(value))


def basic_constraints(ca, path_len=None, critical=True):
    body = (TRUE if ca else b"") + (integer(path_len) if path_len is not None else b"")
    return extension("2.5.29.19", seq(body) if body else seq(), critical)


def key_usage(names, critical=True):
    v = 0
    for n in names:
        v |= 1 << KU_BITS[n]
    if v == 0:
        return extension("2.5.29.15", tlv(0x03, b"\x00"), critical)
    high = v.bit_length() - 1
    nbytes = high // 8 + 1
    unused = 7 - high % 8
    b = bytearray(nbytes)
    for i in range(high + 1):
        if v >> i & 1:
            b[i // 8] |= 0x80 >> (i % 8)
    return extension("2.5.29.15", tlv(0x03, bytes([unused]) + bytes(b)), critical)


def ext_key_usage(names, critical=False):
    return extension("2.5.29.37", seq(*(oid(EKU_OIDS[n]) for n in names)), critical)


def subject_key_id(keyid):
    return extension("2.5.29.14", octets(keyid))


def authority_key_id(keyid):
    return extension("2.5.29.35", seq(tlv(0x80, keyid)))


def san_dns(*names):
    return extension("2.5.29.17", seq(*(tlv(0x82, n.encode()) for n in names)))


# ---- keys and signatures --------------------------------------------------------

SHA256_ALG = seq(oid("2.16.840.1.101.3.4.2.1"), NULL)
SIG_ALGS = {
    # name: (AlgorithmIdentifier DER, key family, how to sign)
    "ecdsa-sha256": (seq(oid("1.2.840.10045.4.3.2")), "ec", hashes.SHA256),
    "ecdsa-sha384": (seq(oid("1.2.840.10045.4.3.3")), "ec", hashes.SHA384),
    "ecdsa-sha1": (seq(oid("1.2.840.10045.4.1")), "ec", hashes.SHA1),
    "rsa-sha256": (seq(oid("1.2.840.113549.1.1.11"), NULL), "rsa", hashes.SHA256),
    "rsa-sha1": (seq(oid("1.2.840.113549.1.1.5"), NULL), "rsa", hashes.SHA1),
    "rsa-pss-sha256": (seq(oid("1.2.840.113549.1.1.10"), seq(
        explicit(0, SHA256_ALG),
        explicit(1, seq(oid("1.2.840.113549.1.1.8"), SHA256_ALG)),
        explicit(2, integer(32)))), "rsa", hashes.SHA256),
    "ed25519": (seq(oid("1.3.101.112")), "ed25519", None),
}
WEAK_SIG_ALGS = {"ecdsa-sha1", "rsa-sha1"}


def key_family(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec"
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    return "ed25519"


def sig_algs_for(key):
    fam = key_family(key)
    return [n for n, (_, f, _) in SIG_ALGS.items() if f == fam]


def default_sig_alg(key):
    return {"ec": "ecdsa-sha256", "rsa": "rsa-sha256", "ed25519": "ed25519"}[key_family(key)]


def sign(key, alg, data):
    _, fam, h = SIG_ALGS[alg]
    assert fam == key_family(key), (alg, key)
    if fam == "ec":
        return key.sign(data, ec.ECDSA(h()))
    if fam == "ed25519":
        return key.sign(data)
    if alg.startswith("rsa-pss"):
        return key.sign(data, padding.PSS(padding.MGF1(h()), 32), h())
    return key.sign(data, padding.PKCS1v15(), h())


def new_key(kind):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa2048":
        return rsa.generate_private_key(65537, 2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key):
    return hashlib.sha1(spki(key)).digest()


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# ---- certificates and CRLs ----------------------------------------------------------


def certificate(*, serial, subject, issuer, key, issuer_key, not_before, not_after,
                extensions, sig_alg):
    """DER of an X.509 v3 certificate; subject and issuer are Name DER."""
    alg = SIG_ALGS[sig_alg][0]
    tbs = seq(explicit(0, integer(2)), integer(serial), alg, issuer,
              seq(der_time(not_before), der_time(not_after)), subject, spki(key),
              *([explicit(3, seq(*extensions))] if extensions else []))
    return seq(tbs, alg, bits(sign(issuer_key, sig_alg, tbs)))


def crl(*, issuer, issuer_key, this_update, next_update, revoked, number, sig_alg,
        signing_key=None):
    """DER of a v2 CRL listing the serials in `revoked`, signed with
    `signing_key` (a wrong key makes a wrongly signed CRL) or the issuer's."""
    alg = SIG_ALGS[sig_alg][0]
    entries = [seq(integer(s), der_time(this_update)) for s in revoked]
    tbs = seq(integer(1), alg, issuer, der_time(this_update), der_time(next_update),
              *([seq(*entries)] if entries else []),
              explicit(0, seq(authority_key_id(key_id(issuer_key)),
                              extension("2.5.29.20", integer(number)))))
    return seq(tbs, alg, bits(sign(signing_key or issuer_key, sig_alg, tbs)))


def pem(der, label="CERTIFICATE"):
    import base64
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"
