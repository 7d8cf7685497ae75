# -*- test-case-name: tests.test_http_files -*-
"""
The document root: from a request path to a file, safely and cheaply.

L{DocumentRoot.lookup} turns a request path into a L{FileEntry} (a file to
serve, with its response headers pre-built and, for a small file, its bytes),
a L{Redirect} (a directory asked for without its trailing slash) or an error
status. Nothing outside the root is ever served:

    - the path is decoded and checked by L{netd.http.paths.decodePath}
      (dot segments, NUL, backslashes, overlong UTF-8: C{400});
    - dotfiles (any segment starting with C{.}, before or after resolving
      symbolic links) are C{404} unless C{dotfiles = true};
    - the path is resolved with C{realpath}; unless C{follow_symlinks =
      true}, a result outside the root is C{404}, so a symbolic link may
      point anywhere inside the root but never out of it;
    - only regular files are opened (never a FIFO or a device), with
      C{O_NOFOLLOW}, and what is served is what C{fstat} says of the open
      descriptor.

Results are cached by the raw request path for C{ttl} seconds (one by
default): a hit costs one dictionary lookup. After the TTL the path is
resolved again from scratch, so a change on disk (new content, a file
replaced by a symbolic link) is seen within a second; an unchanged file keeps
its cached bytes. Bodies of files up to C{cacheFileSize} bytes are cached in
memory (up to C{cacheBytes} in all); larger files are streamed from disk.
"""

from __future__ import annotations

import errno
import hashlib
import html
import mimetypes
import os
import stat
from collections.abc import Mapping
from urllib.parse import quote

from attrs import define, frozen
from twisted.logger import Logger

from netd.http.paths import BadTarget, decodePath
from netd.http.responses import httpDate

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# Types Python's built-in table lacks or gets wrong for the web.
_WEB_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".md": "text/markdown",
    ".toml": "application/toml",
    ".webmanifest": "application/manifest+json",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
}

_CHARSET_TYPES = (
    "application/javascript",
    "application/json",
    "application/manifest+json",
    "application/xml",
    "application/xhtml+xml",
    "image/svg+xml",
)


class MimeTypes:
    """
    File name extension to C{Content-Type}, from a fixed table (Python's
    built-in defaults, never the host's C{/etc/mime.types}, so a response
    does not depend on the machine) plus the configuration's own.

    @ivar default: The type of a file whose extension is unknown.
    @ivar charset: Appended as C{; charset=...} to textual types (C{""}: never).
    """

    def __init__(
        self,
        extra: Mapping[str, str] | None = None,
        default: str = "application/octet-stream",
        charset: str = "utf-8",
    ) -> None:
        table = dict(mimetypes.MimeTypes(filenames=()).types_map[True])
        table.update(_WEB_TYPES)
        for extension, value in (extra or {}).items():
            extension = extension.lower()
            if not extension.startswith("."):
                extension = "." + extension
            table[extension] = value
        self.default = default
        self.charset = charset
        self._types = {
            extension: self._withCharset(value) for extension, value in table.items()
        }
        self._default = self._withCharset(default)

    def _withCharset(self, value: str) -> bytes:
        """
        @param value: A media type.
        @return: The header value, with a charset parameter if textual.
        """
        if (
            self.charset
            and "charset=" not in value
            and (value.startswith("text/") or value in _CHARSET_TYPES)
        ):
            value = f"{value}; charset={self.charset}"
        return value.encode("latin-1")

    def typeFor(self, name: str) -> bytes:
        """
        @param name: A file name.
        @return: Its C{Content-Type} value.
        """
        dot = name.rfind(".")
        if dot <= 0:
            return self._default
        return self._types.get(name[dot:].lower(), self._default)


@define(eq=False)
class FileEntry:
    """
    Something servable: a regular file, or bytes built in memory.

    @ivar path: The file's resolved path, or L{None} for an in-memory body.
    @ivar size: Its size in bytes.
    @ivar mtime: Its modification time, whole seconds.
    @ivar identity: C{(st_dev, st_ino, st_mtime_ns, st_size)}: a file that
        still has this identity still has this content.
    @ivar etag: The entity tag, quoted.
    @ivar lastModified: The C{Last-Modified} value.
    @ivar common: Header lines for C{200}, C{206} and C{304} except
        C{Content-Length}.
    @ivar headers: Header lines for C{200}: L{common} and C{Content-Length}.
    @ivar body: The whole content for a small file or an in-memory body;
        L{None} when the file is streamed from disk.
    @ivar checked: When it was last resolved (reactor seconds).
    @ivar fields: L{common} as HTTP/2 header fields, made when first needed
        (L{netd.http.fieldresponses.entryFields}).
    """

    path: str | None
    size: int
    mtime: int
    identity: tuple[int, int, int, int]
    etag: bytes
    lastModified: bytes
    common: bytes
    headers: bytes
    body: bytes | None
    checked: float = 0.0
    fields: tuple[tuple[bytes, bytes], ...] | None = None


