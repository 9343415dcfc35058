"""One case that passes and one that skips."""
import pytest


def test_passes():
    assert 1 + 1 == 2


def test_skips():
    pytest.skip("skipped on purpose")
