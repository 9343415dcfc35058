#!/usr/bin/env python3
"""Differential certificate testing of beacond (the "frankencert" method).

Generates client certificate chains that mix valid and invalid parts
(cases.py), asks `openssl verify -purpose sslclient -crl_check_all` about
each with the same issuer and CRL beacond gets, applies beacond's documented
extra rules on top (expected()), and compares with what beacond does when a
real client (Python's ssl) presents the chain and uploads: admitted (201,
filed under the expected device) or refused (which TLS alert, and which
reason beacond logs).

    tests/differential/frankencert.py --cases 10000 [--seed N] [--batch 500]
        [--threads 8] [--keep DIR]

prints the seed, one line per class of difference with its smallest case,
and exits 1 if any. tests/integration/test_differential.py runs 300 cases
in the integration suite.

One beacond serves a batch: each case's root CA goes into its issuer
directory and its CRL into crl_dir (crl_stale alternates between batches),
and the clients run in parallel. Cases whose CRL beacond must refuse at load
(a wrong signature, a lastUpdate in the future) cannot share a batch: each
is checked alone with `beacond -t`.

How the expected verdict is made, and the intended differences from
openssl (each is a named rule in the code below):

  openssl's verdict. Every error `openssl verify` prints (the command goes
  on after expiry, CA and purpose errors and prints each) maps to the
  beacond refusal reasons it may appear as (OPENSSL_REASONS); beacond stops
  at its first error, so any reason of the set is right. A CA without a CRL
  gets an empty, fresh CRL on openssl's side only: beacond treats a CA
  without one as revoking nothing (issuer_without_crl_revokes_nothing).
  Waived openssl errors (beacond is deliberately more lenient):
    crl_stale_warn       crl_stale = warn: a CRL past its nextUpdate is
                         still used, not refused (openssl error 12).
    any_eku_is_client    an anyExtendedKeyUsage leaf counts as clientAuth
                         (RFC 5280 4.2.1.12; openssl's sslclient purpose
                         wants clientAuth itself).
  beacond's extra refusals (README, config/beacond.conf):
    leaf_needs_client_auth_eku   require_client_auth_eku = yes: no EKU
                                 extension is a refusal (openssl: any use).
    leaf_needs_digital_signature require_digital_signature = yes: no KU,
                                 or keyAgreement only, is a refusal.
    no_weak_signatures           a certificate the client sends signed
                                 with SHA-1 (or MD5) is refused.
    device_identity              the subject CN is the device: it must
                                 be the only CN, and decoded (a
                                 BMPString's characters) 1 to 255
                                 printable ASCII characters without
                                 space, '/' or '\\': none, two, a NUL,
                                 a control or non-ASCII character or a
                                 longer value refuse the certificate.
    single_valued_rdns           wolfSSL cannot parse a name with a
                                 multi-valued RDN (CN + O in one RDN): such
                                 a leaf is refused, such an issuer is
                                 refused at load (beacond -t names it).
    chain_length                 at most MAX_SENT_CERTS certificates in
                                 the client's Certificate message
                                 (wolfSSL MAX_CHAIN_DEPTH = 4).
    no_ed25519                   wolfSSL is built without Ed25519: an
                                 Ed25519 leaf key cannot sign with an
                                 offered algorithm (the client sends no
                                 certificate), an Ed25519 CA key or
                                 signature cannot be verified.
    crl_stale_refuse             crl_stale = refuse: a certificate whose
                                 issuer's newest CRL is past its
                                 nextUpdate is refused.
    chain_fault_order            a chain openssl cannot finish (error 2 or
                                 20) that also has a broken CA: beacond
                                 may name the broken CA (bad_certificate)
                                 rather than the missing issuer.
    crl_load_refused             a CRL whose signature fails or whose
                                 lastUpdate is in the future refuses the
                                 whole trust load (beacond -t fails).

The TLS alert for each refusal reason is one table, ALERT_FOR_REASON.
"""

import argparse
import collections
import concurrent.futures
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "integration"))

import cases as casegen  # noqa: E402
import der  # noqa: E402
from helpers import BEACOND, Server  # noqa: E402

# ---- the tables to update as beacond changes -----------------------------------

