"""Frankencert cases: one client certificate chain per case, mixing valid
and invalid parts, with the issuer and the CRL it needs.

Each case has its own root CA (the issuer beacond trusts, named uniquely so
that cases never see each other's CRLs or intermediates), zero to five
intermediates, and a leaf. Every knob that was turned away from the valid
default is recorded in `case.knobs`, so a failing case explains itself and
the fewest-knob case of a class of differences is its minimal example.

A case is a pure function of (seed, number): keys come from a small pool
(their values never decide a verdict), everything else from
random.Random(f"{seed}:{number}").
"""

import datetime
import random
from dataclasses import dataclass, field

import der

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
YEAR = 365 * DAY

# Identity rules of beacond (dataplane/tls/certid.c cert_common_name and
# README "Device identity"): the only subject CN, decoded (a BMPString's
# characters, not its bytes), 1 to IDENTITY_MAX printable ASCII characters
# without space, '/' or '\\'.
IDENTITY_MAX = 255


class KeyPool:
    """Keys made on first use and used again. Leaves share a few keys of
    each kind. A CA's key is its own within a batch (one beacond): wolfSSL
    finds an issuer by the key identifier in the authorityKeyIdentifier, so
    two trusted CAs with one key and different names would make each
    other's clients unknown (a difference of its own, not what a case
    means to vary). Keys are used again in later batches."""

    SIZE = 3

    def __init__(self):
        self.shared = {}
        self.free = {}
        self.taken = []

    def get(self, kind, rng):
        i = rng.randrange(self.SIZE)  # drawn always: the case stays a function of its seed
        pool = self.shared.setdefault(kind, {})
        if i not in pool:
            pool[i] = der.new_key(kind)
        return pool[i]

    def own(self, kind, rng):
        rng.randrange(self.SIZE)
        free = self.free.setdefault(kind, [])
        key = free.pop() if free else der.new_key(kind)
        self.taken.append((kind, key))
        return key

    def new_batch(self):
        for kind, key in self.taken:
            self.free[kind].append(key)
        self.taken = []


def pick(rng, weighted):
    """One key of {value: weight}."""
    values = list(weighted)
    return rng.choices(values, weights=[weighted[v] for v in values])[0]


def knob(rng, case, weighted, name):
    """A knob's setting: its first (valid) value, unless the case's
    mutation rate turns it, then any value by weight; case.force[name]
    overrides both. Both draws are always made, so the case stays a
    function of its seed."""
    turn, value = rng.random(), pick(rng, weighted)
    if name in case.force:
        return case.force[name]
    return value if turn < case.rate else next(iter(weighted))


@dataclass
class CA:
    label: str
    name: bytes  # subject Name DER
    key: object
    cert: bytes = b""  # DER
    serial: int = 0
    issuer: "CA" = None


@dataclass
class Case:
    number: int
    rate: float = 0.3  # how likely each knob is turned from its valid value
    force: dict = field(default_factory=dict)  # knob name -> value (tests of the oracle)
    knobs: dict = field(default_factory=dict)
    root: CA = None  # the configured issuer
    cas: list = field(default_factory=list)  # every CA of the case (for the oracle's CRLs)
    sent: list = field(default_factory=list)  # DER the client sends after its leaf
    sent_sig_algs: list = field(default_factory=list)  # of the leaf and of each sent cert
    sent_key_kinds: list = field(default_factory=list)
    leaf: bytes = b""
    leaf_key: object = None
    leaf_key_kind: str = ""
    leaf_eku: list = None  # None: no extension
    leaf_ku: list = None
    identity: str = None  # the device beacond should file it under; None: no usable one
    issued_by_root: list = field(default_factory=list)  # DER of certs whose issuer is the root
    crl_state: str = "none"  # none, fresh, stale, future, badsig
    crl: bytes = None  # the root's CRL as beacond gets it

    def describe(self):
        return ", ".join(f"{k}={v}" for k, v in self.knobs.items()) or "all valid"


