"""The NVMe tier: one file per tensor in a per-run folder, written and read by a thread pool.

Each file starts with a 4 KiB header (magic, run id, payload size, CRC32 of the payload, write generation), so a file
left by a killed run, or a torn write, is never read as valid: reads check the run id and the checksum. Files are
opened with O_DIRECT where the filesystem allows it (reads and writes then bypass the page cache: the figures are the
disk's, not RAM's); elsewhere (tmpfs, some overlay filesystems refuse it) buffered I/O followed by
``posix_fadvise(DONTNEED)``, which drops the cached pages already written back; the reason is kept in ``io_mode``.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import struct
import threading
import uuid
import zlib
from hashlib import sha1
from pathlib import Path

import torch
from transformers.utils import logging

from .pools import ALIGN

logger = logging.get_logger(__name__)

MAGIC = b"HFEXTTC1"
_HEADER = struct.Struct("<8s16sQIQ")  # magic, run id, payload bytes, crc32, generation
DIR_PREFIX = "hf_ext_tiered_"
OWNER_FILE = "owner.json"


class TieredCacheError(RuntimeError):
    """The tiered cache cannot continue (a full disk, a corrupt or stale file); model weights stay in memory."""


def check_nvme_path(path: str | os.PathLike, needed_bytes: int) -> Path:
    """Fail before training when ``path`` is not a writable folder with ``needed_bytes`` free.

    Raises:
        ValueError: not a folder, not writable, or too small (the message names the sizes).
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"nvme_path {str(p)!r} cannot be created: {e.strerror}.") from e
    if not p.is_dir():
        raise ValueError(f"nvme_path {str(p)!r} is not a folder.")
    probe = p / f".hf_ext_probe_{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"nvme_path {str(p)!r} is not writable: {e.strerror}.") from e
    free = shutil.disk_usage(p).free
    if free < needed_bytes:
        raise ValueError(f"nvme_path {str(p)!r} has {free / 2**30:.2f} GiB free, the NVMe tier needs "
                         f"{needed_bytes / 2**30:.2f} GiB: free space, raise device_budget / host_budget, or pick "
                         "another folder.")
    return p


def remove_stale_runs(path: Path) -> int:
    """Remove our own run folders (marked by ``owner.json``) whose process is gone; returns how many."""
    n = 0
    for d in path.glob(DIR_PREFIX + "*"):
        try:
            pid = json.loads((d / OWNER_FILE).read_text())["pid"]
        except (OSError, ValueError, KeyError):
            continue  # not ours, or being created: leave it
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NvmeStore:
    """Files of one run under ``<path>/hf_ext_tiered_<run id>/``.

    Args:
        path: the NVMe folder (checked with :func:`check_nvme_path` first).
        direct_io: try O_DIRECT.
        checksum: "crc32" or "none".
    """

    def __init__(self, path: str | os.PathLike, direct_io: bool = True, checksum: str = "crc32"):
        base = Path(path)
        stale = remove_stale_runs(base)
        if stale:
            logger.warning("Removed %d tiered-cache folder(s) left by killed runs under %s.", stale, base)
        self.run_id = uuid.uuid4().bytes
        self.root = base / f"{DIR_PREFIX}{self.run_id.hex()[:12]}"
        self.root.mkdir()
        (self.root / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "run_id": self.run_id.hex()}))
        self.checksum = checksum
        self._fds: dict[str, int] = {}
        self._gen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.direct, self.io_mode = self._probe_direct(direct_io)
        self.fault_after_writes: int | None = None  # tests: raise ENOSPC after this many writes
        self.writes = 0

    def _probe_direct(self, wanted: bool) -> tuple[bool, str]:
        if not wanted:
            return False, "buffered + fadvise(DONTNEED) (direct_io=False)"
        if not hasattr(os, "O_DIRECT"):
            return False, "buffered + fadvise(DONTNEED) (no O_DIRECT on this OS)"
        probe = self.root / ".probe"
        try:
            fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
            try:
                os.pwritev(fd, [self._header_buf()], 0)
            finally:
                os.close(fd)
            return True, "O_DIRECT"
        except OSError as e:
            return False, f"buffered + fadvise(DONTNEED) (O_DIRECT refused by this filesystem: {e.strerror})"
        finally:
            probe.unlink(missing_ok=True)

    def _header_buf(self) -> mmap.mmap:
        buf = getattr(self._local, "hdr", None)
        if buf is None:  # page-aligned, as O_DIRECT requires; one per thread, allocated once
            buf = self._local.hdr = mmap.mmap(-1, ALIGN)
        return buf

    def _fd(self, key: str) -> int:
        with self._lock:
            fd = self._fds.get(key)
            if fd is None:
                name = sha1(key.encode()).hexdigest()[:20] + ".bin"
                flags = os.O_RDWR | os.O_CREAT | (os.O_DIRECT if self.direct else 0)
                fd = self._fds[key] = os.open(self.root / name, flags, 0o600)
            return fd

    def write(self, key: str, raw: torch.Tensor, nbytes: int) -> None:
        """Write the first ``nbytes`` of ``raw`` (a 4 KiB-aligned, 4 KiB-padded CPU uint8 slot) for ``key``."""
        mv = memoryview(raw.numpy())
        with self._lock:
            self.writes += 1
            gen = self._gen[key] = self._gen.get(key, 0) + 1
            if self.fault_after_writes is not None and self.writes > self.fault_after_writes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        crc = zlib.crc32(mv[:nbytes]) if self.checksum == "crc32" else 0
        hdr = self._header_buf()
        hdr.seek(0)
        hdr.write(_HEADER.pack(MAGIC, self.run_id, nbytes, crc, gen))
        fd = self._fd(key)
        done = os.pwritev(fd, [hdr, mv], 0)
        if done != ALIGN + len(mv):
            raise OSError(errno.ENOSPC, f"short write of {key!r} ({done} of {ALIGN + len(mv)} bytes)")
        if not self.direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def read(self, key: str, raw: torch.Tensor, nbytes: int) -> None:
        """Read ``key`` into ``raw``; raises :class:`TieredCacheError` on a stale, foreign or corrupt file."""
        mv = memoryview(raw.numpy())
        hdr = self._header_buf()
        fd = self._fd(key)
        got = os.preadv(fd, [hdr, mv], 0)
        magic, run, n, crc, gen = _HEADER.unpack_from(hdr, 0)
        if got < ALIGN + nbytes or magic != MAGIC or run != self.run_id or n != nbytes:
            raise TieredCacheError(f"NVMe file of {key!r} is missing, stale (another run) or truncated.")
        if gen != self._gen.get(key):
            raise TieredCacheError(f"NVMe file of {key!r} holds write {gen}, expected {self._gen.get(key)}.")
        if self.checksum == "crc32" and zlib.crc32(mv[:nbytes]) != crc:
            raise TieredCacheError(f"NVMe file of {key!r} fails its checksum (torn or corrupt write).")
        if not self.direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def has(self, key: str) -> bool:
        return key in self._gen

    def close(self) -> None:
        """Close and delete every file of this run (the caller has stopped its I/O threads)."""
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        shutil.rmtree(self.root, ignore_errors=True)