# beacond's refusal reason (auth_result_name, or "stale" for a revoked
# refusal whose log says crl_stale = refuse) -> the TLS alert it sends
# (dataplane/tls/tls.c alert_for; README "Trust at run time"): wolfSSL's
# own alert where wolfSSL found the fault in the chain, the precise one
# where beacond's callback refused, bad_certificate where nothing more
# precise fits (a bad identity, a weak signature, a certificate wolfSSL
# cannot parse: decode_error is also right for that one).
ALERT_FOR_REASON = {
    "no_certificate": {"TLSv1.3": "certificate_required", "TLSv1.2": "handshake_failure"},
    "unknown_issuer": "unknown_ca",
    "expired": "certificate_expired",
    "not_yet_valid": "certificate_expired",
    "revoked": "certificate_revoked",
    "stale": "certificate_unknown",  # not known to be revoked: unknown status
    "wrong_usage": "unsupported_certificate",
    "other": "bad_certificate",
}
# A certificate wolfSSL cannot parse (single_valued_rdns): it refuses it
# before beacond's callback runs, with decode_error or bad_certificate.
UNPARSED_ALERTS = {"decode_error", "bad_certificate"}

# openssl verify error -> the beacond reasons it may show up as.
_ISSUER = {"unknown_issuer"}
_BROKEN_CA = {"unknown_issuer", "other"}
OPENSSL_REASONS = {
    2: _ISSUER,  # unable to get issuer certificate
    18: _ISSUER,  # self-signed leaf
    19: _ISSUER,  # self-signed certificate in chain
    20: _ISSUER,  # unable to get local issuer certificate
    21: _ISSUER,  # unable to verify the first certificate
    7: _BROKEN_CA,  # certificate signature failure
    9: {"not_yet_valid"},
    10: {"expired"},
    12: {"stale"},  # CRL has expired (crl_stale = refuse)
    23: {"revoked"},
    4: _BROKEN_CA,  # unable to decrypt certificate's signature
    6: _BROKEN_CA,  # unable to decode issuer public key
    24: _BROKEN_CA,  # no issuer public key
    79: _BROKEN_CA,  # invalid CA certificate
    76: _BROKEN_CA,  # unsupported signature algorithm
    25: _BROKEN_CA,  # path length constraint exceeded
    32: _BROKEN_CA,  # key usage does not include certificate signing
}
PURPOSE = 26  # unsupported certificate purpose: wrong_usage at the leaf
# openssl cannot finish the chain: it reports nothing about the CAs it has.
CHAIN_UNFINISHED = {2, 20}
# A CA (cases.CA_DEFECTS) wolfSSL refuses by its shape, not its dates or CRL.
CA_SHAPE_DEFECTS = {"no_basic_constraints", "ca_false", "no_keycertsign", "pathlen0", "sha1"}

MAX_SENT_CERTS = 4  # wolfSSL MAX_CHAIN_DEPTH (scripts/setup.sh)

# "127.0.0.1:PORT: refused: WHY (REASON): subject ..." or "...: no client
# certificate" (dataplane/tls/tls.c, the refusal log)
REFUSAL_LOG = re.compile(
    r"^.*?127\.0\.0\.1:(\d+): refused: (.*) \((\w+)\): (?:subject |no client certificate)")


def logged_reason(why, reason):
    """The reason as ALERT_FOR_REASON knows it: a stale CRL under
    crl_stale = refuse is logged as revoked but alerted as unknown."""
    if reason == "revoked" and "crl_stale = refuse" in why:
        return "stale"
    return reason


@dataclass
class Policy:
    crl_stale: str = "warn"
    require_client_auth_eku: bool = True
    require_digital_signature: bool = True


# ---- openssl -----------------------------------------------------------------------


def write_case_files(case, d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "leaf.pem").write_text(der.pem(case.leaf))
    (d / "leaf.key").write_bytes(der.key_pem(case.leaf_key))
    os.chmod(d / "leaf.key", 0o600)
    (d / "client.pem").write_text("".join(der.pem(c) for c in [case.leaf] + case.sent))
    (d / "root.pem").write_text(der.pem(case.root.cert))
    (d / "untrusted.pem").write_text("".join(der.pem(c) for c in case.sent))
    crls = []
    if case.crl is not None:
        (d / "root.crl").write_bytes(case.crl)
        crls.append(case.crl)
    for ca in case.cas:
        if ca is case.root and case.crl is not None:
            continue
        crls.append(casegen.empty_crl(ca))  # issuer_without_crl_revokes_nothing
    (d / "openssl-crls.pem").write_text("".join(der.pem(c, "X509 CRL") for c in crls))
    (d / "case.txt").write_text(f"case {case.number}: {case.describe()}\n")


