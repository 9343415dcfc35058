"""perf/p256_check on this build: wolfSSL's P-256 ECDSA signatures (a
handshake's CertificateVerify is one) verify under wolfSSL and under
OpenSSL's libcrypto, its ECDH secrets (a handshake's key share) agree both
ways round and with OpenSSL's, and the checker reports, with the inputs to
replay, a signature or a secret that does not."""

import json
import subprocess

from helpers import BEACOND

P256_CHECK = BEACOND.parent / "perf" / "p256_check"


def p256_check(*args):
    assert P256_CHECK.exists(), f"{P256_CHECK} not built (libssl-dev: scripts/setup.sh)"
    p = subprocess.run([str(P256_CHECK), *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    lines = p.stdout.decode().strip().splitlines()
    return p.returncode, json.loads(lines[-1]), lines[:-1]


def test_signatures_verify_and_secrets_agree_under_both_libraries():
    rc, counts, reports = p256_check("--iterations", "2000", "--keys", "16")
    assert rc == 0, reports
    assert counts["iterations"] == 2000 and counts["flipped"] == 0
    assert counts["sign_errors"] == counts["wolfssl_rejects"] == counts["openssl_rejects"] == 0
    assert counts["ecdh_errors"] == counts["ecdh_mismatches"] == 0
    assert reports == []


def test_a_flipped_bit_is_caught_and_reported_with_its_inputs():
    rc, counts, reports = p256_check("--iterations", "200", "--flip", "50")
    assert rc == 1
    assert counts["flipped"] == 4
    assert counts["wolfssl_rejects"] == counts["openssl_rejects"] == 4
    assert counts["ecdh_mismatches"] == 4 and counts["ecdh_errors"] == 0
    verdicts = [l for l in reports if l.startswith("iteration ")]
    assert verdicts == [v for n in (50, 100, 150, 200)
                        for v in (f"iteration {n}: wolfSSL rejects, OpenSSL rejects",
                                  f"iteration {n}: ECDH secrets differ")]
    assert sum(l.strip().startswith("signature 30") for l in reports) == 4
    assert sum(l.strip().startswith("fresh private key ") for l in reports) == 4


def test_bad_arguments_get_the_usage():
    p = subprocess.run([str(P256_CHECK), "--keys", "0"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 2
    assert b"usage: p256_check" in p.stderr
