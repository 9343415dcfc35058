"""scripts/setup.sh takes the Debian mirror for trixie's wolfSSL source from
the machine's own apt sources (debian_mirror SUITE), so it works behind a
mirror or a proxy. Only the extraction is run here, on fake apt directories
(APT_ETC): setup.sh itself is never run by the tests."""

import subprocess

import pytest

from helpers import REPO

SETUP = REPO / "scripts" / "setup.sh"


def mirror(etc, suite="bookworm"):
    """(exit status, printed URI) of debian_mirror SUITE with APT_ETC=etc."""
    p = subprocess.run(["bash", "-c", 'source "$1" && debian_mirror "$2"', "mirror-test",
                        str(SETUP), suite],
                       env={"APT_ETC": str(etc), "PATH": "/usr/bin:/bin"},
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.stderr == "", p.stderr
    return p.returncode, p.stdout.strip()


def apt_etc(tmp_path, files):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for rel, text in files.items():
        (etc / rel).write_text(text)
    return etc


DEB822_MIRROR = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.corp.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.corp.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_sources(tmp_path):
    etc = apt_etc(tmp_path, {"sources.list.d/debian.sources": DEB822_MIRROR})
    assert mirror(etc) == (0, "http://mirror.corp.example/debian")
    assert mirror(etc, "bookworm-security") == (0, "http://mirror.corp.example/debian-security")


def test_one_line_list_with_options(tmp_path):
    etc = apt_etc(tmp_path, {"sources.list": (
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://proxy.example:3142/debian bookworm main\n"
        "deb http://proxy.example:3142/security bookworm-security main non-free\n")})
    assert mirror(etc) == (0, "https://proxy.example:3142/debian")
    assert mirror(etc, "bookworm-security") == (0, "http://proxy.example:3142/security")


def test_skips_what_does_not_serve_main_of_the_suite(tmp_path):
    """Another suite, a component list without main, a disabled stanza, a
    cdrom: source, and a third-party repository come before the one that
    counts."""
    etc = apt_etc(tmp_path, {
        "sources.list": ("deb cdrom:[Debian 12]/ bookworm main\n"
                         "deb http://other.example/debian bullseye main\n"
                         "deb http://contrib-only.example/debian bookworm contrib\n"),
        "sources.list.d/a-vendor.list": "deb https://vendor.example/apt cloud-sdk-bookworm main\n",
        "sources.list.d/b-off.sources": ("Types: deb\nURIs: http://off.example/debian\n"
                                         "Suites: bookworm\nComponents: main\nEnabled: no\n"),
        "sources.list.d/c-debian.sources": (
            "Types: deb deb-src\nURIs: http://first.example/debian\n"
            " http://second.example/debian\nSuites: bookworm\nComponents: contrib\n main\n"),
    })
    assert mirror(etc) == (0, "http://first.example/debian")


@pytest.mark.parametrize("files", [
    {},
    {"sources.list": "deb http://deb.example/debian bullseye main\n"},
    {"sources.list.d/x.sources.disabled": ("Types: deb\nURIs: http://x.example/debian\n"
                                           "Suites: bookworm\nComponents: main\n")},
])
def test_nothing_found_returns_1(tmp_path, files):
    """setup.sh falls back to deb.debian.org on status 1."""
    etc = apt_etc(tmp_path, files)
    assert mirror(etc) == (1, "")


def test_setup_uses_the_found_mirror():
    """The trixie source stanzas are written from the found URIs, with
    deb.debian.org only as the fallback."""
    text = SETUP.read_text()
    assert "mirror=$(debian_mirror bookworm) || mirror=http://deb.debian.org/debian" in text
    stanza = text[text.index("cat > \"$apt_state/etc/trixie.sources\""):]
    stanza = stanza[:stanza.index("\nSRC\n")]
    assert "URIs: $mirror\nSuites: trixie\n" in stanza
    assert "URIs: $security\nSuites: trixie-security\n" in stanza
    assert "deb.debian.org" not in stanza
