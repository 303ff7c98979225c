"""Host memory: glibc's malloc told to keep freed memory for reuse, once per process.

By default glibc gives every block above 32 MiB straight back to the system,
so each training step's column matrices and activations cost a page fault
per 4 KiB, again and again: 10-15% of a CPU training step, and more in
evaluation. The first NumPy backend of a process calls
:func:`keep_freed_memory` (set ``$MINICNN_KEEP_FREED_MEMORY=0`` before
importing minicnn to opt out).
"""
import ctypes
import os

_tuned = False


def keep_freed_memory():
    """Once per process: make glibc's malloc serve large blocks from its heap and keep freed memory."""
    global _tuned
    if _tuned or os.environ.get("MINICNN_KEEP_FREED_MEMORY", "1") == "0":
        return
    _tuned = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)          # M_MMAP_MAX: no mmap per large block
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass  # not glibc (macOS, Windows, musl): nothing to tune
