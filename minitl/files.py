"""Writing files safely and reading their digests.

Every file minitl writes (weights, checkpoints, run records, pictures) goes through
``atomic_write``: a temporary file beside the target, synced, then renamed, so an
interrupted or failed write never leaves a partial file under the final name. A
process killed while writing (kill -9, a power cut) leaves its temporary file, named
``.NAME.HOST.PID.XXXXXXXX.tmp``; the next write into that folder removes the ones whose
process, on this host, is gone (`remove_stale_temporaries`).
"""
import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

CHUNK = 1 << 20  # files are hashed in 1 MiB blocks
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
NO_SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file is larger than the file system allows"}
TEMPORARY = re.compile(r"\..+\.([0-9a-f]{8})\.([0-9]+)\.[a-z0-9_]{8}\.tmp")  # atomic_write's names


def process_running(pid):
    """Whether a process of this number runs on this host."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder):
    """Delete the temporary files that ``atomic_write`` left in ``folder`` when its process
    was killed: only names of its own pattern, made on this host by a process that is no
    longer running. Returns the paths deleted."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:  # no folder yet, or unreadable: nothing of ours to clean
        return removed
    for name in names:
        match = TEMPORARY.fullmatch(name)
        if match and match[1] == HOST and not process_running(int(match[2])):
            try:
                os.unlink(Path(folder) / name)
                removed.append(Path(folder) / name)
            except OSError:
                pass
    return removed


def disk_full_error(error, path):
    """A DiskFullError saying that ``path`` could not be written when ``error`` (an OSError, also
    as h5py words it: '... errno = 28, ...') means no space or quota is left; else None."""
    from minitl.errors import DiskFullError
    code = error.errno if isinstance(error, OSError) else None
    if code not in NO_SPACE and isinstance(error, (OSError, RuntimeError)):
        found = re.search(r"errno = (\d+)", str(error))
        code = int(found[1]) if found else None
    if code not in NO_SPACE:
        return None
    return DiskFullError(f"cannot write {path}: {NO_SPACE[code]} ({os.strerror(code)})")


def access_error(error, path, advice=""):
    """A FileAccessError saying that ``path`` could not be written when ``error`` is a
    PermissionError or EROFS; else None."""
    from minitl.errors import FileAccessError
    if isinstance(error, PermissionError):
        why = f"this user may not write in {Path(error.filename or path).parent}"
    elif isinstance(error, OSError) and error.errno == errno.EROFS:
        why = "the file system is read-only"
    else:
        return None
    return FileAccessError(f"cannot write {path}: {why}{advice}")


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path``; on success it is synced and renamed to ``path``.

    An interrupted or failed write never leaves a partial file under the final name, nor its
    temporary file; a write that finds no space left is a DiskFullError. The file gets the
    usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "cannot write a file: a folder has its name", str(path))
    remove_stale_temporaries(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise disk_full_error(e, path) or access_error(e, path) or e
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        full = disk_full_error(e, path)
        if full is not None:
            raise full from None
        raise


def link_or_copy(source, path):
    """Make ``path`` a hard link to ``source`` (a copy where the file system has no hard links
    between them), replacing what was there in one rename."""
    with atomic_write(path) as tmp:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def strict_json(obj):
    """``obj`` with every NaN or infinite float replaced by None, so that it is strict JSON
    (``NaN`` and ``Infinity`` are not JSON: browsers, jq and most languages reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path, obj):
    """Write ``obj`` as indented strict JSON, atomically; NaN and infinities become null."""
    text = json.dumps(strict_json(obj), indent=1, allow_nan=False)
    with atomic_write(path) as tmp:
        tmp.write_text(text)


class _KeepFirstError:
    """The file that HDF5 writes through: once a write fails (a full disk), the later writes
    are dropped and the first error is kept, so HDF5 still closes the file cleanly (it would
    otherwise keep it open and retry at exit) and the error is raised after."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        if self.error is None:
            try:
                return self.file.write(data)
            except OSError as e:
                self.error = e
        return memoryview(data).nbytes

    def __getattr__(self, name):  # read, readinto, seek, tell, truncate, flush
        return getattr(self.file, name)


def write_h5(path, fill):
    """Write an HDF5 file atomically: ``fill(f)`` gets the open ``h5py.File``."""
    import h5py
    with atomic_write(path) as tmp, open(tmp, "w+b") as file:
        writes = _KeepFirstError(file)
        with h5py.File(writes, "w") as f:
            fill(f)
        if writes.error is not None:
            raise writes.error


def hash_file(path, algorithm="sha256"):
    """A ``hashlib`` object that has read the whole file (call ``update`` to go on)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h


def file_digest(path, algorithm="sha256"):
    """The hex digest of a file ('sha256', 'md5', or any name ``hashlib.new`` knows)."""
    return hash_file(path, algorithm).hexdigest()
