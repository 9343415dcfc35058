"""What `meson install` puts on a machine, checked as an operator meets it:
the unit passes systemd-analyze verify, the sysusers and tmpfiles snippets
make the user and directories the unit expects, the unit's ExecReload
fails on a refused reload, and the man pages render and name every
configuration key, beaconctl command and beacond option."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import BEACOND, BEACONCTL, REPO

BUILD = BEACOND.parent


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    p = run(["meson", "install", "-C", str(BUILD), "--no-rebuild", "--destdir", str(dest)])
    assert p.returncode == 0, p.stdout + p.stderr
    prefix = dest / "usr/local"
    return {"dest": dest, "prefix": prefix,
            "unit": prefix / "lib/systemd/system/beacond.service",
            "sysusers": prefix / "lib/sysusers.d/beacond.conf",
            "tmpfiles": prefix / "lib/tmpfiles.d/beacond.conf",
            "man": prefix / "share/man"}


def unit_lines(path, key):
    return [line.split("=", 1)[1] for line in path.read_text().splitlines()
            if line.startswith(key + "=")]


def test_unit_verifies(installed, tmp_path):
    """systemd-analyze verify reads the unit as systemd would; its binary
    paths are pointed at the installed tree, and MANPATH at its man pages
    (verify checks that both exist)."""
    unit = tmp_path / "beacond.service"
    bindir = str(installed["prefix"] / "bin")
    unit.write_text(installed["unit"].read_text().replace("/usr/local/bin", bindir))
    p = run(["systemd-analyze", "verify", str(unit)],
            env=dict(os.environ, MANPATH=str(installed["man"])))
    assert p.returncode == 0 and not p.stderr.strip(), p.stdout + p.stderr


def test_sysusers_and_tmpfiles_make_what_the_unit_runs_as(installed, tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    p = run(["systemd-sysusers", f"--root={root}", "-"], input=installed["sysusers"].read_text())
    assert p.returncode == 0, p.stderr
    users = {l.split(":")[0]: l.split(":") for l in (root / "etc/passwd").read_text().splitlines()}
    unit_user = unit_lines(installed["unit"], "User")[0]
    assert unit_user in users, f"sysusers made {list(users)}, the unit runs as {unit_user}"
    uid, gid = int(users[unit_user][2]), int(users[unit_user][3])
    p = run(["systemd-tmpfiles", f"--root={root}", "--create", "-"],
            input=installed["tmpfiles"].read_text())
    assert p.returncode == 0, p.stderr
    for rel in unit_lines(installed["unit"], "ReadWritePaths")[0].split():
        st = (root / rel.lstrip("/")).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o750), (rel, st)
    conf_dir = (root / "etc/beacond").stat()
    assert (conf_dir.st_uid, conf_dir.st_gid, conf_dir.st_mode & 0o7777) == (0, gid, 0o750)


def test_exec_reload_fails_on_a_refused_reload(installed, start_server, pki, tmp_path):
    """systemctl reload runs ExecReload: it must exit non-zero when beacond
    refuses the reload, so `systemctl reload` fails instead of lying."""
    issuers = tmp_path / "issuers"
    shutil.copytree(Path(pki) / "issuers", issuers)
    srv = start_server({"tls": {"issuers": str(issuers)}})
    (cmd,) = unit_lines(installed["unit"], "ExecReload")
    argv = cmd.replace("/usr/local/bin/beaconctl", str(BEACONCTL)) \
              .replace("/run/beacond/control.sock", str(srv.control_socket)).split()
    ok = run(argv)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for f in issuers.iterdir():
        f.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    refused = run(argv)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "issuers" in (refused.stdout + refused.stderr), refused.stdout + refused.stderr


def man_text(installed, page, section):
    path = installed["man"] / f"man{section}" / f"{page}.{section}"
    assert path.exists(), f"{path} not installed"
    p = run(["man", "--warnings", "-l", str(path)], env={"MANWIDTH": "200", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert not p.stderr.strip(), f"{page}({section}) renders with warnings:\n{p.stderr}"
    return re.sub(r".\x08", "", p.stdout)


def test_beacond_conf_5_names_every_key(installed):
    text = man_text(installed, "beacond.conf", 5)
    keys, section = [], None
    for line in (REPO / "config/beacond.conf").read_text().splitlines():
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
            assert f"[{section}]" in text, f"no [{section}] in beacond.conf(5)"
        m = re.match(r"^(\w+) =", line)
        if m and section:
            keys.append(m.group(1))
    assert len(keys) > 30, keys
    missing = [k for k in keys if not re.search(rf"(^|\s){k}(,|\s|$)", text, re.M)]
    assert not missing, f"keys of config/beacond.conf missing from beacond.conf(5): {missing}"


def test_beaconctl_8_names_every_command(installed):
    text = " ".join(man_text(installed, "beaconctl", 8).split())
    # The short usage lists the command table; --help is the manual.
    usage = run([str(BEACONCTL)])
    assert usage.returncode == 2, usage
    commands = []
    for line in (usage.stdout + usage.stderr).split("commands:", 1)[1].splitlines():
        words = line.split()
        if not words or not line.startswith("  "):
            continue
        noun = words[0]
        verb = words[1] if len(words) > 1 and re.fullmatch(r"[a-z]+", words[1]) else None
        commands.append(f"{noun} {verb}" if verb else noun)
    assert len(commands) >= 10, commands
    missing = [c for c in commands if c not in text]
    assert not missing, f"beaconctl commands missing from beaconctl(8): {missing}"


def test_beacond_8_names_every_option(installed):
    text = man_text(installed, "beacond", 8)
    usage = run([str(BEACOND), "-h"])
    assert usage.returncode == 0, usage.stderr
    options = sorted(set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", usage.stdout)))
    assert "-c" in options and "-t" in options, usage.stdout
    missing = [o for o in options if o not in text]
    assert not missing, f"beacond options missing from beacond(8): {missing}"
