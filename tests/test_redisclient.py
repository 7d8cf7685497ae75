# -*- test-case-name: tests.test_redisclient -*-
"""
Tests for L{netd.chat.redisclient}: the RESP protocol over a
L{StringTransport}, and reading a password file.
"""

from __future__ import annotations

import os
import tempfile
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netd.chat.redisclient import (
    RedisConnectionLost,
    RedisProtocol,
    ReplyError,
    describeFailure,
    readPassword,
)


class ProtocolTests(SynchronousTestCase):
    """
    L{RedisProtocol}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.protocol = RedisProtocol(self.clock)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_execute(self) -> None:
        """
        A command goes out as a RESP array; its reply fires its L{Deferred}.
        """
        d = self.protocol.execute("SET", "k", b"v\r\n", 5)
        self.assertEqual(
            self.transport.value(),
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n5\r\n",
        )
        self.assertNoResult(d)
        self.protocol.dataReceived(b"+O")
        self.assertNoResult(d)
        self.protocol.dataReceived(b"K\r\n")
        self.assertEqual(self.successResultOf(d), b"OK")

    def test_pipeline(self) -> None:
        """
        L{RedisProtocol.pipeline} writes its commands at once and fires with
        every reply, errors among them as values; replies fire callers in
        order.
        """
        first = self.protocol.execute("PING")
        d = self.protocol.pipeline([("INCR", "a"), ("BAD",), ("GET", "a")])
        self.assertEqual(self.transport.value().count(b"*"), 4)
        self.protocol.dataReceived(b"+PONG\r\n:1\r\n-ERR unknown\r\n$1\r\n1\r\n")
        self.assertEqual(self.successResultOf(first), b"PONG")
        replies = self.successResultOf(d)
        self.assertEqual(replies[0], 1)
        self.assertIsInstance(replies[1], ReplyError)
        self.assertEqual(replies[2], b"1")
        self.assertEqual(self.protocol.pending(), 0)

    def test_errorReply(self) -> None:
        """
        An error reply to L{RedisProtocol.execute} is a failure.
        """
        d = self.protocol.execute("BAD")
        self.protocol.dataReceived(b"-ERR no\r\n")
        self.failureResultOf(d, ReplyError)

    def test_oldestAge(self) -> None:
        """
        L{RedisProtocol.oldestAge} is how long the oldest command has waited.
        """
        self.assertEqual(self.protocol.oldestAge(), 0.0)
        self.protocol.execute("PING")
        self.clock.advance(2.5)
        self.protocol.execute("PING")
        self.assertEqual(self.protocol.oldestAge(), 2.5)

    def test_lost(self) -> None:
        """
        Commands waiting when the connection closes fail; later ones fail at
        once.
        """
        d = self.protocol.execute("PING")
        self.protocol.connectionLost(Failure(RedisConnectionLost("gone")))
        self.failureResultOf(d, RedisConnectionLost)
        self.failureResultOf(self.protocol.execute("PING"), RedisConnectionLost)
        self.failureResultOf(self.protocol.pipeline([("PING",)]), RedisConnectionLost)

    def test_garbage(self) -> None:
        """
        Bytes that are not RESP, or a reply nobody asked for, drop the
        connection.
        """
        self.protocol.dataReceived(b"+PONG\r\n")
        self.assertTrue(self.transport.disconnecting)
        other = RedisProtocol(self.clock)
        transport = StringTransport()
        other.makeConnection(transport)
        other.execute("PING")
        other.dataReceived(b"?what\r\n")
        self.assertTrue(transport.disconnecting)


class PasswordTests(SynchronousTestCase):
    """
    L{readPassword}.
    """

    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def test_firstLine(self) -> None:
        """
        The password is the first line, without its line ending.
        """
        self.assertEqual(readPassword(self.write("s3cr:et \nignored\n")), "s3cr:et ")

    def test_problems(self) -> None:
        """
        A missing file or an empty first line is a L{ValueError} naming the
        file.
        """
        path = self.write("\n")
        with self.assertRaises(ValueError) as e:
            readPassword(path)
        self.assertIn(path, str(e.exception))
        with self.assertRaises(ValueError) as e:
            readPassword(path + ".missing")
        self.assertIn("cannot read", str(e.exception))


class DescribeFailureTests(SynchronousTestCase):
    """
    L{describeFailure}.
    """

    def test_oneLineNoFinalStop(self) -> None:
        """
        A failure reads as one line without a final full stop, so that it
        sits inside a log sentence.
        """
        text = describeFailure(Failure(ConnectionRefusedError("111: refused.\nmore.")))
        self.assertNotIn("\n", text)
        self.assertFalse(text.endswith("."), text)
        self.assertIn("refused", text)