def _turn(case, knob, value, default):
    if value != default:
        case.knobs[knob] = value
    return value


# ---- names ------------------------------------------------------------------------


def ca_name(kind, label):
    text = f"Frankencert {label}"
    if kind == "utf8":
        return der.name([[(der.CN, der.UTF8, text + " \u00e9")], [(der.O, der.UTF8, "beacond diff")]])
    if kind == "dc":  # the Active Directory Certificate Services shape
        return der.name([[(der.DC, der.IA5, "com")], [(der.DC, der.IA5, "example")],
                         [(der.CN, der.UTF8, text)]])
    if kind == "bmp":
        return der.name([[(der.CN, der.BMP, text)], [(der.O, der.PRINTABLE, "beacond diff")]])
    if kind == "multi":
        return der.name([[(der.CN, der.PRINTABLE, text), (der.O, der.PRINTABLE, "beacond diff")]])
    return der.name([[(der.CN, der.PRINTABLE, text)], [(der.O, der.PRINTABLE, "beacond diff")]])


LEAF_NAMES = {"printable": .45, "utf8": .12, "utf8_nonascii": .05, "bmp": .06, "multi_rdn": .06,
              "dc": .05, "nul": .05, "long": .04, "no_cn": .03, "two_cn": .04, "blank": .03,
              "slash": .02}


def leaf_name(kind, number):
    """(Name DER, the identity beacond should derive or None)."""
    dev = f"agent{number}.example"
    o = [(der.O, der.PRINTABLE, "beacond diff")]
    if kind == "utf8":
        return der.name([[(der.CN, der.UTF8, dev)], o]), dev
    if kind == "utf8_nonascii":
        # Valid UTF-8, but not ASCII: refused, never cut or transliterated
        return der.name([[(der.CN, der.UTF8, f"agent{number}-\u00fc.example")], o]), None
    if kind == "bmp":  # decoded: the same characters as a PrintableString's
        return der.name([[(der.CN, der.BMP, dev)], o]), dev
    if kind == "multi_rdn":
        return der.name([[(der.CN, der.PRINTABLE, dev), o[0]]]), dev
    if kind == "dc":
        return der.name([[(der.DC, der.IA5, "com")], [(der.DC, der.IA5, "example")],
                         [(der.CN, der.UTF8, dev)]]), dev
    if kind == "nul":  # agentN.example\0.attacker.example: no truncated identity
        return der.name([[(der.CN, der.UTF8, dev.encode() + b"\x00.attacker.example")], o]), None
    if kind == "long":
        long_dev = f"agent{number}-" + "x" * 300 + ".example"
        return der.name([[(der.CN, der.UTF8, long_dev)], o]), None
    if kind == "no_cn":
        return der.name([o]), None
    if kind == "two_cn":  # documented rule: two CNs are refused, never guessed at
        return der.name([[(der.CN, der.UTF8, dev)], [(der.CN, der.UTF8, f"other{number}.example")],
                         o]), None
    if kind == "blank":
        return der.name([[(der.CN, der.UTF8, f"agent {number}.example")], o]), None
    if kind == "slash":
        return der.name([[(der.CN, der.UTF8, f"agent{number}/../x.example")], o]), None
    return der.name([[(der.CN, der.PRINTABLE, dev)], o]), dev


# ---- one case -------------------------------------------------------------------------

KEY_KINDS_CA = {"p256": .5, "p384": .2, "rsa2048": .25, "ed25519": .05}
KEY_KINDS_LEAF = {"p256": .5, "p384": .15, "rsa2048": .27, "ed25519": .08}
INTERMEDIATES = {0: .45, 1: .25, 2: .12, 3: .08, 4: .06, 5: .04}
CA_DEFECTS = {"none": .6, "expired": .04, "not_yet_valid": .04, "no_basic_constraints": .04,
              "ca_false": .04, "no_keycertsign": .04, "pathlen0": .04, "sha1": .04, "revoked": .1}