ERROR_LINE = re.compile(r"error (\d+) at (\d+) depth lookup: ?(.*)")


def _openssl_errors(d, crl_check):
    cmd = ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(d / "root.pem")]
    if crl_check:
        cmd += ["-crl_check_all", "-CRLfile", str(d / "openssl-crls.pem")]
    if (d / "untrusted.pem").stat().st_size:
        cmd += ["-untrusted", str(d / "untrusted.pem")]
    cmd.append(str(d / "leaf.pem"))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60)
    errors = [(int(m.group(1)), int(m.group(2)), m.group(3))
              for m in map(ERROR_LINE.search, p.stdout.splitlines()) if m]
    if p.returncode != 0 and not errors:
        raise AssertionError(f"{' '.join(cmd)} failed without an error line:\n{p.stdout}")
    return errors


def openssl_verdict(d):
    """[(error code, depth, text)] that `openssl verify -purpose sslclient
    -crl_check_all` prints; [] = OK. The command stops at a revoked
    certificate (error 23) before it checks signatures and dates, so a
    second run without the CRLs adds what that one did not reach."""
    errors = _openssl_errors(d, True)
    for e in _openssl_errors(d, False):
        if e[:2] not in [x[:2] for x in errors]:
            errors.append(e)
    return errors


# ---- the expected verdict ---------------------------------------------------------


@dataclass
class Expectation:
    admitted: bool
    reasons: set  # when refused: the beacond reasons that are right
    rules: list  # which rules decided, for the report
    openssl: list
    load_refused: bool = False


def rule_leaf_needs_client_auth_eku(case, policy):
    if policy.require_client_auth_eku and not (
            case.leaf_eku and {"clientAuth", "anyExtendedKeyUsage"} & set(case.leaf_eku)):
        return "wrong_usage"


def rule_leaf_needs_digital_signature(case, policy):
    if policy.require_digital_signature and not (
            case.leaf_ku and "digitalSignature" in case.leaf_ku):
        return "wrong_usage"


def rule_no_weak_signatures(case, policy):
    if der.WEAK_SIG_ALGS & set(case.sent_sig_algs):
        return {"other", "unknown_issuer"}  # wolfSSL may not verify it at all


def rule_device_identity(case, policy):
    if case.identity is None:
        return "other"


def rule_single_valued_rdns(case, policy):
    if case.knobs.get("leaf_name") == "multi_rdn":
        return "other"


def rule_chain_length(case, policy):
    if 1 + len(case.sent) > MAX_SENT_CERTS:
        return {"other", "unknown_issuer"}


def rule_no_ed25519(case, policy):
    if case.leaf_key_kind == "ed25519":  # TLS 1.3: no certificate sent; 1.2: sent, refused
        return {"no_certificate", "wrong_usage", "other"}
    if "ed25519" in case.sent_key_kinds[1:] or "ed25519" in case.sent_sig_algs:
        return {"other", "unknown_issuer"}


def rule_leaf_keycertsign_needs_ca(case, policy):
    """RFC 5280 4.2.1.3: keyCertSign only with cA; wolfSSL enforces it
    (openssl only with -x509_strict)."""
    if case.leaf_ku and "keyCertSign" in case.leaf_ku and \
            case.knobs.get("leaf_bc") != "ca_true":
        return "other"


def rule_crl_stale_refuse(case, policy):
    if policy.crl_stale == "refuse" and case.crl_state == "stale":
        return "stale"  # every certificate the root issued is checked against it


EXTRA_RULES = [rule_leaf_needs_client_auth_eku, rule_leaf_needs_digital_signature,
               rule_no_weak_signatures, rule_device_identity, rule_single_valued_rdns,
               rule_chain_length,
               rule_no_ed25519, rule_leaf_keycertsign_needs_ca, rule_crl_stale_refuse]


