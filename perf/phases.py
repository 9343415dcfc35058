#!/usr/bin/env python3
"""The per-phase cost table from `perf script` (callchains) on stdin, for
perf/phases.sh. Every sample goes to exactly one phase, decided by its
whole call chain with the rules below, first match wins:

1. the kernel, by what the kernel stack is doing: LMDB's commit (the user
   stack is in mdb_txn_commit), fdatasync (the sync of an upload),
   the store's file write, create, rename or close, TCP (sockets, loopback),
   io_uring itself, and the rest of the kernel (scheduler, syscall entry,
   page faults, ...);
2. allocation: the leaf is malloc/free/calloc/realloc and friends;
3. a crypto operation anywhere in the chain (so the hashing and big-number
   work under an ECDSA verify counts as the verify);
4. X.509 and ASN.1 parsing, then hashing, then the rest of wolfSSL (TLS
   state machine, records, key schedule glue);
5. LMDB in user space, liburing, beacond's own code, then other.
"""
import argparse
import json
import re
import sys

CRYPTO = [
    ("ECDSA sign (P-256)", r"wc_ecc_sign_hash|sp_ecc_sign_256|wc_SignatureGenerate"),
    ("ECDSA verify (P-256)", r"wc_ecc_verify_hash|sp_ecc_verify_256|ConfirmSignature"),
    ("ECDH shared secret (P-256)", r"wc_ecc_shared_secret|sp_ecc_secret_gen_256"),
    ("EC key generation (P-256)", r"wc_ecc_make_key|sp_ecc_make_key_256"),
    ("X25519", r"curve25519"),
    ("RSA", r"wc_Rsa|RsaPad|RsaUnPad|sp_RsaP"),
    ("AES-GCM", r"AesGcm|AES_GCM|GHASH|GMULT|wc_Aes|AES_set|AES_encrypt|AESNI|Key_Expansion"),
    ("HKDF / HMAC", r"HKDF|Hkdf|Hmac|HMAC|DeriveKey|DeriveSecret"),
    ("random numbers (DRBG)", r"wc_RNG|Hash_DRBG|Hash_df|wc_GenerateSeed|getrandom"),
]
X509 = r"ParseCert|DecodeCert|GetASN|SetASN|ParseCertRelative|DecodeToKey|PemToDer|" \
       r"X509|Asn|ASN|GetLength|GetSequence|GetObjectId|GetAlgoId|DecodePolicy|DecodeAltNames|" \
       r"DecodeCertExtensions|GetName|ProcessPeerCerts|DoTls13Certificate|wc_GetPubX509"
HASHING = r"\bTransform\b|Sha256|Sha384|Sha512|sha256|sha512|SHA256|SHA512|HashOutput|HashInput|HashRaw|" \
          r"BuildTls13HandshakeHmac|BuildCertHashes"
ALLOC = r"^(malloc|free|calloc|realloc|cfree|__libc_(malloc|free|calloc|realloc)|_int_(malloc|free|realloc)|" \
        r"malloc_consolidate|tcache_.*|unlink_chunk|sysmalloc|wolfSSL_Malloc|wolfSSL_Free|" \
        r"wolfSSL_Realloc|XMALLOC|XFREE|__GI___libc_(malloc|free)|arena_get2)$"

KERNEL = [
    ("kernel: fdatasync of uploads", r"fdatasync|ext4_sync_file|vfs_fsync|jbd2|file_write_and_wait|"
     r"blkdev_issue_flush|io_fsync"),
    ("kernel: store file write", r"ext4_file_write|ext4_buffered_write|generic_perform_write|"
     r"ext4_da_write|iomap_file_buffered|filemap_|io_write"),
    ("kernel: store file create / rename / close", r"do_sys_openat2|ext4_create|ext4_rename|"
     r"do_renameat2|ext4_unlink|do_unlinkat|io_openat|io_renameat|io_close|__fput|ext4_release_file|"
     r"ext4_evict_inode|ext4_fallocate|linkat"),
    ("kernel: TCP and sockets (loopback)", r"tcp_|inet_|sock_|__sys_accept|do_accept|__sys_connect|"
     r"ip_|__dev_queue_xmit|net_rx_action|loopback_xmit|skb|__netif|sk_|udp_|io_recv|io_send|"
     r"io_accept|__sys_shutdown|io_shutdown"),
    ("kernel: io_uring", r"io_uring|io_submit|io_issue|__io_|io_wq|io_cqring|io_poll|io_req|"
     r"io_worker|io_wqe|io_queue|io_run_task_work|tctx_task_work"),
]


