# -*- test-case-name: tests.test_http_files -*-
"""
Request targets to path segments.

A request target (C{/a/b%20c?x=1}) is split from its query, percent-decoded
once, checked, and split into segments. Everything that could name a file
outside the document root, or that no browser sends, is refused here with
C{400 Bad Request}, before the file system is touched:

    - a target that is neither origin-form (C{/...}) nor absolute-form
      (C{http://host/...});
    - a malformed percent escape (C{%zz}, C{%4});
    - after decoding: NUL or any other control byte, a backslash, bytes
      that are not valid UTF-8 (this refuses overlong forms such as
      C{%c0%ae}, which some decoders turn into C{.});
    - a C{.} or C{..} segment, in any spelling (C{%2e%2e}, C{.%2E}), and
      encoded slashes that would create one (C{a%2f..%2fb}).

Empty segments (C{//}) are dropped. Whether a segment naming a dotfile is
served is the document root's decision (L{netd.http.files}).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from attrs import frozen

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f\\]")


class BadTarget(ValueError):
    """
    The request target cannot name a file: answer C{400 Bad Request}.
    """


@frozen
class Target:
    """
    A request target, split.

    @ivar path: The path as received (still percent-encoded), without the
        query; the cache key of L{netd.http.files.DocumentRoot}.
    @ivar query: The query string without its C{?}, or C{b""}.
    """

    path: bytes
    query: bytes


def splitTarget(target: bytes) -> Target:
    """
    Split a request target into its path and query.

    @param target: The request target as the parser delivered it.
    @return: The parts; an absolute-form target (C{http://host/p}) is
        reduced to its path.
    @raise BadTarget: If it is neither origin-form nor absolute-form.
    """
    if target[:1] != b"/":
        lower = target[:8].lower()
        if lower.startswith(b"http://"):
            rest = target[7:]
        elif lower.startswith(b"https://"):
            rest = target[8:]
        else:
            raise BadTarget("the target must be a path")
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    target = target.split(b"#", 1)[0]
    path, _, query = target.partition(b"?")
    return Target(path, query)


def decodePath(path: bytes) -> tuple[tuple[str, ...], bool]:
    """
    Decode and check a request path.

    @param path: The path part of a target, percent-encoded, starting with
        C{/}.
    @return: The segments (non-empty, none of them C{.} or C{..}) and
        whether the path ends with C{/} (a directory was asked for).
    @raise BadTarget: If the path is malformed or could escape the root.
    """
    if b"%" in path:
        if _BAD_ESCAPE.search(path) is not None:
            raise BadTarget("malformed percent escape")
        path = unquote_to_bytes(path)
    if _CONTROL.search(path) is not None:
        raise BadTarget("control character or backslash in the path")
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget("the path is not UTF-8") from None
    segments = []
    for segment in text.split("/"):
        if not segment:
            continue
        if segment == "." or segment == "..":
            raise BadTarget("dot segment in the path")
        segments.append(segment)
    return tuple(segments), text.endswith("/")


def isUnder(path: bytes, prefix: bytes) -> bool:
    """
    Whether a request path lies under a mount prefix, comparing decoded
    forms, so that C{/ch%61t/} is under C{/chat/}.

    @param path: The path part of a target, percent-encoded.
    @param prefix: A decoded prefix ending with C{/}.
    @return: C{True} if C{path} starts with C{prefix}.
    """
    if path.startswith(prefix):
        return True
    if b"%" not in path:
        return False
    if _BAD_ESCAPE.search(path) is not None:
        return False
    return unquote_to_bytes(path).startswith(prefix)