LEAF_VALIDITY = {"ok": .85, "expired": .075, "not_yet_valid": .075}
LEAF_KU = {"ds_critical": .55, "ds_noncritical": .1, "ds_keyencipherment": .1,
           "keyencipherment": .07, "keyagreement": .05, "absent": .08, "ds_keycertsign": .05}
LEAF_EKU = {"clientAuth": .6, "clientAuth_critical": .08, "clientAuth_serverAuth": .1,
            "serverAuth": .07, "anyExtendedKeyUsage": .05, "absent": .07, "codeSigning": .03}
LEAF_BC = {"absent": .6, "ca_false": .3, "ca_true": .1}
CRL_STATES = {"fresh": .42, "none": .35, "stale": .13, "future": .05, "badsig": .05}

KU_NAMES = {"ds_critical": (["digitalSignature"], True),
            "ds_noncritical": (["digitalSignature"], False),
            "ds_keyencipherment": (["digitalSignature", "keyEncipherment"], True),
            "keyencipherment": (["keyEncipherment"], True),
            "keyagreement": (["keyAgreement"], True),
            "ds_keycertsign": (["digitalSignature", "keyCertSign"], True)}
EKU_NAMES = {"clientAuth": (["clientAuth"], False), "clientAuth_critical": (["clientAuth"], True),
             "clientAuth_serverAuth": (["serverAuth", "clientAuth"], False),
             "serverAuth": (["serverAuth"], False),
             "anyExtendedKeyUsage": (["anyExtendedKeyUsage"], False),
             "codeSigning": (["codeSigning"], False)}


def _serial(rng):
    return rng.getrandbits(63) | 1 << 40


def _sig_alg(rng, case, knob, issuer_key, forced=None):
    if forced:
        alg = forced if forced in der.sig_algs_for(issuer_key) else der.default_sig_alg(issuer_key)
    elif rng.random() < case.rate / 2:
        alg = rng.choice(der.sig_algs_for(issuer_key))
    else:
        alg = der.default_sig_alg(issuer_key)
    _turn(case, knob, alg, der.default_sig_alg(issuer_key))
    return alg


def _ca_cert(ca, issuer, sig_alg, *, not_before=NOW - YEAR, not_after=NOW + 5 * YEAR,
             bc=(True, None), ku=("keyCertSign", "cRLSign")):
    exts = []
    if bc is not None:
        exts.append(der.basic_constraints(bc[0], bc[1]))
    if ku is not None:
        exts.append(der.key_usage(ku))
    exts += [der.subject_key_id(der.key_id(ca.key)), der.authority_key_id(der.key_id(issuer.key))]
    ca.issuer = issuer
    ca.cert = der.certificate(serial=ca.serial, subject=ca.name, issuer=issuer.name, key=ca.key,
                              issuer_key=issuer.key, not_before=not_before, not_after=not_after,
                              extensions=exts, sig_alg=sig_alg)
    return ca.cert


def _root(rng, case, keys):
    kind = knob(rng, case, {"p256": .5, "p384": .2, "rsa2048": .3}, "root_key")
    _turn(case, "root_key", kind, "p256")
    enc = knob(rng, case, {"printable": .55, "utf8": .1, "dc": .15, "bmp": .1, "multi": .1},
               "root_name")
    _turn(case, "root_name", enc, "printable")
    root = CA("root", ca_name(enc, f"Root {case.number}"), keys.own(kind, rng), serial=_serial(rng))
    _ca_cert(root, root, der.default_sig_alg(root.key))
    return root


