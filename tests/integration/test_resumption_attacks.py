"""Session resumption against an attacker (issue 12, items 1 and 3, and the
ticket keys of `reload`).

- PSK identity confusion: a TLS 1.3 ClientHello that resumes the client's
  own ticket and also lists another device's ticket (copied off the wire)
  as a second PSK identity. The upload must be stored under the client's own
  device, never the other's. A raw TLS 1.3 PSK-DHE client below builds that
  ClientHello; openssl s_client makes the tickets (-sess_out).
- Dates: a ticket carries its certificate's notAfter and the time of the
  full handshake; a resumption past notAfter, past max_session_age or with a
  ticket older than ticket_lifetime is a full handshake, and fresh tickets
  from resumptions keep the original dates.
- Ticket keys: `beaconctl reload all` (also SIGHUP and the file watch) keeps
  the keys of live tickets; with a ticket_key_file, `reload tickets` keeps
  the keys that are still in the file.
"""

import datetime
import hashlib
import hmac
import os
import signal
import socket
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import s_client, unique_name
from trustkit import beaconctl_sock, new_ticket_key_line

# --------------------------------------------------------------------------
# s_client sessions


def put_request(name, body=b"resumption test\n"):
    return (f"PUT /ManageSoftRL/Inventories/{name} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def session_run(server, name, *args, version="1.3", upload=None):
    """One s_client connection as `name`; args carry -sess_out / -sess_in.
    Returns (handshake: "New" or "Reused" or None, the whole output)."""
    vflag = "-tls1_3" if version == "1.3" else "-tls1_2"
    kw = {} if upload is None else {"input": put_request(upload)}
    out, _ = s_client(server, vflag, *args, name=name, **kw)
    for line in out.splitlines():
        if line.startswith(("New, TLS", "Reused, TLS")):
            return line.split(",")[0], out
    return None, out


def new_session(server, name, path, version="1.3", ciphersuite=None):
    args = ["-sess_out", str(path)]
    if ciphersuite:
        args += ["-ciphersuites", ciphersuite]
    kind, out = session_run(server, name, *args, version=version)
    assert kind == "New" and "HTTP/1.1 200" in out, out
    assert path.exists() and path.stat().st_size > 0, f"no session saved:\n{out}"
    return path


# --------------------------------------------------------------------------
# An OpenSSL SSL_SESSION (PEM) read with a small DER walker: the TLS 1.3
# resumption PSK, the ticket, its age_add, the time it was received.


def der_read(buf, i):
    tag = buf[i]
    n = buf[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(buf[i:i + k], "big")
        i += k
    return tag, buf[i:i + n], i + n


def read_session(path):
    lines = path.read_text().splitlines()
    import base64
    der = base64.b64decode("".join(l for l in lines if not l.startswith("-----")))
    tag, seq, _ = der_read(der, 0)
    assert tag == 0x30
    items, i = [], 0
    while i < len(seq):
        tag, val, i = der_read(seq, i)
        items.append((tag, val))
    sess = {"suite": items[2][1], "psk": items[4][1]}
    for tag, val in items:
        if tag == 0xA1:
            sess["time"] = int.from_bytes(der_read(val, 0)[1], "big")
        elif tag == 0xAA:
            sess["ticket"] = der_read(val, 0)[1]
        elif tag == 0xAE:
            sess["age_add"] = int.from_bytes(der_read(val, 0)[1], "big")
    assert {"ticket", "age_add", "time"} <= sess.keys(), f"{path}: not a TLS 1.3 ticket session"
    return sess


# --------------------------------------------------------------------------
# A TLS 1.3 PSK-DHE client (RFC 8446) that offers several PSK identities,
# of which it can prove only one: `real` (index into the offered list).

HASHES = {b"\x13\x01": (hashlib.sha256, 16), b"\x13\x02": (hashlib.sha384, 32)}
ALERTS = {42: "bad_certificate", 45: "certificate_expired", 46: "certificate_unknown",
          47: "illegal_parameter", 48: "unknown_ca", 51: "decrypt_error", 40: "handshake_failure"}


def u16(n):
    return struct.pack(">H", n)


def vector(data, width):
    return len(data).to_bytes(width, "big") + data


def extension(kind, body):
    return u16(kind) + vector(body, 2)


def hkdf_extract(h, salt, ikm):
    return hmac.new(salt or bytes(h().digest_size), ikm, h).digest()


def hkdf_expand_label(h, secret, label, context, length):
    full = b"tls13 " + label
    info = u16(length) + vector(full, 1) + vector(context, 1)
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), h).digest()
        out += block
        counter += 1
    return out[:length]


