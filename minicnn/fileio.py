"""Writing files so that nothing is lost: atomic writes, and one run at a time per run folder.

Temporary files are named ``.<target name>.<random>.<host>.<pid>.tmp``, so
that the process that wrote one can be recognised: a later write (and every
training run, for its folder) removes those whose writer died, e.g. a
process killed in the middle of a save.
"""
import contextlib
import errno
import json
import os
import re
import socket
import stat
import tempfile
import time
import uuid

HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMP_FILE = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.tmp$")


def atomic_write(path, write, mode="wb"):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The rename is atomic, so ``path`` holds either its old contents or the
    complete new ones, even if the process dies mid-write. The file gets the
    permissions a plain ``open(path, "w")`` would leave. An error names
    ``path`` (never the temporary file) and keeps its type (PermissionError,
    FileNotFoundError for a missing folder, ...); an interruption (Ctrl-C)
    stays an interruption.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cannot write a file: the path must be a str or os.PathLike, got {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, so no file can be written there", path)
    folder, name = os.path.split(os.path.abspath(path))
    remove_dead_temp_files(folder, name)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".{HOST}.{os.getpid()}.tmp")
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _plain_write_permissions(path))  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):  # interrupted after the rename: nothing left to remove
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, f"cannot write the file: {e.strerror}", path) from e  # the errno picks the subclass
        raise


def _plain_write_permissions(path):
    """Those of the existing file at ``path``, else 0666 less the process's umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def process_alive(host, pid):
    """False only when ``pid`` surely is no running process: same host, and the system says it does not exist
    or (on Linux) that it is a zombie, a process that has exited and only waits for its parent to reap it."""
    if host != HOST or os.name != "posix":  # another machine's, or no safe way to ask (os.kill would kill on Windows)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        pass
    return not _zombie(pid)


def _zombie(pid):
    """True when Linux's /proc says ``pid`` has exited but is not yet reaped (no init process in a container,
    a parent killed by an MPI abort); False where there is no /proc to ask."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return False
    # "PID (COMM) STATE ...": COMM, the program's name, may hold spaces and parentheses, so split at the last ")"
    state = stat_line[stat_line.rfind(b")") + 1:].split()[:1]
    return state in ([b"Z"], [b"X"])  # X: dead, being removed this very moment


def remove_dead_temp_files(folder, target=None):
    """Delete the temporary files in ``folder`` (those of ``target`` only, if given) whose writer has died."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMP_FILE.match(name)
        if not match or (target is not None and not name.startswith(f".{target}.")):
            continue
        if not process_alive(match["host"], int(match["pid"])):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


class RunLock:
    """The exclusive use of a run folder by one process: ``with RunLock(folder): ...``.

    The lock is the file ``folder/.minicnn.lock``, created atomically
    (``O_CREAT | O_EXCL``) and holding its owner's host and PID. While that
    process lives, acquiring raises ``FileExistsError`` naming it; once it
    has died (killed, crashed; a zombie, exited but not reaped, too) its lock
    is taken over, so no run leaves a folder locked for good. A lock from
    another host cannot be checked and counts as held: delete the file if no
    run uses the folder any more.

    Re-entrant within a process (the command line holds it around the
    Trainer, which takes it too). Taking it also removes the temporary files
    that dead processes left in the folder.
    """

    NAME = ".minicnn.lock"
    _held = {}  # real path of a lock this process holds -> (its token, how many times it is held)

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, self.NAME)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False

    def acquire(self):
        key = os.path.realpath(self.path)
        if key in RunLock._held:
            token, count = RunLock._held[key]
            RunLock._held[key] = (token, count + 1)
            return self
        token = json.dumps({"host": HOST, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "id": uuid.uuid4().hex})
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_dead()
                continue
            except OSError as e:
                raise OSError(e.errno, f"cannot write into the run folder: {e.strerror}", self.folder) from e
            with os.fdopen(fd, "w") as f:
                f.write(token)
                f.flush()
                os.fsync(f.fileno())
            RunLock._held[key] = (token, 1)
            remove_dead_temp_files(self.folder)
            return self
        raise FileExistsError(errno.EEXIST, "could not take the run folder's lock (other runs keep taking it)", self.path)

    def release(self):
        key = os.path.realpath(self.path)
        if key not in RunLock._held:
            return
        token, count = RunLock._held.pop(key)
        if count > 1:
            RunLock._held[key] = (token, count - 1)
            return
        with contextlib.suppress(OSError):
            with open(self.path) as f:
                if f.read() != token:
                    return  # not ours any more: leave it alone
            os.unlink(self.path)

    def _take_over_if_dead(self):
        """Remove the existing lock if its process is dead; raise FileExistsError if it is alive."""
        try:
            with open(self.path) as f:
                text = f.read()
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        try:
            holder = json.loads(text)
            host, pid = str(holder["host"]), int(holder["pid"])
        except (ValueError, KeyError, TypeError):
            if age < 2:  # being written this very moment
                time.sleep(0.05)
                return
            host, pid = HOST, None  # unreadable for a while: left by a writer that died
        if pid is not None and process_alive(host, pid):
            raise FileExistsError(errno.EEXIST, f"the run folder {self.folder!r} is in use by another run (process {pid} "
                                  f"on {host}, since {holder.get('started', '?')}); wait for it to end, or choose "
                                  "another folder (delete the lock file only if no run uses the folder)", self.path)
        # Dead: move it aside under a name that is ours alone (only one taker can), then check that what
        # we moved is the dead lock and not one a faster taker has just created.
        aside = os.path.join(self.folder, f"{self.NAME}.{uuid.uuid4().hex[:8]}.{HOST}.{os.getpid()}.tmp")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        with open(aside) as f:
            moved = f.read()
        if moved != text:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)  # put the live lock back
        os.unlink(aside)
