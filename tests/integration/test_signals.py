"""SIGTERM, SIGINT and SIGHUP are taken by beacond's main thread alone (in
sigtimedwait): every other thread blocks them. A thread that did not (the
store's writer once started before the mask was set) takes a SIGTERM that
arrives while the main thread is between waits and dies of it: "exited
with status -15" instead of a clean stop, most often over DPDK, where the
main thread shares its core with a polling worker."""

from pathlib import Path

import signal

# SigBlk in /proc/PID/task/TID/status: bit N-1 is signal N.
MUST_BLOCK = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}


def blocked(status_text):
    line = next(ln for ln in status_text.splitlines() if ln.startswith("SigBlk:"))
    mask = int(line.split()[1], 16)
    return {s for s in MUST_BLOCK if mask & (1 << (s - 1))}


def test_every_other_thread_blocks_stop_signals(server):
    pid = server.proc.pid
    tasks = [t for t in Path(f"/proc/{pid}/task").iterdir() if t.name != str(pid)]
    assert len(tasks) >= 3, "expected the store writer, workers and the control thread"
    for t in tasks:
        comm = (t / "comm").read_text().strip()
        missing = MUST_BLOCK - blocked((t / "status").read_text())
        assert not missing, f"thread {t.name} ({comm}) does not block {sorted(missing)}"