# wolfSSL's P-256 field arithmetic is assembly without unwind tables: perf
# cannot walk past it, so most of those samples do not say which operation
# they belong to. All P-256 samples (traced or not) are shared out over the
# operations by what each costs alone (tlsceiling --ops) times how often a
# full TLS 1.3 mutual handshake does it on the server: one ephemeral key,
# one shared secret, one signature (CertificateVerify), and one
# verification of the client's CertificateVerify, plus one of its
# certificate's signature by the CA when the signature cache missed
# (--sig-cache: its hits and misses over the window). An estimate, marked
# as such in the table.
UNWOUND = "P-256 arithmetic, operation not unwound"
P256_OPS = {"keygen": ("EC key generation (P-256)", 1), "ecdh": ("ECDH shared secret (P-256)", 1),
            "sign": ("ECDSA sign (P-256)", 1), "verify": ("ECDSA verify (P-256)", 2)}


def classify(frames, wolfssl_syms):
    """frames: [(sym, dso)] leaf first."""
    syms = [s for s, _ in frames]
    user = [(s, d) for s, d in frames if "kernel.kallsyms" not in d]
    in_commit = any(s.startswith("mdb_txn_commit") for s, _ in user)
    if frames and "kernel.kallsyms" in frames[0][1]:
        if in_commit:
            return "LMDB commit (kernel: its writes and sync)"
        kernel = " ".join(s for s, d in frames if "kernel.kallsyms" in d)
        for name, rx in KERNEL:
            if re.search(rx, kernel):
                return name
        return "kernel: other (scheduler, syscall entry, faults, ...)"
    if syms and re.match(ALLOC, syms[0]):
        return "allocation (malloc / free)"
    chain = " ".join(syms)
    for name, rx in CRYPTO:
        if re.search(rx, chain):
            return name
    if in_commit:
        return "LMDB commit (user space)"
    if re.search(r"\b(sp_256|L_256)", chain):
        return UNWOUND
    # the first frame that is not libc's decides the rest
    # (an inlined frame names no object: the next real frame does)
    real = [(s, d) for s, d in user if d != "inlined"]
    first = next(((s, d) for s, d in real if "libc" not in d), real[0] if real else ("", ""))
    if first[0] in wolfssl_syms or any(s in wolfssl_syms for s, _ in user[:3]):
        if re.search(X509, chain):
            return "X.509 / ASN.1 parsing"
        if re.search(HASHING, chain):
            return "hashing (SHA-2, transcript)"
        return "wolfSSL other (TLS state machine, records)"
    if re.search(HASHING, chain):
        return "hashing (SHA-2, transcript)"
    if "liblmdb" in first[1]:
        return "LMDB other (lookups, puts)"
    if "liburing" in first[1]:
        return "kernel: io_uring"
    if "beacond" in first[1] or "libisal" in first[1]:
        return "beacond's own code (HTTP, store, loop, policy)"
    if "libc" in first[1]:
        return "libc other (memcpy, string, ...)"
    return "other"