def expected(case, errors, policy):
    """openssl's verdict, then beacond's extra rules, each named."""
    if case.crl_state in ("future", "badsig"):
        assert errors, f"case {case.number}: openssl accepts a chain with a {case.crl_state} CRL"
        return Expectation(False, set(), ["crl_load_refused"], errors, load_refused=True)
    reasons, rules = set(), []
    for code, depth, _ in errors:
        if code == 12 and policy.crl_stale == "warn":
            rules.append("crl_stale_warn")
            continue
        if code == PURPOSE and depth == 0:
            if case.leaf_eku and "anyExtendedKeyUsage" in case.leaf_eku and \
                    "serverAuth" not in case.leaf_eku and "codeSigning" not in case.leaf_eku:
                rules.append("any_eku_is_client")
                continue
            reasons.add("wrong_usage")
        elif code == PURPOSE:
            reasons |= {"unknown_issuer", "wrong_usage", "other"}
        elif code in OPENSSL_REASONS:
            reasons |= OPENSSL_REASONS[code]
        else:
            raise AssertionError(f"case {case.number}: openssl error {code} has no mapping "
                                 f"(OPENSSL_REASONS): {errors}")
        rules.append(f"openssl:{code}@{depth}")
    if any(code in CHAIN_UNFINISHED for code, _, _ in errors) and any(
            case.knobs.get(f"int{i}") in CA_SHAPE_DEFECTS for i in range(1, 6)):
        # chain_fault_order: openssl stops at a chain it cannot finish;
        # wolfSSL checks the CAs it has, top down, and may name a broken
        # one first. Both refuse; either cause is right.
        reasons.add("other")
        rules.append("chain_fault_order")
    for rule in EXTRA_RULES:
        r = rule(case, policy)
        if r:
            reasons |= {r} if isinstance(r, str) else r
            rules.append(rule.__name__[len("rule_"):])
    return Expectation(not reasons, reasons, rules, errors)


# ---- the client -----------------------------------------------------------------------


@dataclass
class Observation:
    outcome: str  # admitted, refused, error
    detail: str = ""
    alert: str = None
    status: int = None
    port: int = None
    version: str = None
    reason: str = None  # from beacond's log
    device: str = None  # from beacond's index


def _alert_of(err):
    r = getattr(err, "reason", None) or ""
    if "ALERT_" in r:
        return r.split("ALERT_", 1)[1].lower()
    return None


def client_context(d, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # present SHA-1 chains as they are
    ctx.load_verify_locations(str(d.parent / "server-ca.pem"))
    ctx.load_cert_chain(str(d / "client.pem"), str(d / "leaf.key"))
    v = ssl.TLSVersion.TLSv1_3 if version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    return ctx


def attempt(host, port, d, case_number, version, timeout=20.0):
    """One TLS connection with the case's chain and one PUT, sent at once
    as an agent would (in TLS 1.3 the client's handshake ends before
    beacond's verdict, which comes as an alert instead of the response).
    The TLS engine runs on memory BIOs: what was received before a reset is
    still read, so an alert followed by a reset counts as the alert."""
    try:
        ctx = client_context(d, version)
    except ssl.SSLError as e:
        return Observation("error", f"client cannot load the chain: {e}")
    sock = socket.create_connection((host, port), timeout=timeout)
    obs = Observation("error", port=sock.getsockname()[1], version=version)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="localhost")

    def flush():
        data = out.read()
        if data:
            sock.sendall(data)

    def pump():
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            obs.detail = "reset; "
            data = b""
        if data:
            inc.write(data)
        else:
            inc.write_eof()

    def call(fn, *a):
        while True:
            try:
                r = fn(*a)
                flush()
                return r
            except ssl.SSLWantReadError:
                flush()
                pump()

    try:
        call(tls.do_handshake)
        body = f"frankencert case {case_number}\n".encode()
        call(tls.write, (f"PUT /ManageSoftRL/Inventories/case-{case_number}.ndi HTTP/1.1\r\n"
                         f"Host: localhost\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n").encode() + body)
        resp = b""
        while b"\r\n" not in resp:
            data = call(tls.read, 4096)
            if not data:
                raise ConnectionError(f"closed after {resp!r}")
            resp += data
        obs.status = int(resp.split(b" ", 2)[1])
        obs.outcome = "admitted" if obs.status == 201 else "http"
        obs.detail = resp.split(b"\r\n", 1)[0].decode(errors="replace")
    except ssl.SSLError as e:
        obs.alert = _alert_of(e)
        obs.outcome = "refused" if obs.alert else "error"
        obs.detail += str(e)
    except (OSError, ValueError, IndexError) as e:
        obs.detail += repr(e)
    finally:
        sock.close()
    return obs


