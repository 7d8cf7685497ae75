# -*- test-case-name: tests.test_http_files -*-
"""
Tests for path safety and the document root: L{netd.http.paths} and
L{netd.http.files}, and the same attacks through the protocol.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netd.http.files import DocumentRoot, FileEntry, MimeTypes, Redirect
from netd.http.paths import BadTarget, decodePath, isUnder, splitTarget
from tests.httpsupport import SECRET, SMALL, exchange, get, makeFactory, makeTree

# Every way of reaching outside the root that a client can spell.
TRAVERSALS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/dir/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/dir%2f..%2f..%2fsecret.txt",
    "/dir%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%c0%af../secret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/..%5csecret.txt",
    "/..%255csecret.txt",
    "/%252e%252e/secret.txt",
    "/dir/..%00/secret.txt",
    "/small.html%00.txt",
    "/escape.txt",
    "/escape-dir/secret.txt",
    "/inside.html/../../secret.txt",
    "//../secret.txt",
    "http://example.com/../secret.txt",
]


class PathTests(SynchronousTestCase):
    """
    Tests for L{splitTarget} and L{decodePath}.
    """

    def test_split(self) -> None:
        """
        Origin and absolute forms split into path and query; the fragment
        is dropped.
        """
        self.assertEqual(splitTarget(b"/a/b?x=1#f").path, b"/a/b")
        self.assertEqual(splitTarget(b"/a/b?x=1#f").query, b"x=1")
        self.assertEqual(splitTarget(b"http://h:80/a?q").path, b"/a")
        self.assertEqual(splitTarget(b"HTTPS://h").path, b"/")
        for target in (b"*", b"a/b", b"ftp://h/a", b""):
            self.assertRaises(BadTarget, splitTarget, target)

    def test_decode(self) -> None:
        """
        Paths decode to segments, empty segments dropped, the trailing slash
        reported.
        """
        self.assertEqual(decodePath(b"/"), ((), True))
        self.assertEqual(decodePath(b"/a//b/"), (("a", "b"), True))
        self.assertEqual(decodePath(b"/caf%C3%A9"), (("caf\u00e9",), False))
        self.assertEqual(decodePath(b"/a%20b"), (("a b",), False))

    def test_refused(self) -> None:
        """
        Dot segments in every spelling, NUL and other control bytes,
        backslashes, malformed escapes and overlong or invalid UTF-8 are
        refused.
        """
        for path in [
            b"/..",
            b"/a/../b",
            b"/./a",
            b"/%2e%2e/a",
            b"/a%2f..%2fb",
            b"/%00",
            b"/a%0ab",
            b"/a%7f",
            b"/a\\b",
            b"/a%5cb",
            b"/%zz",
            b"/%4",
            b"/%c0%ae%c0%ae",
            b"/%e0%80%ae",
            b"/%ff",
            b"/%ed%a0%80",
        ]:
            self.assertRaises(BadTarget, decodePath, path)

    def test_isUnder(self) -> None:
        """
        Mount matching compares decoded paths.
        """
        self.assertTrue(isUnder(b"/chat/", b"/chat/"))
        self.assertTrue(isUnder(b"/chat/ws", b"/chat/"))
        self.assertTrue(isUnder(b"/ch%61t/ws", b"/chat/"))
        self.assertFalse(isUnder(b"/chat", b"/chat/"))
        self.assertFalse(isUnder(b"/chatter/", b"/chat/"))
        self.assertFalse(isUnder(b"/%zz", b"/chat/"))


class DocumentRootTests(SynchronousTestCase):
    """
    Tests for L{DocumentRoot}.
    """

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.rootPath, self.secret = makeTree(base)
        self.root = DocumentRoot(self.rootPath)

    def test_file(self) -> None:
        """
        A small file resolves to an entry holding its bytes and pre-built
        headers.
        """
        entry = self.root.lookup(b"/small.html", b"", 100.0)
        assert isinstance(entry, FileEntry)
        self.assertEqual(entry.body, SMALL)
        self.assertEqual(entry.size, len(SMALL))
        self.assertIn(b"Content-Length: %d\r\n" % len(SMALL), entry.headers)
        self.assertNotIn(b"Content-Length", entry.common)

    def test_largeFileNotHeld(self) -> None:
        """
        A file larger than C{cacheFileSize} is not read into memory.
        """
        entry = self.root.lookup(b"/large.bin", b"", 100.0)
        assert isinstance(entry, FileEntry)
        self.assertIsNone(entry.body)

    def test_cached(self) -> None:
        """
        Within the TTL a path resolves to the same entry without touching
        the disk; after it, an unchanged file keeps its entry.
        """
        first = self.root.lookup(b"/small.html", b"", 100.0)
        self.assertIs(self.root.lookup(b"/small.html", b"", 101.5), first)
        os.rename(
            os.path.join(self.rootPath, "small.html"),
            os.path.join(self.rootPath, "moved.html"),
        )
        self.assertIs(self.root.lookup(b"/small.html", b"", 102.0), first)
        self.assertEqual(self.root.lookup(b"/small.html", b"", 103.0), 404)

    def test_replacedBySymlink(self) -> None:
        """
        A file replaced by a symbolic link out of the root is refused after
        the TTL: the cache never keeps an escape alive.
        """
        self.root.lookup(b"/notes.txt", b"", 100.0)
        path = os.path.join(self.rootPath, "notes.txt")
        os.remove(path)
        os.symlink(self.secret, path)
        self.assertEqual(self.root.lookup(b"/notes.txt", b"", 102.0), 404)

    def test_cacheBounded(self) -> None:
        """
        The cache holds at most C{cacheEntries} paths and C{cacheBytes}
        bytes.
        """
        root = DocumentRoot(self.rootPath, cacheEntries=3, cacheBytes=2000)
        for name in ("notes.txt", "style.css", "app.js", "data.json"):
            root.lookup(b"/" + name.encode(), b"", 1.0)
        self.assertLessEqual(len(root._cache), 3)
        root.lookup(b"/small.html", b"", 1.0)
        root.lookup(b"/index.html", b"", 1.0)
        self.assertLessEqual(root._cachedBytes, 2000)

    def test_symlinks(self) -> None:
        """
        Symbolic links inside the root are followed; links out of it are
        not, unless C{followSymlinks}.
        """
        self.assertIsInstance(self.root.lookup(b"/inside.html", b"", 1.0), FileEntry)
        self.assertEqual(self.root.lookup(b"/escape.txt", b"", 1.0), 404)
        self.assertEqual(self.root.lookup(b"/escape-dir/secret.txt", b"", 1.0), 404)
        follow = DocumentRoot(self.rootPath, followSymlinks=True)
        entry = follow.lookup(b"/escape.txt", b"", 1.0)
        assert isinstance(entry, FileEntry)
        self.assertEqual(entry.body, SECRET)

    def test_dotfiles(self) -> None:
        """
        Dotfiles are hidden, also behind a symbolic link; C{dotfiles} serves
        them.
        """
        for path in (b"/.env", b"/.git/config", b"/.git/", b"/to-dotfile"):
            self.assertEqual(self.root.lookup(path, b"", 1.0), 404, path)
        shown = DocumentRoot(self.rootPath, dotfiles=True)
        self.assertIsInstance(shown.lookup(b"/.env", b"", 1.0), FileEntry)

    def test_directories(self) -> None:
        """
        A directory without its slash redirects; a file with a slash is not
        found.
        """
        self.assertEqual(self.root.lookup(b"/dir", b"a=1", 1.0), Redirect(b"/dir/?a=1"))
        self.assertEqual(self.root.lookup(b"/small.html/", b"", 1.0), 404)

    def test_unreadable(self) -> None:
        """
        A file that cannot be opened is C{403} (when not running as root,
        which reads everything).
        """
        if os.getuid() == 0:
            raise self.skipTest("root can read any file")
        os.chmod(os.path.join(self.rootPath, "notes.txt"), 0)
        self.assertEqual(self.root.lookup(b"/notes.txt", b"", 1.0), 403)

    def test_forbiddenLoggedOncePerPath(self) -> None:
        """
        A 403 that comes from a permission error logs its cause once per
        path: the path, the root, the error and the account netd runs as.
        """
        from twisted.logger import Logger, formatEvent

        from netd.http import files

        events: list[dict[str, object]] = []
        self.patch(DocumentRoot, "_log", Logger(observer=events.append))
        target = os.path.realpath(os.path.join(self.rootPath, "notes.txt"))

        class RefusingOS:
            def __getattr__(self, name: str) -> object:
                return getattr(os, name)

            def open(self, path: str, flags: int) -> int:
                if path == target:
                    raise PermissionError(13, "Permission denied", path)
                return os.open(path, flags)

        self.patch(files, "os", RefusingOS())
        for now in (1.0, 5.0, 9.0):
            self.assertEqual(self.root.lookup(b"/notes.txt", b"", now), 403)
        self.assertEqual(len(events), 1, events)
        text = formatEvent(events[0])
        self.assertIn(f"403 for {target}", text)
        self.assertIn("Permission denied", text)
        self.assertIn(f"netd runs as uid {os.geteuid()}", text)

    def test_mimeTable(self) -> None:
        """
        The MIME table does not depend on the host, adds charsets to text,
        and takes extensions case-insensitively.
        """
        types = MimeTypes({"LOG": "text/plain"}, "application/x-unknown", "utf-8")
        self.assertEqual(types.typeFor("a.HTML"), b"text/html; charset=utf-8")
        self.assertEqual(types.typeFor("a.log"), b"text/plain; charset=utf-8")
        self.assertEqual(types.typeFor("a.svg"), b"image/svg+xml; charset=utf-8")
        self.assertEqual(types.typeFor("a.wasm"), b"application/wasm")
        self.assertEqual(types.typeFor("Makefile"), b"application/x-unknown")
        self.assertEqual(types.typeFor(".bashrc"), b"application/x-unknown")


class TraversalTests(SynchronousTestCase):
    """
    Every traversal through the protocol: refused, and not one byte of the
    secret leaked (plain twistd web serves symbolic links out of its root).
    """

    def test_noLeak(self) -> None:
        """
        Each spelling of an escape gets C{400} or C{404}, never the secret.
        """
        base = self.mktemp()
        os.makedirs(base)
        root, secret = makeTree(base)
        factory, context = makeFactory(root=root, clock=Clock())
        for target in TRAVERSALS:
            session_responses, transport = exchange(factory, context, get(target))
            data = transport.value()
            self.assertNotIn(b"outside the document root", data, target)
            self.assertIn(session_responses[0].status, (400, 404), target)
        # The same over raw bytes the helper could not build.
        for raw in (
            b"GET /..\\secret.txt HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /dir/..\\..\\secret.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        ):
            responses, transport = exchange(factory, context, raw)
            self.assertNotIn(b"outside", transport.value())
            self.assertEqual(responses[0].status, 400)

    def test_followSymlinksServes(self) -> None:
        """
        With C{follow_symlinks = true}, a link out of the root is served (and
        only then).
        """
        base = self.mktemp()
        os.makedirs(base)
        root, secret = makeTree(base)
        factory, context = makeFactory(root=root, follow_symlinks=True, clock=Clock())
        responses, _ = exchange(factory, context, get("/escape.txt"))
        self.assertEqual(responses[0].body, SECRET)
        responses, _ = exchange(factory, context, get("/../secret.txt"))
        self.assertEqual(responses[0].status, 400)