def samples(lines):
    """Yields the frames of each sample of perf script's output."""
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if not line[0].isspace():
            if frames:
                yield frames
            frames = []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
            frames.append((sym, m.group(2)))
    if frames:
        yield frames


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wolfssl-symbols", required=True)
    ap.add_argument("--handshakes", type=int, required=True)
    ap.add_argument("--cpu-s", type=float, required=True)
    ap.add_argument("--command", default="perf/phases.sh")
    ap.add_argument("--commit", default="")
    ap.add_argument("--op-costs", help="tlsceiling --ops --json output")
    ap.add_argument("--sampled", metavar="'HANDSHAKES CPU_S'",
                    help="the window perf sampled: its handshakes and beacond's CPU seconds")
    ap.add_argument("--sig-cache", metavar="'HITS MISSES'",
                    help="the signature cache's counts over the window (default: all misses)")
    a = ap.parse_args()
    verifies = float(P256_OPS["verify"][1])  # every CA signature verified
    if a.sig_cache:
        hits, misses = (int(x) for x in a.sig_cache.split())
        if hits + misses:
            verifies = 1 + misses / (hits + misses)
    per_handshake = {op: n for op, (_, n) in P256_OPS.items()}
    per_handshake["verify"] = verifies
    wolfssl = set(open(a.wolfssl_symbols).read().split())
    counts, leaves = {}, {}
    total = 0
    for frames in samples(sys.stdin):
        name = classify(frames, wolfssl)
        counts[name] = counts.get(name, 0) + 1
        total += 1
        if name.startswith(("wolfSSL other", "other")):
            key = (name, frames[0][0], frames[0][1].rsplit("/", 1)[-1], len(frames))
            leaves[key] = leaves.get(key, 0) + 1
    if not total or not a.handshakes:
        print("no samples or no handshakes", file=sys.stderr)
        sys.exit(1)
    us_total = a.cpu_s * 1e6 / a.handshakes
    if a.sampled:
        sampled_n, sampled_cpu = a.sampled.split()
        sampled_n = int(sampled_n)
        sampled_us = float(sampled_cpu) * 1e6 / max(sampled_n, 1)
    lost = counts.pop(UNWOUND, 0)
    names = [n for n, _ in P256_OPS.values()]
    traced = sum(counts.get(n, 0) for n in names)
    p256 = lost + traced
    costs = {}
    if a.op_costs:
        for line in open(a.op_costs):
            if line.strip():
                r = json.loads(line)
                costs[r["op"]] = r["us"]
    shares = {k: float(v) for k, v in counts.items()}
    weights = {P256_OPS[op][0]: us * per_handshake[op] for op, us in costs.items() if op in P256_OPS}
    split = bool(p256 and weights and sum(weights.values()))
    if split:
        for n in names:
            shares[n] = p256 * weights.get(n, 0) / sum(weights.values())
    elif lost:
        shares[UNWOUND] = lost
    print(f"Command: `{a.command}` (beacond {a.commit}); {a.handshakes:,} full TLS 1.3 mutual "
          f"handshakes with a durable 1 KiB PUT each, beacond CPU {a.cpu_s:.2f} s = "
          f"**{us_total:.0f} us per handshake and upload** (a window without perf attached)"
          + (f"; the window perf sampled: {total:,} samples over {sampled_n:,} handshakes, "
             f"{sampled_us:.0f} us each with perf's own sampling charged to beacond"
             if a.sampled else f", {total:,} samples") + ".")
    print()
    print("| phase | share of beacond's CPU | server CPU us per handshake + upload |")
    print("| --- | ---: | ---: |")
    for name, n in sorted(shares.items(), key=lambda kv: -kv[1]):
        mark = " *" if split and name in names else ""
        print(f"| {name}{mark} | {n / total * 100:.1f}% | {n / total * us_total:.0f} |")
    print()
    if split:
        alone = ", ".join(f"{op} {us:.0f} us" for op, us in costs.items())
        print(f"\\* The P-256 operations together are {p256 / total * 100:.1f}% of the samples "
              f"({p256 / total * us_total:.0f} us per handshake), measured; their split is an "
              f"estimate: {lost / total * 100:.1f}% of the samples are field arithmetic in "
              f"wolfSSL's assembly, which has no unwind tables, so perf cannot tell which "
              f"operation they belong to. The total is shared out by each operation's cost "
              f"alone on this build (`tlsceiling --ops`: {alone}) times its count per "
              f"handshake (key generation 1, shared secret 1, sign 1, verify {verifies:.2f}: "
              f"the client's CertificateVerify, and its CA's signature when the signature "
              f"cache missed).")
        print()
    # what the catch-all phases hold, for whoever refines the rules
    for key, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:12]:
        print(f"phases.py: {key[0]}: {n} samples, leaf {key[1]} ({key[2]}), {key[3]} frames",
              file=sys.stderr)


if __name__ == "__main__":
    main()