@frozen
class Redirect:
    """
    A directory asked for without its trailing slash.

    @ivar location: The C{Location} value (the path with C{/} added).
    """

    location: bytes


def buildEntry(
    path: str | None,
    size: int,
    mtimeNs: int,
    identity: tuple[int, int, int, int],
    contentType: bytes,
    extra: bytes,
    body: bytes | None,
    checked: float,
    etag: bytes | None = None,
) -> FileEntry:
    """
    Pre-build the response headers of a servable thing.

    @param path: The resolved file, or L{None}.
    @param size: Its size.
    @param mtimeNs: Its modification time, nanoseconds.
    @param identity: See L{FileEntry.identity}.
    @param contentType: Its C{Content-Type}.
    @param extra: Header lines every response carries (C{Server}, the
        configured extra headers).
    @param body: Its bytes if held in memory.
    @param checked: The current time.
    @param etag: The entity tag, quoted; by default from the modification
        time and the size, as nginx makes it.
    @return: The entry.
    """
    mtime = mtimeNs // 1_000_000_000
    if etag is None:
        etag = f'"{mtimeNs:x}-{size:x}"'.encode("ascii")
    lastModified = httpDate(mtime).encode("ascii")
    common = (
        extra
        + b"Content-Type: "
        + contentType
        + b"\r\nLast-Modified: "
        + lastModified
        + b"\r\nETag: "
        + etag
        + b"\r\nAccept-Ranges: bytes\r\n"
    )
    headers = common + b"Content-Length: " + str(size).encode("ascii") + b"\r\n"
    return FileEntry(
        path, size, mtime, identity, etag, lastModified, common, headers, body, checked
    )


def memoryEntry(
    body: bytes, contentType: bytes, extra: bytes, mtime: float
) -> FileEntry:
    """
    A servable body built in memory (the bundled page, a listing).

    @param body: The content.
    @param contentType: Its type.
    @param extra: Header lines every response carries.
    @param mtime: Its modification time (seconds).
    @return: The entry; its entity tag is a hash of the content.
    """
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    return buildEntry(
        None,
        len(body),
        int(mtime) * 1_000_000_000,
        (0, 0, 0, len(body)),
        contentType,
        extra,
        body,
        mtime,
        etag=f'"{digest}"'.encode("ascii"),
    )