def _intermediate(rng, case, keys, j, issuer, below):
    """Intermediate number j (1 = next to the root), with at most one
    defect; `below` is how many intermediates it must still certify."""
    kind = knob(rng, case, KEY_KINDS_CA, f"int{j}_key")
    _turn(case, f"int{j}_key", kind, "p256")
    ca = CA(f"int{j}", ca_name("printable", f"Intermediate {j} of {case.number}"),
            keys.own(kind, rng), serial=_serial(rng))
    defect = knob(rng, case, CA_DEFECTS, f"int{j}")
    if defect == "revoked" and issuer is not case.root:
        defect = "none"
    if defect == "pathlen0" and below == 0:
        defect = "none"
    _turn(case, f"int{j}", defect, "none")
    kw = {}
    if defect == "expired":
        kw.update(not_before=NOW - 2 * YEAR, not_after=NOW - DAY)
    elif defect == "not_yet_valid":
        kw.update(not_before=NOW + DAY, not_after=NOW + YEAR)
    elif defect == "no_basic_constraints":
        kw["bc"] = None
    elif defect == "ca_false":
        kw["bc"] = (False, None)
    elif defect == "no_keycertsign":
        kw["ku"] = ("digitalSignature", "cRLSign")
    elif defect == "pathlen0":
        kw["bc"] = (True, 0)
    sig = _sig_alg(rng, case, f"int{j}_sig", issuer.key, "rsa-sha1" if defect == "sha1" else None)
    if defect == "sha1" and der.key_family(issuer.key) == "ec":
        sig = "ecdsa-sha1"
        case.knobs[f"int{j}_sig"] = sig
    _ca_cert(ca, issuer, sig, **kw)
    return ca, defect == "revoked", sig


def _leaf(rng, case, keys, issuer):
    kind = knob(rng, case, KEY_KINDS_LEAF, "leaf_key")
    case.leaf_key_kind = _turn(case, "leaf_key", kind, "p256")
    case.leaf_key = keys.get(kind, rng)
    validity = _turn(case, "leaf_validity", knob(rng, case, LEAF_VALIDITY, "leaf_validity"), "ok")
    nb, na = NOW - DAY, NOW + YEAR
    if validity == "expired":
        nb, na = NOW - YEAR, NOW - DAY
    elif validity == "not_yet_valid":
        nb, na = NOW + DAY, NOW + YEAR
    exts = []
    bc = _turn(case, "leaf_bc", knob(rng, case, LEAF_BC, "leaf_bc"), "absent")
    if bc != "absent":
        exts.append(der.basic_constraints(bc == "ca_true", critical=True))
    ku = _turn(case, "leaf_ku", knob(rng, case, LEAF_KU, "leaf_ku"), "ds_critical")
    if ku != "absent":
        names, crit = KU_NAMES[ku]
        case.leaf_ku = names
        exts.append(der.key_usage(names, crit))
    eku = _turn(case, "leaf_eku", knob(rng, case, LEAF_EKU, "leaf_eku"), "clientAuth")
    if eku != "absent":
        names, crit = EKU_NAMES[eku]
        case.leaf_eku = names
        exts.append(der.ext_key_usage(names, crit))
    exts += [der.subject_key_id(der.key_id(case.leaf_key)),
             der.authority_key_id(der.key_id(issuer.key))]
    nkind = _turn(case, "leaf_name", knob(rng, case, LEAF_NAMES, "leaf_name"), "printable")
    subject, case.identity = leaf_name(nkind, case.number)
    sig = _sig_alg(rng, case, "leaf_sig", issuer.key)
    serial = _serial(rng)
    case.leaf = der.certificate(serial=serial, subject=subject, issuer=issuer.name,
                                key=case.leaf_key, issuer_key=issuer.key, not_before=nb,
                                not_after=na, extensions=exts, sig_alg=sig)
    return serial, sig


def _crl(rng, case, keys, revoked):
    state = _turn(case, "crl", knob(rng, case, CRL_STATES, "crl"), "fresh")
    case.crl_state = state
    if state == "none":
        return
    this, nxt = NOW - DAY, NOW + 7 * DAY
    if state == "stale":
        this, nxt = NOW - 8 * DAY, NOW - DAY
    elif state == "future":
        this, nxt = NOW + DAY, NOW + 8 * DAY
    signer = None
    if state == "badsig":  # the issuer's name, a new key of its kind
        signer = der.new_key(case.knobs.get("root_key", "p256"))
    # beacond's CRL reader takes ECDSA and RSA PKCS#1 with SHA-2 only.
    case.crl = der.crl(issuer=case.root.name, issuer_key=case.root.key, this_update=this,
                       next_update=nxt, revoked=sorted(revoked | {_serial(rng)}),
                       number=case.number + 1, sig_alg=der.default_sig_alg(case.root.key),
                       signing_key=signer)


