"""beacond's own command line: --help, --version (also logged at
start-up), a usage error for an unknown option, and a start without -c
that says it runs the embedded demo configuration."""
import re
import subprocess

from helpers import BEACOND, REPO


def project_version():
    m = re.search(r"version\s*:\s*'([^']+)'", (REPO / "meson.build").read_text())
    return m.group(1)


def run(*args, cwd=None):
    return subprocess.run([str(BEACOND), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout == f"beacond {project_version()}\n", p


def test_help_lists_every_option():
    p = run("--help")
    assert p.returncode == 0, p
    for opt in ("-c FILE", "-t", "-v", "--help", "--version"):
        assert opt in p.stdout, (opt, p.stdout)


def test_unknown_option_is_a_usage_error():
    p = run("--bogus")
    assert p.returncode == 2, p
    assert "unrecognized option '--bogus'" in p.stderr and "usage: beacond" in p.stderr, p.stderr


def test_version_logged_at_start_up(server):
    assert f"beacond[info]: beacond {project_version()}, {server.conf}" in server.stderr(), \
        server.stderr()


def test_no_config_says_demo(tmp_path):
    p = run("-t", cwd=tmp_path)
    assert "no -c: the embedded demo configuration (files under .demo/)" in p.stderr, p.stderr
