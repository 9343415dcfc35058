"""perf/ecdsa_check on this build: wolfSSL's P-256 ECDSA signatures (a
handshake's CertificateVerify is one) verify under wolfSSL and under
OpenSSL's libcrypto, and the checker reports, with the case to replay, a
signature that does not."""

import json
import subprocess

from helpers import BEACOND

ECDSA_CHECK = BEACOND.parent / "perf" / "ecdsa_check"


def ecdsa_check(*args):
    assert ECDSA_CHECK.exists(), f"{ECDSA_CHECK} not built (libssl-dev: scripts/setup.sh)"
    p = subprocess.run([str(ECDSA_CHECK), *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    lines = p.stdout.decode().strip().splitlines()
    return p.returncode, json.loads(lines[-1]), lines[:-1]


def test_every_signature_verifies_under_both_libraries():
    rc, counts, reports = ecdsa_check("--iterations", "3000", "--keys", "16")
    assert rc == 0, reports
    assert counts["iterations"] == 3000 and counts["flipped"] == 0
    assert counts["sign_errors"] == counts["wolfssl_rejects"] == counts["openssl_rejects"] == 0
    assert reports == []


def test_a_flipped_bit_is_rejected_by_both_and_reported_with_its_case():
    rc, counts, reports = ecdsa_check("--iterations", "200", "--flip", "50")
    assert rc == 1
    assert counts["flipped"] == 4
    assert counts["wolfssl_rejects"] == counts["openssl_rejects"] == 4
    verdicts = [l for l in reports if l.startswith("iteration ")]
    assert verdicts == [f"iteration {n}: wolfSSL rejects, OpenSSL rejects"
                        for n in (50, 100, 150, 200)]
    assert sum(l.strip().startswith("signature 30") for l in reports) == 4


def test_bad_arguments_get_the_usage():
    p = subprocess.run([str(ECDSA_CHECK), "--keys", "0"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 2
    assert b"usage: ecdsa_check" in p.stderr