# ---- the server -------------------------------------------------------------------------


def make_server_pki(d):
    """Server CA and a P-256 server certificate for localhost."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, key = der.new_key("p256"), der.new_key("p256")
    ca_name = der.name([[(der.CN, der.PRINTABLE, "Frankencert Server CA")]])
    ca = der.certificate(serial=1, subject=ca_name, issuer=ca_name, key=ca_key, issuer_key=ca_key,
                         not_before=casegen.NOW - casegen.DAY, not_after=casegen.NOW + casegen.YEAR,
                         extensions=[der.basic_constraints(True), der.key_usage(["keyCertSign"])],
                         sig_alg="ecdsa-sha256")
    srv = der.certificate(serial=2, subject=der.name([[(der.CN, der.PRINTABLE, "localhost")]]),
                          issuer=ca_name, key=key, issuer_key=ca_key,
                          not_before=casegen.NOW - casegen.DAY,
                          not_after=casegen.NOW + casegen.YEAR,
                          extensions=[der.key_usage(["digitalSignature"]),
                                      der.ext_key_usage(["serverAuth"]),
                                      der.san_dns("localhost")], sig_alg="ecdsa-sha256")
    (d / "server-ca.pem").write_text(der.pem(ca))
    (d / "server.pem").write_text(der.pem(srv))
    (d / "server.key").write_bytes(der.key_pem(key))
    os.chmod(d / "server.key", 0o600)
    (d / "issuers").mkdir(exist_ok=True)


def server_config(batch_dir, policy):
    return {"server": {"workers": "1", "watch": "no"},
            "tls": {"issuers": str(batch_dir / "issuers"), "crl_dir": str(batch_dir / "crls"),
                    "crl_stale": policy.crl_stale, "advertise": "none",
                    "require_client_auth_eku": "yes" if policy.require_client_auth_eku else "no",
                    "require_digital_signature":
                        "yes" if policy.require_digital_signature else "no"}}


def check_load_refused(case, d, pki, policy):
    """beacond -t with only this case's root and CRL must refuse the CRL."""
    conf_dir = d / "load"
    (conf_dir / "issuers").mkdir(parents=True, exist_ok=True)
    (conf_dir / "crls").mkdir(exist_ok=True)
    shutil.copy(d / "root.pem", conf_dir / "issuers" / "root.pem")
    shutil.copy(d / "root.crl", conf_dir / "crls" / "root.crl")
    srv = Server(conf_dir, pki, server_config(conf_dir, policy))
    p = subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    why = {"future": "in the future", "badsig": "signature does not verify"}[case.crl_state]
    if p.returncode != 0 and "root.crl" in p.stdout and why in p.stdout:
        return Observation("load_refused", p.stdout.strip().splitlines()[-1])
    return Observation("loaded", f"beacond -t exited {p.returncode}: {p.stdout.strip()[-300:]}")