class DocumentRoot:
    """
    Resolves request paths to files under one directory, with a cache.

    @ivar root: The root directory, resolved (no symbolic links in it).
    @ivar index: File names tried, in order, for a directory.
    @ivar listing: Whether a directory without an index file is listed.
    @ivar followSymlinks: Whether symbolic links may lead outside the root.
    @ivar dotfiles: Whether names starting with C{.} are served.
    @ivar types: The MIME table.
    @ivar extra: Header lines every response carries.
    @ivar ttl: Seconds a resolution is trusted before it is redone.
    @ivar cacheFileSize: Files up to this size have their bytes cached.
    @ivar cacheBytes: Most bytes of file content held in the cache.
    @ivar cacheEntries: Most paths held in the cache.
    @ivar denied: The paths whose 403 (a permission error) was logged, so
        that each is logged once (forgotten past L{MAX_DENIED} paths).
    """

    MAX_DENIED = 1000
    _log = Logger()

    def __init__(
        self,
        root: str,
        index: tuple[str, ...] = ("index.html",),
        listing: bool = False,
        followSymlinks: bool = False,
        dotfiles: bool = False,
        types: MimeTypes | None = None,
        extra: bytes = b"",
        ttl: float = 1.0,
        cacheFileSize: int = 256 * 1024,
        cacheBytes: int = 64 * 1024 * 1024,
        cacheEntries: int = 10_000,
    ) -> None:
        self.root = os.path.realpath(root)
        self.index = index
        self.listing = listing
        self.followSymlinks = followSymlinks
        self.dotfiles = dotfiles
        self.types = types if types is not None else MimeTypes()
        self.extra = extra
        self.ttl = ttl
        self.cacheFileSize = cacheFileSize
        self.cacheBytes = cacheBytes
        self.cacheEntries = cacheEntries
        self._prefix = self.root.rstrip("/") + "/"
        self._cache: dict[bytes, FileEntry] = {}
        self._cachedBytes = 0
        self.denied: set[str] = set()

    def _forbidden(self, path: str, error: OSError | None = None) -> int:
        """
        A permission error makes a 403: log its cause, once per path, so
        that an operator sees why (the account netd runs as cannot read it).

        @param path: The file or directory.
        @param error: The error, if one was raised (else C{access} said no).
        @return: 403.
        """
        if path not in self.denied:
            if len(self.denied) >= self.MAX_DENIED:
                self.denied.clear()
            self.denied.add(path)
            self._log.warn(
                "403 for {path} (under root {root}): {error}; netd runs as uid "
                "{uid}, gid {gid}: make it readable by them (logged once per path)",
                path=path,
                root=self.root,
                error=(error.strerror if error is not None else None)
                or "Permission denied",
                uid=os.geteuid(),
                gid=os.getegid(),
            )
        return 403

    def lookup(
        self, path: bytes, query: bytes, now: float
    ) -> FileEntry | Redirect | int:
        """
        Find what a request path names.

        @param path: The request path, still percent-encoded.
        @param query: The query string (kept in a redirect).
        @param now: The current time.
        @return: A L{FileEntry}, a L{Redirect}, or an error status (400,
            403 or 404).
        """
        entry = self._cache.get(path)
        if entry is not None and now - entry.checked < self.ttl:
            return entry
        try:
            result = self._resolve(path, query, now, entry)
        except BadTarget:
            return 400
        if isinstance(result, FileEntry):
            self._remember(path, result, entry)
        elif entry is not None:
            self._forget(path)
        return result

    def _remember(
        self, path: bytes, entry: FileEntry, previous: FileEntry | None
    ) -> None:
        """
        Cache a resolution, within the cache's bounds.

        @param path: The request path.
        @param entry: What it resolved to.
        @param previous: What was cached for it before, if anything.
        """
        if previous is entry:
            return
        if previous is not None:
            self._forget(path)
        size = len(entry.body) if entry.body is not None else 0
        if (
            len(self._cache) >= self.cacheEntries
            or self._cachedBytes + size > self.cacheBytes
        ):
            self._cache.clear()
            self._cachedBytes = 0
        self._cache[path] = entry
        self._cachedBytes += size

    def _forget(self, path: bytes) -> None:
        """
        Drop one cached resolution.

        @param path: The request path.
        """
        entry = self._cache.pop(path, None)
        if entry is not None and entry.body is not None:
            self._cachedBytes -= len(entry.body)

    def invalidate(self, path: bytes) -> None:
        """
        Forget a cached resolution (the file changed under it).

        @param path: The request path.
        """
        self._forget(path)

    def inside(self, real: str) -> bool:
        """
        @param real: A resolved path.
        @return: Whether it is the root or below it.
        """
        return real == self.root or real.startswith(self._prefix)

    def _hidden(self, segments: tuple[str, ...] | list[str]) -> bool:
        """
        @param segments: Path segments.
        @return: Whether one of them is a dotfile that must stay hidden.
        """
        if self.dotfiles:
            return False
        for segment in segments:
            if segment[:1] == ".":
                return True
        return False

    def _allowed(self, real: str) -> bool:
        """
        Whether a resolved path may be served.

        @param real: The result of C{realpath}.
        @return: C{False} if it leaves the root (and links may not), or if
            it reaches a hidden dotfile inside the root.
        """
        if not self.inside(real):
            return self.followSymlinks
        if real == self.root:
            return True
        return not self._hidden(real[len(self._prefix) :].split("/"))

    def _resolve(
        self, path: bytes, query: bytes, now: float, previous: FileEntry | None
    ) -> FileEntry | Redirect | int:
        """
        Resolve a request path from scratch.

        @param path: The request path.
        @param query: The query string.
        @param now: The current time.
        @param previous: The stale cached entry, whose bytes are reused if
            the file has not changed.
        @return: See L{lookup}.
        @raise BadTarget: If the path is malformed.
        """
        segments, slash = decodePath(path)
        if self._hidden(segments):
            return 404
        real = os.path.realpath(os.path.join(self.root, *segments))
        if not self._allowed(real):
            return 404
        try:
            st = os.stat(real)
        except PermissionError as e:
            return self._forbidden(real, e)
        except OSError:
            return 404
        if stat.S_ISDIR(st.st_mode):
            if not slash and segments:
                location = path + b"/"
                if query:
                    location += b"?" + query
                return Redirect(location)
            for name in self.index:
                candidate = os.path.realpath(os.path.join(real, name))
                if not self._allowed(candidate):
                    continue
                try:
                    candidateStat = os.stat(candidate)
                except OSError:
                    continue
                if stat.S_ISREG(candidateStat.st_mode):
                    return self._file(candidate, name, candidateStat, now, previous)
            if self.listing:
                return self._listing(real, path, now)
            return 404
        if not stat.S_ISREG(st.st_mode) or slash:
            return 404
        return self._file(real, segments[-1], st, now, previous)

    def _file(
        self,
        real: str,
        name: str,
        st: os.stat_result,
        now: float,
        previous: FileEntry | None,
    ) -> FileEntry | int:
        """
        Build (or revalidate) the entry of a regular file.

        @param real: Its resolved path.
        @param name: The name its type is taken from.
        @param st: Its C{stat} result.
        @param now: The current time.
        @param previous: The stale entry for the same request path, if any.
        @return: The entry, or 403 if it cannot be read.
        """
        identity = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if (
            previous is not None
            and previous.path == real
            and previous.identity == identity
        ):
            previous.checked = now
            return previous
        body = None
        if st.st_size <= self.cacheFileSize:
            try:
                fd = os.open(real, _OPEN_FLAGS)
            except PermissionError as e:
                return self._forbidden(real, e)
            except OSError:
                return 404
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return 404
                body = readAll(fd, st.st_size)
            except OSError:
                return 404
            finally:
                os.close(fd)
            identity = (st.st_dev, st.st_ino, st.st_mtime_ns, len(body))
            if len(body) != st.st_size:
                # Changed while being read: serve what was read, revalidate
                # at the next request.
                now = 0.0
        elif not os.access(real, os.R_OK):
            return self._forbidden(real)
        return buildEntry(
            real,
            identity[3],
            st.st_mtime_ns,
            identity,
            self.types.typeFor(name),
            self.extra,
            body,
            now,
        )

    def open(self, entry: FileEntry) -> int | None:
        """
        Open a file entry for streaming.

        @param entry: An entry with a path.
        @return: A descriptor positioned anywhere (read it with C{pread}),
            or L{None} if the file is gone or is no longer the file the entry
            describes (resolve the path again).
        """
        assert entry.path is not None
        try:
            fd = os.open(entry.path, _OPEN_FLAGS)
        except OSError:
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) != entry.identity:
            os.close(fd)
            return None
        return fd

    def _listing(self, real: str, path: bytes, now: float) -> FileEntry | int:
        """
        List a directory as HTML.

        @param real: The resolved directory.
        @param path: The request path (for the title).
        @param now: The current time.
        @return: An in-memory entry, or 403 if it cannot be read.
        """
        try:
            with os.scandir(real) as scan:
                names = []
                for item in scan:
                    if self._hidden((item.name,)):
                        continue
                    if item.is_symlink() and not self._allowed(
                        os.path.realpath(item.path)
                    ):
                        continue
                    names.append(item.name + ("/" if item.is_dir() else ""))
                    if len(names) >= 10_000:
                        break
        except PermissionError as e:
            return self._forbidden(real, e)
        except OSError:
            return 404
        names.sort()
        title = html.escape(path.decode("utf-8", "replace"))
        links = "".join(
            f'<li><a href="{quote(name)}">{html.escape(name)}</a></li>\n'
            for name in names
        )
        page = (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n"
            f'<ul>\n<li><a href="../">../</a></li>\n{links}</ul></body></html>\n'
        ).encode("utf-8")
        return memoryEntry(page, b"text/html; charset=utf-8", self.extra, now)


def readAll(fd: int, size: int) -> bytes:
    """
    Read a file descriptor to its end, or to C{size} bytes and one more.

    @param fd: The descriptor.
    @param size: The expected size.
    @return: The bytes (more or fewer than C{size} if the file changed).
    """
    chunks = []
    remaining = size + 1
    while remaining > 0:
        try:
            chunk = os.read(fd, remaining)
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno == errno.EAGAIN:
                continue
            raise
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
