import os
import stat

import pytest

from minicnn.fileio import atomic_write

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def permissions(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_leaves_the_permissions_of_a_plain_write(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new.txt", lambda f: f.write("x"), mode="w")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(previous)
    assert permissions(tmp_path / "new.txt") == permissions(plain) == 0o640

    existing = tmp_path / "existing.txt"
    existing.write_text("old")
    existing.chmod(0o604)
    atomic_write(existing, lambda f: f.write("new"), mode="w")
    assert existing.read_text() == "new" and permissions(existing) == 0o604