def make_case(seed, number, keys, force=None):
    """Case `number` of `seed`; `force` ({knob: value}) sets knobs and
    makes every other knob valid."""
    rng = random.Random(f"{seed}:{number}")
    case = Case(number, rate=rng.choice([0.0, 0.05, 0.1, 0.2, 0.3, 0.5]))
    if force is not None:
        case.rate, case.force = 0.0, dict(force)
    case.root = root = _root(rng, case, keys)
    case.cas = [root]
    depth = _turn(case, "intermediates", knob(rng, case, INTERMEDIATES, "intermediates"), 0)
    revoked = set()
    issuer = root
    chain = []  # (DER, sig alg, key kind) sent after the leaf, nearest the leaf first
    cross_drawn = rng.random() < case.rate / 2
    if depth and (cross_drawn or "cross" in case.force):
        # Cross-signed: the first intermediate's own root R2 is not trusted;
        # a cross certificate of R2 by the trusted root may or may not be sent.
        r2 = CA("cross_root", ca_name("printable", f"Cross Root {number}"),
                keys.own(pick(rng, {"p256": .6, "rsa2048": .4}), rng), serial=_serial(rng))
        _ca_cert(r2, r2, der.default_sig_alg(r2.key))
        cross = CA("cross", r2.name, r2.key, serial=_serial(rng))
        _ca_cert(cross, root, der.default_sig_alg(root.key))
        case.cas += [r2]
        sent_cross = rng.random() < 0.7
        sent_cross = case.force.get("cross", "sent" if sent_cross else "missing") == "sent"
        case.knobs["cross"] = "sent" if sent_cross else "missing"
        if sent_cross:
            chain.append((cross.cert, der.default_sig_alg(root.key), "cross"))
            case.issued_by_root.append(cross.cert)
        issuer = r2
    for j in range(1, depth + 1):
        ca, is_revoked, sig = _intermediate(rng, case, keys, j, issuer, depth - j)
        case.cas.append(ca)
        if is_revoked:
            revoked.add(ca.serial)
        if issuer is root:
            case.issued_by_root.append(ca.cert)
        chain.insert(0, (ca.cert, sig, case.knobs.get(f"int{j}_key", "p256")))
        issuer = ca
    serial, leaf_sig = _leaf(rng, case, keys, issuer)
    if issuer is root:
        case.issued_by_root.append(case.leaf)
        if rng.random() < case.rate or case.force.get("leaf_revoked"):
            revoked.add(serial)
            case.knobs["leaf_revoked"] = True
    case.sent = [c for c, _, _ in chain]
    case.sent_sig_algs = [leaf_sig] + [s for _, s, _ in chain]
    case.sent_key_kinds = [case.leaf_key_kind] + [k for _, _, k in chain]
    _crl(rng, case, keys, revoked)
    if case.crl_state == "none" and revoked:
        case.knobs.pop("leaf_revoked", None)  # nothing can say so
        for k, v in list(case.knobs.items()):
            if v == "revoked":
                case.knobs[k] = "revoked_without_crl"
    return case


def empty_crl(ca):
    """A fresh CRL revoking nothing, for a CA that has none: beacond treats
    a CA without a CRL as revoking nothing, and openssl -crl_check_all
    needs one CRL per issuer to say the same."""
    return der.crl(issuer=ca.name, issuer_key=ca.key, this_update=NOW - DAY,
                   next_update=NOW + 7 * DAY, revoked=[], number=1,
                   sig_alg=der.default_sig_alg(ca.key))
