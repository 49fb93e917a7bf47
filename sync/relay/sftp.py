"""The relay's SFTP subsystem: one jail per authenticated site (paramiko adapter).

Theory of operation. Paths are parsed by :mod:`sync.relay.jail`; the directory on disk is
chosen from the *authenticated* site, never from the path, so no path can reach another
site's files. Uploads are written to ``NAME.partial`` (resumable: opening without O_TRUNC
keeps what is there), capped per file and per site while writing (THREATS B8), and handed
to the guard by the one rename allowed, ``NAME.partial`` → ``NAME.bundle``, which moves the
file atomically into quarantine. A site's usage (bytes and files in upload, inbox and
quarantine) is scanned at most every ``USAGE_TTL`` seconds per connection and kept up to
date with what the connection itself writes and removes; what other connections and the
guard did meanwhile is seen at the next scan, and a quota refusal is always confirmed by a
fresh scan first (so a stale figure can let a site overrun by one second's uploads, never
refuse it wrongly). Inbox files can be read and deleted; reading one to its
end and deleting it are audit events. Nothing else (mkdir, symlink, chmod...) is allowed.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from sync.relay.config import Limits
from sync.relay.guard import RelayPaths, new_quarantine_name
from sync.relay.jail import Area, JailError, JailPath, finish_rename, parse, upload_target

# Events for the guard thread: (kind, site, name).
Notify = Callable[[str, str, str], None]
USAGE_TTL = 1.0  # seconds a connection trusts its last scan of the site's usage


class SiteSession:
    """What one authenticated connection may touch, and its transfer-rate watchdog."""

    def __init__(self, site: str, paths: RelayPaths, limits: Limits, notify: Notify) -> None:
        self.site = site
        self.paths = paths
        self.limits = limits
        self.notify = notify
        self.lock = threading.Lock()
        self.open_handles = 0
        self.moved = 0  # bytes read or written, for the minimum-rate watchdog (B9)
        self._usage: tuple[int, int] | None = None  # (bytes, files), as last scanned + ours
        self._scanned = 0.0
        paths.make_site(site)

    def cached_usage(self) -> tuple[int, int]:
        """:meth:`usage`, scanned at most every USAGE_TTL seconds, plus our own changes."""
        now = time.monotonic()
        with self.lock:
            usage = self._usage
            if usage is not None and now - self._scanned < USAGE_TTL:
                return usage
        return self.rescan()

    def rescan(self) -> tuple[int, int]:
        usage = self.usage()
        with self.lock:
            self._usage, self._scanned = usage, time.monotonic()
        return usage

    def adjust(self, size: int, files: int) -> None:
        """Our own change to the site's usage: bytes and files added (or removed)."""
        with self.lock:
            if self._usage is not None:
                self._usage = (self._usage[0] + size, self._usage[1] + files)

    def progress(self, n: int) -> None:
        with self.lock:
            self.moved += n

    def opened(self, delta: int) -> None:
        with self.lock:
            self.open_handles += delta

    def dir(self, area: Area) -> Path:
        return {
            Area.UPLOAD: self.paths.upload(self.site),
            Area.INBOX: self.paths.inbox(self.site),
            Area.REJECTED: self.paths.rejected(self.site),
        }[area]

    def usage(self) -> tuple[int, int]:
        """Bytes and files this site holds on the relay (upload, inbox, quarantine)."""
        total = files = 0
        for d in (
            self.paths.upload(self.site),
            self.paths.inbox(self.site),
            self.paths.quarantine(self.site),
        ):
            for e in os.scandir(d):
                try:
                    if e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
                        files += 1
                except FileNotFoundError:  # the guard moved it meanwhile
                    continue
        return total, files


def _attrs(path: Path, name: str | None = None) -> paramiko.SFTPAttributes:
    st = os.lstat(path)
    a = paramiko.SFTPAttributes.from_stat(st, name or path.name)
    a.st_uid = a.st_gid = 0
    return a


def _dir_attrs(name: str) -> paramiko.SFTPAttributes:
    a = paramiko.SFTPAttributes()
    a.filename = name
    a.st_mode = stat.S_IFDIR | 0o500
    a.st_size = 0
    a.st_uid = a.st_gid = 0
    a.st_mtime = a.st_atime = int(time.time())
    return a


class UploadHandle(paramiko.SFTPHandle):
    def __init__(self, session: SiteSession, path: Path, flags: int) -> None:
        super().__init__(flags)
        self.session = session
        self.path = path
        mode = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if flags & os.O_TRUNC else 0)
        used, files = session.cached_usage()  # before the open: without a new file
        try:
            old = os.lstat(path).st_size
            existed = True
        except FileNotFoundError:
            old, existed = 0, False
        self.fd = os.open(path, mode | os.O_NOFOLLOW, 0o600)
        try:
            self.size = os.fstat(self.fd).st_size
            files += 0 if existed else 1
            session.adjust(self.size - old, 0 if existed else 1)
            self.others = used - old
            if files > session.limits.quota_files:  # confirm with a fresh scan
                used, files = session.rescan()
                self.others = used - self.size
        except OSError:
            os.close(self.fd)
            raise
        if files > session.limits.quota_files:
            os.close(self.fd)
            if not existed:  # a refused upload leaves nothing behind
                path.unlink(missing_ok=True)
                session.adjust(0, -1)
            raise JailError(f"quota: {files} files held, limit {session.limits.quota_files}")
        self.rescanned = False
        session.opened(+1)

    def write(self, offset: int, data: bytes) -> int:  # type: ignore[override]
        end = offset + len(data)
        limits = self.session.limits
        if end > limits.max_bundle_bytes:
            return SFTP_PERMISSION_DENIED  # B8: cut at the cap, nothing past it is stored
        if self.others + end > limits.quota_bytes and not self.rescanned:
            self.rescanned = True  # confirm with a fresh scan (once per file)
            self.others = self.session.rescan()[0] - os.fstat(self.fd).st_size
        if self.others + end > limits.quota_bytes:
            return SFTP_PERMISSION_DENIED
        os.pwrite(self.fd, data, offset)
        if end > self.size:
            self.session.adjust(end - self.size, 0)
            self.size = end
        self.session.progress(len(data))
        return SFTP_OK

    def stat(self) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.fd), self.path.name)

    def close(self) -> None:
        if self.fd >= 0:
            # No fsync here: the guard makes the data durable before it records a release,
            # off the uploader's critical path (an fsync per upload halved the bundle rate).
            os.close(self.fd)
            self.fd = -1
            self.session.opened(-1)
        super().close()


