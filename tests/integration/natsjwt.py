"""NATS decentralized auth (operator mode) without nsc: nkeys, the
operator, account and user JWTs, .creds files, a nats-server that trusts
the operator, and a raw-protocol client that logs in with a user JWT.

nkeys (github.com/nats-io/nkeys): an Ed25519 key as unpadded base32 of
prefix byte(s) + 32 key bytes + CRC16-XMODEM (little-endian). A public
key has one prefix byte (the type: O, A, U); a seed two (S, then the type).

JWT (github.com/nats-io/jwt v2): base64url(header) "." base64url(claims)
"." base64url(Ed25519 signature by the issuer's seed over the first two
parts), no padding anywhere. The claims' jti is the base32 of a hash of
the claims without it, as the jwt library computes it; the server does
not check it, but a missing one would be a JWT nsc never writes.
"""

import base64
import hashlib
import json
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          PublicFormat)

from natsfix import NatsClient, NatsServer

PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}  # 'O', 'A', 'U'
PREFIX_SEED = 18 << 3  # 'S'


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _nkey_encode(raw):
    raw += crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


def _b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class NKey:
    """An Ed25519 key pair of one nkey type ("operator", "account", "user")."""

    def __init__(self, kind):
        self.kind = kind
        self.key = Ed25519PrivateKey.generate()
        raw_seed = self.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw_pub = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        t = PREFIX[kind]
        self.seed = _nkey_encode(bytes([PREFIX_SEED | t >> 5, (t & 31) << 3]) + raw_seed)
        self.public = _nkey_encode(bytes([t]) + raw_pub)

    def sign(self, data):
        return self.key.sign(data)


def jwt(issuer, subject_pub, name, nats, exp=None):
    """A JWT for subject_pub, issued and signed by the NKey issuer; exp: the
    Unix time it expires at (none: never)."""
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject_pub,
              "nats": {**nats, "version": 2}}
    if exp is not None:
        claims["exp"] = int(exp)
    claims["jti"] = base64.b32encode(
        hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(issuer.sign(signing_input.encode()))


NO_LIMITS = {"subs": -1, "data": -1, "payload": -1}


def operator_jwt(op):
    return jwt(op, op.public, "beacon-test-op", {"type": "operator"})


def account_jwt(op, acct, name="BEACONS"):
    """JetStream on, without limits, so that the drain can create its stream."""
    limits = {**NO_LIMITS, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
              "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1,
              "consumer": -1}
    return jwt(op, acct.public, name, {"type": "account", "limits": limits,
                                       "default_permissions": {"pub": {}, "sub": {}}})


def user_jwt(issuer, user_pub, name="beacon", exp=None):
    return jwt(issuer, user_pub, name, {"type": "user", "pub": {}, "sub": {}, **NO_LIMITS}, exp)


def creds_text(user_jwt_text, seed):
    """A .creds file as nsc writes it."""
    return ("-----BEGIN NATS USER JWT-----\n" + user_jwt_text + "\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n" + seed + "\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


class Operator:
    """An operator with one account; users() issues that account's users."""

    def __init__(self):
        self.op = NKey("operator")
        self.account = NKey("account")
        self.system = NKey("account")  # JetStream needs a system account
        self.op_jwt = operator_jwt(self.op)
        self.account_jwt = account_jwt(self.op, self.account)
        self.system_jwt = jwt(self.op, self.system.public, "SYS", {"type": "account",
                                                                   "limits": NO_LIMITS})

    def user(self, name="beacon", exp=None):
        """(user JWT, user NKey) signed by the trusted account."""
        u = NKey("user")
        return user_jwt(self.account, u.public, name, exp), u

    def server(self, workdir, **kw):
        """A NatsServer (natsfix) in operator mode that trusts this operator
        and knows its account from a preload (resolver MEMORY). Its .auth is
        a reader user of the account, for the tests' own client."""
        workdir.mkdir(parents=True, exist_ok=True)
        op_file = workdir / "op.jwt"
        op_file.write_text(self.op_jwt)
        extra = [f'operator: "{op_file}"', f"system_account: {self.system.public}",
                 "resolver: MEMORY",
                 f"resolver_preload: {{ {self.account.public}: {self.account_jwt}, "
                 f"{self.system.public}: {self.system_jwt} }}"]
        ns = NatsServer(workdir, extra=extra + list(kw.pop("extra", ())), **kw)
        ns.jwt_reader = self.user("reader")
        return ns


class JwtNatsClient(NatsClient):
    """natsfix.NatsClient logging in with a user JWT: CONNECT carries the JWT
    and the user key's signature over the nonce in the server's INFO."""

    def __init__(self, port, user_jwt_text, user_key, timeout=10.0):
        import socket

        from helpers import HOST
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""
        info = json.loads(self._line().split(b" ", 1)[1])
        sig = _b64(user_key.sign(info["nonce"].encode()))
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1, "jwt": user_jwt_text, "sig": sig}
        self.sock.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        while (line := self._line()) != b"PONG":
            if line.startswith(b"-ERR"):
                raise ConnectionError(line.decode())
        self.sock.sendall(b"SUB _INBOX.test.* 1\r\n")
        self.n = 0


def read_stream_jwt(ns, stream):
    """natsfix.read_stream, logged in as the server's reader user."""
    from natsfix import read_stream
    return read_stream(ns.port, stream, client=JwtNatsClient(ns.port, *ns.jwt_reader))
