"""Does not import: pytest reports a collection error and exits 2."""
import module_that_does_not_exist  # noqa: F401


def test_never_runs():
    pass