def derive_secret(h, secret, label, transcript):
    return hkdf_expand_label(h, secret, label, h(transcript).digest(), h().digest_size)


class RecordKeys:
    def __init__(self, h, key_len, secret):
        self.aead = AESGCM(hkdf_expand_label(h, secret, b"key", b"", key_len))
        self.iv = hkdf_expand_label(h, secret, b"iv", b"", 12)
        self.seq = 0

    def _nonce(self):
        n = bytes(a ^ b for a, b in zip(self.iv, self.seq.to_bytes(12, "big")))
        self.seq += 1
        return n

    def seal(self, content_type, data):
        header = b"\x17\x03\x03" + u16(len(data) + 1 + 16)
        return header + self.aead.encrypt(self._nonce(), data + bytes([content_type]), header)

    def open(self, header, body):
        inner = self.aead.decrypt(self._nonce(), body, header).rstrip(b"\x00")
        return inner[-1], inner[:-1]


class Peer:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)

    def record(self):
        header = self._exactly(5)
        return header, self._exactly(struct.unpack(">H", header[3:5])[0])

    def _exactly(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("server closed the connection")
            buf += chunk
        return buf

    def close(self):
        self.sock.close()


HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def client_hello(offers, real, now, key, share=True, before=b"", cookie=None):
    """ClientHello bytes (handshake message) offering every session of
    `offers` as a PSK identity; only offers[real] gets a true binder.
    Each offer: (session, claimed age in ms or None for the true one).
    Without `share`, no key share (the server answers HelloRetryRequest);
    `before` is the transcript before this ClientHello (after one)."""
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    identities = b""
    for sess, age_ms in offers:
        if age_ms is None:  # the true age, a little short (the time is whole seconds)
            age_ms = max(0, int((now - sess["time"]) * 1000) - 2000)
        identities += vector(sess["ticket"], 2) + struct.pack(">I", (age_ms + sess["age_add"]) & 0xFFFFFFFF)
    binder_sizes = [HASHES[s["suite"]][0]().digest_size for s, _ in offers]
    binders_len = 2 + sum(1 + n for n in binder_sizes)
    shares = vector(b"\x00\x1d" + vector(public, 2), 2) if share else vector(b"", 2)
    extensions = (extension(43, vector(b"\x03\x04", 1)) + extension(10, vector(b"\x00\x1d", 2)) +
                  extension(13, vector(b"\x04\x03\x08\x04", 2)) + extension(51, shares) +
                  extension(45, vector(b"\x01", 1)))
    if cookie is not None:
        extensions += extension(44, cookie)
    psk_head = u16(41) + u16(2 + len(identities) + binders_len) + vector(identities, 2)
    body = (b"\x03\x03" + os.urandom(32) + vector(os.urandom(32), 1) +
            vector(b"\x13\x01\x13\x02", 2) + b"\x01\x00" +
            u16(len(extensions) + len(psk_head) + binders_len) + extensions + psk_head)
    partial = b"\x01" + (len(body) + binders_len).to_bytes(3, "big") + body
    sess = offers[real][0]
    h = HASHES[sess["suite"]][0]
    early = hkdf_extract(h, None, sess["psk"])
    binder_key = derive_secret(h, early, b"res binder", b"")
    finished_key = hkdf_expand_label(h, binder_key, b"finished", b"", h().digest_size)
    binders = b""
    for i, size in enumerate(binder_sizes):
        binders += vector(hmac.new(finished_key, h(before + partial).digest(), h).digest()
                          if i == real else os.urandom(size), 1)
    return partial + vector(binders, 2), early


def parse_server_hello(msg):
    p = 4 + 2 + 32
    p += 1 + msg[p]
    suite = msg[p:p + 2]
    p += 3
    end = p + 2 + struct.unpack(">H", msg[p:p + 2])[0]
    p += 2
    share = selected = None
    while p < end:
        kind, n = struct.unpack(">HH", msg[p:p + 4])
        value = msg[p + 4:p + 4 + n]
        p += 4 + n
        if kind == 51:
            share = value[4:]
        elif kind == 41:
            selected = struct.unpack(">H", value)[0]
    return suite, share, selected


def server_hello(peer):
    """The next ServerHello (CCS records skipped), or ("alert", description)."""
    while True:
        header, body = peer.record()
        if header[0] == 20:
            continue
        if header[0] == 21:
            return "alert", ALERTS.get(body[1], body[1])
        assert header[0] == 22 and body[0] == 2, \
            f"expected a ServerHello, got {header.hex()} {body[:8].hex()}"
        return "hello", body


def retry_cookie(hrr):
    """The cookie extension body of a HelloRetryRequest, or None."""
    p = 4 + 2 + 32
    p += 1 + hrr[p] + 3
    end = p + 2 + struct.unpack(">H", hrr[p:p + 2])[0]
    p += 2
    while p < end:
        kind, n = struct.unpack(">HH", hrr[p:p + 4])
        if kind == 44:
            return hrr[p + 4:p + 4 + n]
        p += 4 + n
    return None


def psk_upload(server, offers, real, name, retry=False):
    """Resumes offers[real] while offering all of `offers`, then PUTs
    `name`. With `retry`, the first ClientHello has no key share, so the
    server asks again (HelloRetryRequest) and the tickets are offered twice.
    Returns ("alert", description), ("no-psk", None) when the server chose
    no PSK, or ("response", (selected identity, the HTTP status line))."""
    sess = offers[real][0]
    h, key_len = HASHES[sess["suite"]]
    key = X25519PrivateKey.generate()
    peer = Peer(server.host, server.port)
    try:
        before = b""
        cookie = None
        if retry:
            first, _ = client_hello(offers, real, time.time(), key, share=False)
            peer.sock.sendall(b"\x16\x03\x01" + vector(first, 2))
            kind, hrr = server_hello(peer)
            if kind == "alert":
                return kind, hrr
            assert hrr[6:38] == HRR_RANDOM, "expected a HelloRetryRequest"
            before = b"\xfe\x00\x00" + bytes([h().digest_size]) + h(first).digest() + hrr
            cookie = retry_cookie(hrr)
        hello, early = client_hello(offers, real, time.time(), key, before=before, cookie=cookie)
        peer.sock.sendall(b"\x16\x03\x03" + vector(hello, 2))
        kind, sh = server_hello(peer)
        if kind == "alert":
            return kind, sh
        suite, share, selected = parse_server_hello(sh)
        if selected is None:
            return "no-psk", None
        assert suite == sess["suite"], f"resumed under suite {suite.hex()}, the ticket's is {sess['suite'].hex()}"
        shared = key.exchange(X25519PublicKey.from_public_bytes(share))
        transcript = before + hello + sh
        hs = hkdf_extract(h, derive_secret(h, early, b"derived", b""), shared)
        c_hs = derive_secret(h, hs, b"c hs traffic", transcript)
        s_hs = derive_secret(h, hs, b"s hs traffic", transcript)
        server_keys = RecordKeys(h, key_len, s_hs)
        pending, finished = b"", False
        while not finished:
            header, body = peer.record()
            if header[0] == 20:
                continue
            if header[0] == 21:
                return "alert", ALERTS.get(body[1], body[1])
            _, plain = server_keys.open(header, body)
            pending += plain
            while len(pending) >= 4 and len(pending) >= 4 + int.from_bytes(pending[1:4], "big"):
                n = 4 + int.from_bytes(pending[1:4], "big")
                msg, pending = pending[:n], pending[n:]
                if msg[0] == 20:
                    s_fin = hkdf_expand_label(h, s_hs, b"finished", b"", h().digest_size)
                    assert msg[4:] == hmac.new(s_fin, h(transcript).digest(), h).digest(), \
                        "server Finished does not verify"
                    finished = True
                transcript += msg
        master = hkdf_extract(h, derive_secret(h, hs, b"derived", b""), bytes(h().digest_size))
        c_ap = derive_secret(h, master, b"c ap traffic", transcript)
        s_ap = derive_secret(h, master, b"s ap traffic", transcript)
        c_fin = hkdf_expand_label(h, c_hs, b"finished", b"", h().digest_size)
        fin = b"\x14" + h().digest_size.to_bytes(3, "big") + \
            hmac.new(c_fin, h(transcript).digest(), h).digest()
        peer.sock.sendall(b"\x14\x03\x03\x00\x01\x01" + RecordKeys(h, key_len, c_hs).seal(22, fin))
        out, inp = RecordKeys(h, key_len, c_ap), RecordKeys(h, key_len, s_ap)
        peer.sock.sendall(out.seal(23, put_request(name, b"uploaded over a resumed session\n")))
        answer = b""
        while b"\r\n" not in answer:
            header, body = peer.record()
            kind, plain = inp.open(header, body)
            if kind == 21:
                return "alert", ALERTS.get(plain[1], plain[1])
            if kind == 23:
                answer += plain
        return "response", (selected, answer.split(b"\r\n")[0].decode())
    finally:
        peer.close()


def stored_under(server, name):
    return sorted(r["device"] for r in server.uploads() if r.get("name") == name)


# --------------------------------------------------------------------------
# PSK identity confusion

OWN, VICTIM = "agent1", "agent2"


@pytest.fixture
def tickets(server, tmp_path):
    """The attacker's own ticket (AES-256-GCM) and the victim's (AES-128-GCM),
    made by real handshakes."""
    own = read_session(new_session(server, OWN, tmp_path / "own.pem",
                                   ciphersuite="TLS_AES_256_GCM_SHA384"))
    victim = read_session(new_session(server, VICTIM, tmp_path / "victim.pem",
                                      ciphersuite="TLS_AES_128_GCM_SHA256"))
    return own, victim


# The victim's ticket is offered with an age a minute too old: wolfSSL
# decrypts it (our callback sees its identity) and then skips it.
WRONG_AGE_MS = 60_000


@pytest.mark.parametrize("victim_first", [False, True], ids=["own-first", "victim-first"])
def test_second_psk_identity_leaves_no_trace(server, tickets, victim_first):
    own, victim = tickets
    victim_age = int((time.time() - victim["time"]) * 1000) + WRONG_AGE_MS
    offers = [(own, None), (victim, victim_age)]
    if victim_first:
        offers.reverse()
    name = unique_name("psk-confusion")
    kind, detail = psk_upload(server, offers, offers.index((own, None)), name)
    devices = stored_under(server, name)
    assert f"{VICTIM}.example" not in devices, (
        f"an upload over the attacker's own resumed ticket was stored as the victim: {devices}")
    if victim_first:
        # Tickets of two devices in one ClientHello: the later device's is
        # not opened, the victim's does not pass its age: no resumption, a
        # full handshake (which this client cannot do) follows.
        assert (kind, detail) == ("no-psk", None), (kind, detail)
        assert devices == [], devices
        return
    # The attacker's own ticket is resumed, as the attacker's device.
    assert kind == "response", (kind, detail, server.stderr()[-2000:])
    selected, status = detail
    assert selected == 0, f"server resumed identity {selected}"
    assert status.startswith("HTTP/1.1 201"), status
    assert devices == [f"{OWN}.example"], devices


def test_second_psk_identity_after_hello_retry(server, tickets):
    """The tickets offered again after a HelloRetryRequest: the same rule."""
    own, victim = tickets
    victim_age = int((time.time() - victim["time"]) * 1000) + WRONG_AGE_MS
    name = unique_name("psk-confusion-hrr")
    kind, detail = psk_upload(server, [(own, None), (victim, victim_age)], 0, name, retry=True)
    devices = stored_under(server, name)
    assert f"{VICTIM}.example" not in devices, devices
    assert kind == "response" and detail[0] == 0 and detail[1].startswith("HTTP/1.1 201"), \
        (kind, detail, server.stderr()[-2000:])
    assert devices == [f"{OWN}.example"], devices


def test_resumed_ticket_decides_between_two_certificates(start_server, pki_copy, tmp_path):
    """One device with two certificates (a renewal): both tickets pass every
    check and are of the same device, so only telling which one wolfSSL
    resumed gives the right certificate. The upload must record the
    fingerprint of the resumed ticket's certificate, not of the other one
    (which is decrypted after it)."""
    srv = start_server()
    srv.pki = pki_copy
    old_cert, _ = agent_cert(pki_copy, pki_copy, "agent1.example", 3600)
    new_cert, _ = agent_cert(pki_copy, pki_copy, "agent1.example", 7200)
    resumed = read_session(new_session(srv, new_cert, tmp_path / "new.pem",
                                       ciphersuite="TLS_AES_256_GCM_SHA384"))
    other = read_session(new_session(srv, old_cert, tmp_path / "old.pem",
                                     ciphersuite="TLS_AES_128_GCM_SHA256"))
    other_age = int((time.time() - other["time"]) * 1000) + WRONG_AGE_MS
    name = unique_name("two-certs")
    kind, detail = psk_upload(srv, [(resumed, None), (other, other_age)], 0, name)
    assert kind == "response" and detail == (0, "HTTP/1.1 201 Created"), (kind, detail)
    rows = [r for r in srv.uploads("agent1.example") if r.get("name") == name]
    assert len(rows) == 1, rows
    assert rows[0]["cert_sha256"] == fingerprint(pki_copy / f"{new_cert}.pem"), (
        "the upload names the certificate of a ticket that was offered but not resumed")


def test_victim_ticket_alone_does_not_resume(server, tickets):
    """Without the victim's resumption secret, its ticket alone gets no
    session: the wrong binder is refused."""
    _, victim = tickets
    # A correct age and a binder from a guessed secret: wolfSSL picks the
    # ticket by age and suite, then checks the binder and ends the handshake
    # (with illegal_parameter, where RFC 8446 would say decrypt_error).
    forged = dict(victim, psk=os.urandom(len(victim["psk"])))
    kind, detail = psk_upload(server, [(forged, None)], 0, unique_name("psk-only-victim"))
    assert (kind, detail) == ("alert", "illegal_parameter"), (kind, detail)


@pytest.mark.parametrize("cut", [1, 64, 200])
def test_ticket_cut_short_is_refused_before_it_is_read(server, tickets, cut):
    """A ticket whose own length field claims more bytes than the PSK
    identity holds (a real ticket, cut short): wolfSSL 5.7.2 let the
    ticket callback read its MAC past the identity's heap buffer and
    decrypt in place past it (scripts/wolfssl-patches/ticket-length.patch).
    The ticket is refused (no PSK: a full handshake would follow) and the
    server carries on; the sanitizer build catches the overflow itself."""
    own, _ = tickets
    short = dict(own, ticket=own["ticket"][:-cut])
    kind, detail = psk_upload(server, [(short, None)], 0, unique_name("psk-cut-short"))
    assert (kind, detail) == ("no-psk", None), (kind, detail)
    server.assert_alive()
    kind, detail = psk_upload(server, [(own, None)], 0, unique_name("psk-after-cut"))
    assert kind == "response", (kind, detail)


# --------------------------------------------------------------------------
# Dates: notAfter, max_session_age, ticket_lifetime


def agent_cert(pki, out_dir, cn, lifetime_s):
    """A new agent certificate (agents-ca, clientAuth, digitalSignature) for
    `cn` whose notAfter is `lifetime_s` from now, written as NAME.pem and
    NAME.key into out_dir. Returns (NAME, notAfter as a Unix time)."""
    ca_key = serialization.load_pem_private_key((pki / "agents-ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "agents-ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    not_after = now + datetime.timedelta(seconds=lifetime_s)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(not_after)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    name = f"made-{os.getpid()}-{time.monotonic_ns()}"
    (out_dir / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out_dir / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return name, not_after.timestamp()


def fingerprint(pem_path):
    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def wait_until_time(t):
    while time.time() < t:
        time.sleep(min(0.2, max(0.0, t - time.time())))


@pytest.fixture
def pki_copy(pki, tmp_path):
    """A PKI directory the test may add client certificates to."""
    d = tmp_path / "pki"
    d.mkdir()
    for f in pki.iterdir():
        if f.is_file():
            (d / f.name).write_bytes(f.read_bytes())
    return d


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_expired_certificate_does_not_resume(start_server, pki_copy, tmp_path, version):
    srv = start_server()
    srv.pki = pki_copy  # s_client's -cert/-key come from here
    name, not_after = agent_cert(pki_copy, pki_copy, "shortlived.example", 8)
    first = new_session(srv, name, tmp_path / "s1.pem", version=version)
    # A resumption before notAfter works, and (TLS 1.3) brings a fresh
    # ticket, which must carry the same notAfter on.
    kind, out = session_run(srv, name, "-sess_in", str(first), "-sess_out",
                            str(tmp_path / "s2.pem"), version=version,
                            upload=unique_name("before-expiry"))
    assert time.time() < not_after, "the test machine was too slow for an 8 s certificate"
    assert kind == "Reused" and "HTTP/1.1 201" in out, out
    latest = tmp_path / "s2.pem" if (tmp_path / "s2.pem").exists() else first
    wait_until_time(not_after + 2)
    upload = unique_name("after-expiry")
    kind, out = session_run(srv, name, "-sess_in", str(latest), version=version, upload=upload)
    assert kind != "Reused", f"a ticket resumed past its certificate's notAfter:\n{out}"
    # The full handshake that follows meets the expired certificate.
    assert "alert certificate expired" in out, out
    assert "HTTP/1.1 201" not in out and stored_under(srv, upload) == [], out


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_max_session_age_bounds_a_chain_of_tickets(start_server, tmp_path, version):
    srv = start_server({"tls": {"max_session_age": "3s"}})
    first = new_session(srv, "agent1", tmp_path / "s1.pem", version=version)
    full_done = time.time()
    latest = first
    if version == "1.3":
        # Each TLS 1.3 resumption brings a fresh ticket: chain two.
        for i in (2, 3):
            nxt = tmp_path / f"s{i}.pem"
            kind, out = session_run(srv, "agent1", "-sess_in", str(latest), "-sess_out", str(nxt),
                                    version=version)
            assert kind == "Reused", out
            assert read_session(nxt)["ticket"] != read_session(latest)["ticket"], \
                "the resumption brought no fresh ticket"
            latest = nxt
    else:
        kind, out = session_run(srv, "agent1", "-sess_in", str(latest), version=version)
        assert kind == "Reused", out
    # Whole seconds on the server: 3 s have surely passed 5 s after the
    # full handshake ended. The newest ticket is a few seconds old, well
    # inside ticket_lifetime (1 h): only max_session_age can refuse it.
    wait_until_time(full_done + 5)
    upload = unique_name("after-session-age")
    kind, out = session_run(srv, "agent1", "-sess_in", str(latest), version=version, upload=upload)
    assert kind == "New", f"resumed past max_session_age:\n{out}"
    assert "HTTP/1.1 201" in out, out  # the certificate itself is fine
    assert stored_under(srv, upload) == ["agent1.example"]


def test_lowered_max_session_age_applies_on_reload(start_server, tmp_path):
    srv = start_server()
    first = new_session(srv, "agent1", tmp_path / "s1.pem")
    full_done = time.time()
    assert "[tls]\n" in srv.config_text
    srv.conf.write_text(srv.config_text.replace("[tls]\n", "[tls]\nmax_session_age = 1s\n", 1))
    beaconctl_ok(srv, "reload", "all")
    wait_until_time(full_done + 3)
    kind, out = session_run(srv, "agent1", "-sess_in", str(first))
    assert kind == "New", f"max_session_age lowered by a reload did not apply:\n{out}"


def test_ticket_lifetime_is_enforced_tls13(start_server, tmp_path):
    """openssl s_client stops offering a ticket past the lifetime hint
    itself: the raw client offers it anyway, as an attacker would."""
    srv = start_server({"tls": {"ticket_lifetime": "2s"}})
    sess = read_session(new_session(srv, "agent1", tmp_path / "s1.pem"))
    issued = time.time()
    kind, detail = psk_upload(srv, [(sess, None)], 0, unique_name("lifetime-fresh"))
    assert kind == "response" and detail[1].startswith("HTTP/1.1 201"), (kind, detail)
    wait_until_time(issued + 4)
    kind, detail = psk_upload(srv, [(sess, None)], 0, unique_name("lifetime-old"))
    assert (kind, detail) == ("no-psk", None), \
        f"a ticket resumed past ticket_lifetime = 2s: {kind} {detail}"


def test_ticket_lifetime_is_enforced_tls12(start_server, tmp_path):
    srv = start_server({"tls": {"ticket_lifetime": "2s"}})
    first = new_session(srv, "agent1", tmp_path / "s1.pem", version="1.2")
    issued = time.time()
    kind, out = session_run(srv, "agent1", "-sess_in", str(first), version="1.2")
    assert kind == "Reused", out
    wait_until_time(issued + 4)
    kind, out = session_run(srv, "agent1", "-sess_in", str(first), version="1.2")
    assert kind == "New", f"a ticket resumed past ticket_lifetime = 2s:\n{out}"


# --------------------------------------------------------------------------
# Ticket keys across reloads


def beaconctl_ok(srv, *args):
    p = beaconctl_sock(srv, *args, json_out=False)
    assert p.returncode == 0, f"beaconctl {args}: {p.returncode} {p.stdout} {p.stderr}"
    return p.stdout


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_reload_all_keeps_ticket_keys(start_server, tmp_path, version):
    srv = start_server()
    first = new_session(srv, "agent1", tmp_path / "s1.pem", version=version)
    # More reloads than the key table has slots: a reload that made a key
    # each time would have pushed this ticket's key out.
    for _ in range(5):
        beaconctl_ok(srv, "reload", "all")
    kind, out = session_run(srv, "agent1", "-sess_in", str(first), version=version)
    assert kind == "Reused", f"a ticket from before `reload all` no longer resumes:\n{out}"
    out = beaconctl_ok(srv, "reload", "tickets")
    assert "kept" in out, out
    kind, out = session_run(srv, "agent1", "-sess_in", str(first), version=version)
    assert kind == "Reused", out


def test_sighup_keeps_ticket_keys(start_server, tmp_path):
    srv = start_server()
    first = new_session(srv, "agent1", tmp_path / "s1.pem")
    for i in range(1, 6):
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while srv.stderr().count("reload all: ") < i:
            assert time.monotonic() < deadline, f"SIGHUP {i} was not acted on:\n{srv.stderr()}"
            time.sleep(0.05)
    kind, out = session_run(srv, "agent1", "-sess_in", str(first))
    assert kind == "Reused", f"a ticket from before five SIGHUPs no longer resumes:\n{out}"


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_reload_tickets_keeps_keys_still_in_the_file(start_server, tmp_path, version):
    old_key, new_key = new_ticket_key_line(), new_ticket_key_line()
    keys = tmp_path / "tickets.keys"
    keys.write_text(old_key + "\n")
    os.chmod(keys, 0o600)
    srv = start_server({"server": {"watch": "no"}, "tls": {"ticket_key_file": str(keys)}})
    before = new_session(srv, "agent1", tmp_path / "before.pem", version=version)
    # The fleet's rotation: the new key first, the old one still listed.
    keys.write_text(new_key + "\n" + old_key + "\n")
    beaconctl_ok(srv, "reload", "tickets")
    beaconctl_ok(srv, "reload", "all")
    kind, out = session_run(srv, "agent1", "-sess_in", str(before), version=version)
    assert kind == "Reused", f"a key still in ticket_key_file stopped resuming:\n{out}"
    after = new_session(srv, "agent1", tmp_path / "after.pem", version=version)
    # The old key leaves the file: its tickets end, the new key's resume.
    keys.write_text(new_key + "\n")
    beaconctl_ok(srv, "reload", "tickets")
    kind, out = session_run(srv, "agent1", "-sess_in", str(before), version=version)
    assert kind == "New", out
    kind, out = session_run(srv, "agent1", "-sess_in", str(after), version=version)
    assert kind == "Reused", out
