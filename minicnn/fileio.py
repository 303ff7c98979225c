"""Writing files so that an interruption never leaves a half-written one behind."""
import os
import tempfile


def atomic_write(path, write, mode="wb"):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The rename is atomic, so ``path`` holds either its old contents or the
    complete new ones, even if the process dies mid-write.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