class ReadHandle(paramiko.SFTPHandle):
    def __init__(self, session: SiteSession, jp: JailPath, path: Path) -> None:
        super().__init__(os.O_RDONLY)
        self.session = session
        self.jp = jp
        self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        self.size = os.fstat(self.fd).st_size
        self.high = 0
        session.opened(+1)

    def read(self, offset: int, length: int) -> bytes | int:
        data = os.pread(self.fd, length, offset)
        self.high = max(self.high, offset + len(data))
        self.session.progress(len(data))
        return data

    def stat(self) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.fd), self.jp.name or "")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.session.opened(-1)
            if self.jp.area is Area.INBOX and self.jp.name and self.high >= self.size:
                self.session.notify("fetched", self.session.site, self.jp.name)
        super().close()


class RelaySFTP(paramiko.SFTPServerInterface):
    """Built per SFTP channel by paramiko; ``server`` is our authenticated ServerInterface."""

    def __init__(self, server: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.session: SiteSession = server.session

    def _file(self, path: str | bytes) -> tuple[JailPath, Path]:
        jp = parse(path)
        if jp.name is None or jp.area is Area.ROOT:
            raise JailError("not a file")
        return jp, self.session.dir(jp.area) / jp.name

    def canonicalize(self, path: str | bytes) -> str:
        try:
            return parse(path).display
        except JailError:
            return "/"

    def list_folder(self, path: str | bytes) -> list[paramiko.SFTPAttributes] | int:
        try:
            jp = parse(path)
        except JailError:
            return SFTP_NO_SUCH_FILE
        if jp.name is not None:
            return SFTP_NO_SUCH_FILE
        if jp.area is Area.ROOT:
            return [_dir_attrs(a.value) for a in (Area.UPLOAD, Area.INBOX, Area.REJECTED)]
        d = self.session.dir(jp.area)
        return [_attrs(d / n) for n in sorted(os.listdir(d)) if not n.startswith(".")]

    def stat(self, path: str | bytes) -> paramiko.SFTPAttributes | int:
        try:
            jp = parse(path)
            if jp.name is None:
                return _dir_attrs(jp.area.value or "/")
            _, p = self._file(path)
            return _attrs(p)
        except (JailError, FileNotFoundError):
            return SFTP_NO_SUCH_FILE

    lstat = stat

    def open(
        self, path: str | bytes, flags: int, attr: paramiko.SFTPAttributes
    ) -> paramiko.SFTPHandle | int:
        try:
            jp, p = self._file(path)
            if flags & (os.O_WRONLY | os.O_RDWR):
                upload_target(jp)
                return UploadHandle(self.session, p, flags)
            if jp.area is Area.UPLOAD:  # reading back a partial upload is not needed
                return SFTP_PERMISSION_DENIED
            return ReadHandle(self.session, jp, p)
        except JailError:
            return SFTP_PERMISSION_DENIED
        except FileNotFoundError:
            return SFTP_NO_SUCH_FILE
        except OSError:
            return SFTP_FAILURE

    def remove(self, path: str | bytes) -> int:
        try:
            jp, p = self._file(path)
            if jp.area is Area.UPLOAD:
                upload_target(jp)  # abandoning an upload is allowed
            size = os.lstat(p).st_size
            p.unlink()
            if jp.area is not Area.REJECTED:  # notes are not counted
                self.session.adjust(-size, -1)
        except JailError:
            return SFTP_PERMISSION_DENIED
        except FileNotFoundError:
            return SFTP_NO_SUCH_FILE
        if jp.area is Area.INBOX and jp.name:
            self.session.notify("deleted", self.session.site, jp.name)
        return SFTP_OK

    def rename(self, oldpath: str | bytes, newpath: str | bytes) -> int:
        try:
            old, new = parse(oldpath), parse(newpath)
            base = finish_rename(old, new)
        except JailError:
            return SFTP_PERMISSION_DENIED
        assert old.name is not None
        qname = new_quarantine_name(base)
        src = self.session.dir(Area.UPLOAD) / old.name
        try:
            os.replace(src, self.session.paths.quarantine(self.session.site) / qname)
        except FileNotFoundError:
            return SFTP_NO_SUCH_FILE
        self.session.notify("uploaded", self.session.site, qname)
        return SFTP_OK

    posix_rename = rename

    def mkdir(self, path: str | bytes, attr: paramiko.SFTPAttributes) -> int:
        return SFTP_PERMISSION_DENIED

    def rmdir(self, path: str | bytes) -> int:
        return SFTP_PERMISSION_DENIED

    def chattr(self, path: str | bytes, attr: paramiko.SFTPAttributes) -> int:
        return SFTP_PERMISSION_DENIED

    def symlink(self, target_path: str | bytes, path: str | bytes) -> int:
        return SFTP_PERMISSION_DENIED

    def readlink(self, path: str | bytes) -> str | int:
        return SFTP_NO_SUCH_FILE
