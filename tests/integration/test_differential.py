"""Differential certificate testing: 300 frankencert cases (generated client
chains mixing valid and invalid parts) against beacond and against
`openssl verify -purpose sslclient -crl_check_all` plus beacond's documented
rules. The generator, the expected-verdict function and the table of
alerts are in tests/differential/; the intended differences from openssl
are listed, each as a named rule, at the top of frankencert.py.

A random seed each run, printed on failure with the command that reruns
exactly those cases (FRANKENCERT_SEED and FRANKENCERT_CASES set them here):

    tests/differential/frankencert.py --seed SEED --cases 300

Differences on main at 5d05e94 (seeds 1 to 3 and 20261203: 11,500
cases), fixed since by issue 12's verification work: revocation under
IA5String DC / BMPString issuer names, revoked intermediates, crl_stale =
refuse through an intermediate, NUL and long CNs, SHA-1 intermediates,
imprecise alerts. The rules followed here are main's documented ones
(README "Trust at run time", "Device identity"): precise alerts
(ALERT_FOR_REASON), a BMPString CN decoded, two CNs or a non-ASCII CN
refused.

Intended differences from openssl: the named rules at the top of
frankencert.py.

Seed 20261204, 10,000 cases (--batch 500) on the branch diff2: 6,773 to
admit; 125 cases where a leaf wolfSSL refuses while it decodes it, before
beacond's callback (43 multi-valued RDN, 82 keyCertSign without cA), got no
alert in TLS 1.3 and decode_error or handshake_failure in TLS 1.2: fixed by
scripts/wolfssl-patches/cert-message-alert.patch (bad_certificate now); one
other difference, a chain openssl cannot finish that also has a CA with cA
false (beacond names the CA: bad_certificate), made the intended rule
chain_fault_order; rerun of the first 3,500 cases after it: clean.

The same seed and 10,000 cases on main after cert-message-alert.patch
(2026-12-03 23:55 UTC, a CI run beside it): 6,773 to admit, 1 differs.
Case 1244 (leaf_bc=ca_true, leaf_revoked=True): refused with
certificate_revoked, as openssl says, but the harness read its logged
reason as "other". Alone, and in a rerun of the same seed's first 1,500
cases, it is logged "revoked". The likely cause: the harness keyed log lines by the client's
port, and under load the kernel can give one port to two cases of a
batch. Such ports are now ambiguous and count as not logged; no difference
of beacond's remains.
"""

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "differential"))

import frankencert  # noqa: E402

CASES = int(os.environ.get("FRANKENCERT_CASES", "300"))
SEED = int(os.environ.get("FRANKENCERT_SEED") or random.SystemRandom().randrange(1 << 32))


def test_beacond_agrees_with_openssl_and_its_rules():
    # Its own short temporary directory (a Unix socket path has 107 bytes),
    # kept when a case differs.
    results = frankencert.run(SEED, CASES, batch_size=150, threads=8)
    assert len(results) == CASES
    # A run that admits nothing, or refuses nothing, compares nothing.
    to_admit = sum(1 for r in results if r.expect.admitted)
    admitted = sum(1 for r in results if r.seen.outcome == "admitted")
    assert 0 < to_admit < CASES and admitted > 0, (
        f"seed {SEED}: {to_admit} cases to admit, {admitted} admitted")
    lines = frankencert.summarize(results, SEED)
    assert not lines, (
        f"seed {SEED}: beacond differs from openssl + its rules; rerun with\n"
        f"  tests/differential/frankencert.py --seed {SEED} --cases {CASES}\n"
        + "\n".join(lines))


# One knob turned, every other valid: (admitted?, the rules that must
# decide). The oracle is checked on its own, against openssl, before any
# beacond is asked.
ORACLE = [
    ({}, True, []),
    ({"crl": "none"}, True, []),
    ({"root_name": "dc"}, True, []),
    ({"leaf_validity": "expired"}, False, ["openssl:10@0"]),
    ({"leaf_validity": "not_yet_valid"}, False, ["openssl:9@0"]),
    ({"leaf_revoked": True}, False, ["openssl:23@0"]),
    ({"intermediates": 1, "int1": "revoked"}, False, ["openssl:23@1"]),
    ({"intermediates": 1, "int1": "ca_false"}, False, []),
    ({"intermediates": 2, "int1": "pathlen0"}, False, ["openssl:25@2"]),
    ({"intermediates": 4}, False, ["chain_length"]),
    ({"intermediates": 1, "cross": "sent"}, True, []),
    ({"intermediates": 1, "cross": "missing"}, False, ["openssl:20@1"]),
    ({"leaf_eku": "absent"}, False, ["leaf_needs_client_auth_eku"]),
    ({"leaf_eku": "serverAuth"}, False, ["openssl:26@0", "leaf_needs_client_auth_eku"]),
    ({"leaf_eku": "anyExtendedKeyUsage"}, True, ["any_eku_is_client"]),
    ({"leaf_ku": "absent"}, False, ["leaf_needs_digital_signature"]),
    ({"leaf_ku": "keyagreement"}, False, ["leaf_needs_digital_signature"]),
    ({"leaf_name": "nul"}, False, ["device_identity"]),
    ({"leaf_name": "long"}, False, ["device_identity"]),
    ({"leaf_name": "two_cn"}, False, ["device_identity"]),
    ({"leaf_name": "utf8_nonascii"}, False, ["device_identity"]),
    ({"leaf_name": "bmp"}, True, []),
    ({"leaf_key": "ed25519"}, False, ["no_ed25519"]),
    ({"crl": "stale"}, True, ["crl_stale_warn"]),
    ({"crl": "future"}, False, ["crl_load_refused"]),
    ({"crl": "badsig"}, False, ["crl_load_refused"]),
]


def test_expected_verdict_function(tmp_path):
    keys = frankencert.casegen.KeyPool()
    wrong = []
    for i, (force, admit, rules) in enumerate(ORACLE):
        case = frankencert.casegen.make_case(11, i, keys, force=force)
        d = tmp_path / str(i)
        frankencert.write_case_files(case, d)
        e = frankencert.expected(case, frankencert.openssl_verdict(d), frankencert.Policy())
        if e.admitted != admit or not set(rules) <= set(e.rules):
            wrong.append(f"{force}: admitted={e.admitted}, rules {e.rules}; "
                         f"want admitted={admit}, rules {rules}")
    assert not wrong, "\n".join(wrong)
    stale = frankencert.casegen.make_case(11, 99, keys, force={"crl": "stale"})
    frankencert.write_case_files(stale, tmp_path / "stale")
    e = frankencert.expected(stale, frankencert.openssl_verdict(tmp_path / "stale"),
                             frankencert.Policy(crl_stale="refuse"))
    assert not e.admitted and "crl_stale_refuse" in e.rules, e