def issuer_refused(case, d, pki, policy, cache):
    """Why beacond -t refuses this case's root as an issuer, or None. The
    answer depends only on the root's shape (key and name kind): asked once
    a shape."""
    shape = (case.knobs.get("root_key", "p256"), case.knobs.get("root_name", "printable"))
    if shape not in cache:
        conf_dir = d / "issuer-load"
        (conf_dir / "issuers").mkdir(parents=True, exist_ok=True)
        shutil.copy(d / "root.pem", conf_dir / "issuers" / "root.pem")
        srv = Server(conf_dir, pki, server_config(conf_dir, policy))
        srv.config_text = srv.config_text.replace(f"crl_dir = {conf_dir / 'crls'}\n", "")
        srv.conf.write_text(srv.config_text)
        p = subprocess.run([str(BEACOND), "-t", "-c", str(srv.conf)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        cache[shape] = None if p.returncode == 0 else p.stdout.strip()[-300:]
    return cache[shape]


@dataclass
class Result:
    case: object
    dir: Path
    expect: Expectation
    seen: Observation
    problems: list = field(default_factory=list)


def judge(r):
    """The differences between what was expected and what was seen, each a
    short class name (the key for grouping) and a detail."""
    return _judge(r)


def _judge(r):
    e, s, out = r.expect, r.seen, []
    if s.outcome == "issuer_refused" and r.case.knobs.get("root_name") == "multi":
        return []  # single_valued_rdns
    if s.outcome == "issuer_refused":
        return [(f"issuer refused at load (root_name={r.case.knobs.get('root_name', 'printable')}, "
                 f"root_key={r.case.knobs.get('root_key', 'p256')})", s.detail)]
    if e.load_refused:
        if s.outcome != "load_refused":
            out.append(("crl loaded, should be refused", s.detail))
        return out
    if e.admitted:
        if s.outcome != "admitted":
            out.append((f"refused ({s.reason or s.alert or s.outcome}), openssl+rules admit",
                        s.detail))
        elif s.device != r.case.identity:
            out.append(("admitted under the wrong identity",
                        f"filed as {s.device!r}, expected {r.case.identity!r}"))
        return out
    if s.outcome == "admitted":
        out.append((f"admitted, should be refused ({'/'.join(sorted(e.reasons))}: "
                    f"{', '.join(e.rules)})", f"rules {e.rules}"))
        return out
    if s.outcome != "refused":
        out.append((f"no alert ({s.outcome})", s.detail))
        return out
    if s.reason is not None and s.reason not in e.reasons:
        out.append((f"reason {s.reason}, expected {'/'.join(sorted(e.reasons))}",
                    f"rules {e.rules}"))
    want = {alert_for(x, s.version) for x in ({s.reason} if s.reason else e.reasons)}
    if "single_valued_rdns" in e.rules:
        want |= UNPARSED_ALERTS
    if s.alert not in want:
        out.append((f"alert {s.alert}, expected {'/'.join(sorted(want))}",
                    f"reason {s.reason}"))
    return out


def alert_for(reason, version):
    a = ALERT_FOR_REASON[reason]
    return a[version] if isinstance(a, dict) else a


def run_batch(cases, policy, work, pki, threads, rng, shapes):
    """Runs one beacond over `cases`; returns [Result]."""
    batch = Path(tempfile.mkdtemp(prefix="b-", dir=work))
    (batch / "issuers").mkdir()
    (batch / "crls").mkdir()
    shutil.copy(pki / "server-ca.pem", batch / "server-ca.pem")
    results = []

    def prepare(case):
        d = batch / f"case-{case.number}"
        write_case_files(case, d)
        return Result(case, d, expected(case, openssl_verdict(d), policy), None)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(prepare, cases))
    for r in results:
        why = issuer_refused(r.case, r.dir, pki, policy, shapes)
        if why:
            r.seen = Observation("issuer_refused", why)
            continue
        if r.expect.load_refused:
            r.seen = check_load_refused(r.case, r.dir, pki, policy)
            continue
        shutil.copy(r.dir / "root.pem", batch / "issuers" / f"root-{r.case.number}.pem")
        if r.case.crl is not None:
            shutil.copy(r.dir / "root.crl", batch / "crls" / f"root-{r.case.number}.crl")
    live = [r for r in results if r.seen is None]
    if live:
        srv = Server(batch / "srv", pki, server_config(batch, policy))
        srv.start()
        try:
            versions = {r.case.number: rng.choice(["TLSv1.3", "TLSv1.2"]) for r in live}
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                seen = pool.map(lambda r: attempt(srv.host, srv.port, r.dir, r.case.number,
                                                  versions[r.case.number]), live)
                for r, s in zip(live, seen):
                    r.seen = s
            srv.assert_alive()
            devices = {row["name"]: row["device"] for row in srv.uploads()}
        finally:
            srv.stop()
        # A refusal's log line names the client's address and port. Over a
        # batch the kernel may hand one ephemeral port to two cases: such a
        # port's lines cannot be told apart, and its cases count as not
        # logged (as the rate limit's left-out lines do).
        log = collections.defaultdict(list)
        for line in srv.stderr().splitlines():
            m = REFUSAL_LOG.match(line)
            if m:
                log[int(m.group(1))].append(logged_reason(m.group(2), m.group(3)))
        ports = collections.Counter(r.seen.port for r in live)
        for r in live:
            lines = log.get(r.seen.port, [])
            r.seen.reason = lines[0] if len(lines) == 1 and ports[r.seen.port] == 1 else None
            r.seen.device = devices.get(f"case-{r.case.number}.ndi")
    for r in results:
        r.problems = judge(r)
    return results


# ---- the whole run ----------------------------------------------------------------------


def run(seed, n_cases, *, batch_size=300, threads=8, work=None, log=print):
    """Runs n_cases cases of `seed`; returns [Result]. Batches alternate
    crl_stale = warn and refuse."""
    own = work is None
    work = Path(work or tempfile.mkdtemp(prefix="fc-"))
    work.mkdir(parents=True, exist_ok=True)
    pki = work / "pki"
    make_server_pki(pki)
    keys = casegen.KeyPool()
    rng = random.Random(f"{seed}:versions")
    shapes = {}
    results = []
    try:
        for b, start in enumerate(range(0, n_cases, batch_size)):
            numbers = range(start, min(n_cases, start + batch_size))
            keys.new_batch()
            cases = [casegen.make_case(seed, i, keys) for i in numbers]
            policy = Policy(crl_stale="warn" if b % 2 == 0 else "refuse")
            t0 = time.monotonic()
            rs = run_batch(cases, policy, work, pki, threads, rng, shapes)
            bad = sum(1 for r in rs if r.problems)
            adm = sum(1 for r in rs if r.seen.outcome == "admitted")
            log(f"frankencert: seed {seed} batch {b} (crl_stale = {policy.crl_stale}): "
                f"{len(rs)} cases, {adm} admitted, {bad} differ "
                f"({time.monotonic() - t0:.1f} s)")
            results += rs
    finally:
        if own and not any(r.problems for r in results):
            shutil.rmtree(work, ignore_errors=True)
    return results


def summarize(results, seed):
    """One line per class of difference, with its smallest example case."""
    classes = collections.defaultdict(list)
    for r in results:
        for cls, detail in r.problems:
            classes[cls].append((len(r.case.knobs), r.case.number, r, detail))
    alerts = collections.Counter((r.seen.reason, r.seen.version, r.seen.alert) for r in results
                                 if r.seen.outcome in ("refused", "error"))
    lines = []
    for cls, items in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        items.sort(key=lambda t: (t[0], t[1]))
        _, number, r, detail = items[0]
        lines.append(f"{len(items):5d} x {cls}\n"
                     f"        smallest: case {number} (--seed {seed}): {r.case.describe()}\n"
                     f"        {detail}; openssl {[(c, d) for c, d, _ in r.expect.openssl]}; "
                     f"seen {r.seen.outcome} alert={r.seen.alert} reason={r.seen.reason} "
                     f"{r.seen.version or ''}\n        files: {r.dir}")
    if lines:
        lines.append("reason -> alert seen: " + ", ".join(
            f"{k[0]} {k[1]} {k[2]} x{v}" for k, v in sorted(alerts.items(), key=str)))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--batch", type=int, default=300)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--keep", default=None, help="work directory to keep (default: a temp dir, "
                    "removed when every case agrees)")
    ap.add_argument("--json", default=None, help="write every case's verdicts here")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"frankencert: seed {seed}, {a.cases} cases ({BEACOND})", flush=True)
    results = run(seed, a.cases, batch_size=a.batch, threads=a.threads, work=a.keep,
                  log=lambda s: print(s, flush=True))
    if a.json:
        with open(a.json, "w") as f:
            for r in results:
                f.write(json.dumps({"case": r.case.number, "knobs": r.case.knobs,
                                    "openssl": r.expect.openssl, "rules": r.expect.rules,
                                    "admitted": r.expect.admitted,
                                    "reasons": sorted(r.expect.reasons),
                                    "seen": r.seen.__dict__, "problems": r.problems},
                                   default=str) + "\n")
    lines = summarize(results, seed)
    adm = sum(1 for r in results if r.expect.admitted)
    print(f"frankencert: seed {seed}: {len(results)} cases ({adm} to admit), "
          f"{sum(1 for r in results if r.problems)} differ in {len(lines)} classes")
    for line in lines:
        print(line)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
