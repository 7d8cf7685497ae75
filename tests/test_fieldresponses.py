# -*- test-case-name: tests.test_fieldresponses -*-
"""
Tests for L{netd.http.fieldresponses}: what HTTP/2 and HTTP/3 share.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netd.http.fieldresponses import Body, FieldResponder
from netd.http.request import Request


class Factory:
    """
    The part of an C{HTTPFactory} the body reader uses.
    """

    name = "www"


class Responder(FieldResponder):
    """
    A framing that records the streams it resets.
    """

    framing = "HTTP/9"

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.factory = Factory()  # type: ignore[assignment]
        self._open = {1}
        self._log = Logger(observer=events.append)
        self.reset: list[int] = []

    def _resetStream(self, streamId: int) -> None:
        self.reset.append(streamId)

    def peer(self) -> Any:
        return None

    def _respond(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the body reader sends no response")


class ReadTests(SynchronousTestCase):
    """
    L{FieldResponder._read}: the next bytes of a body.
    """

    def body(self, content: bytes, offset: int = 0) -> Body:
        """
        @param content: The file's bytes.
        @param offset: Where the body starts.
        @return: A body streaming a file holding them.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        req = Request()
        req.streamId = 1
        body = Body(req, 200, None, os.open(path, os.O_RDONLY), offset, 10)
        self.addCleanup(body.close)
        return body

    def test_fromMemoryAndFile(self) -> None:
        """
        A body held in memory is sliced; one in a file is read at its offset.
        """
        events: list[dict[str, Any]] = []
        responder = Responder(events)
        req = Request()
        self.assertEqual(
            responder._read(Body(req, 200, b"0123456789", None, 2, 8), 3), b"234"
        )
        self.assertEqual(responder._read(self.body(b"abcdefghij", 4), 3), b"efg")
        self.assertEqual((responder.reset, events), ([], []))

    def test_shrankFileResetsStream(self) -> None:
        """
        A file that ends before the promised length resets the stream (what
        was promised cannot be sent), closes the file, forgets the stream
        and logs one warning naming the framing.
        """
        events: list[dict[str, Any]] = []
        responder = Responder(events)
        body = self.body(b"abc", 3)
        self.assertIsNone(responder._read(body, 5))
        self.assertEqual(responder.reset, [1])
        self.assertEqual(responder._open, set())
        self.assertIsNone(body.fd)
        [event] = events
        self.assertEqual(event["framing"], "HTTP/9")
        self.assertEqual(event["service"], "www")


class AbstractTests(SynchronousTestCase):
    """
    L{FieldResponder} is abstract: a framing must give what it frames.
    """

    def test_framingMethodsRequired(self) -> None:
        """
        A framing without C{_respond}, C{_resetStream} and C{peer} cannot be
        made.
        """

        class Incomplete(FieldResponder):
            """
            A framing that gives none of them.
            """

        with self.assertRaises(TypeError) as caught:
            Incomplete()  # type: ignore[abstract]
        for name in ("_respond", "_resetStream", "peer"):
            self.assertIn(name, str(caught.exception))
