# -*- test-case-name: tests.test_chat -*-
"""
Tests for the chat service's line protocol, commands, hub and safety
limits (L{netd.chat.tcp}, L{netd.chat.commands}, L{netd.chat.hub},
L{netd.services.chat}), in memory on a fake clock.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from netd.chat.commands import ChatServer, ChatSettings
from netd.chat.hub import (
    MESSAGE,
    ChatEvent,
    EventBatch,
    IChatHub,
    IChatMember,
    LocalHub,
)
from netd.chat.tcp import ChatLineProtocol
from netd.chat.text import FORBIDDEN
from netd.config import parseConfig
from netd.limits import Limits
from netd.services import serviceTypes
from tests.chatsupport import ChatHarness


class ConversationTests(SynchronousTestCase):
    """
    The basic conversation: greeting, nicknames, rooms, messages.
    """

    def setUp(self) -> None:
        self.chat = ChatHarness(self)

    def test_greeting(self) -> None:
        """
        A new client is greeted and told how to pick a nickname.
        """
        client = self.chat.connect()
        self.assertEqual(
            client.received(),
            [
                "*** Welcome to netd chat.",
                "*** type a nickname (or /nick NAME) to start; /help lists the commands",
            ],
        )

    def test_firstLineIsTheNickname(self) -> None:
        """
        The first line that is not a command is taken as the nickname; the
        client then joins the default room and is announced there.
        """
        alice = self.chat.join("alice")
        bob = self.chat.connect()
        bob.received()
        bob.send(b"bob\r\n")
        self.assertEqual(
            bob.received(), ["*** you are now known as bob", "*** bob joined #lobby"]
        )
        self.assertEqual(alice.received(), ["*** bob joined #lobby"])

    def test_nickCommandBeforeFirstLine(self) -> None:
        """
        C{/nick NAME} works as the first line too.
        """
        client = self.chat.connect()
        client.received()
        client.say("/nick carol")
        self.assertIn("*** you are now known as carol", client.received())

    def test_messagesGoToTheRoomNotBack(self) -> None:
        """
        A line goes to the others in the room as C{<nick> text}; the sender
        (who saw it as they typed it) does not get it back.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.received()
        alice.say("hello there")
        self.assertEqual(bob.received(), ["<alice> hello there"])
        self.assertEqual(alice.received(), [])

    def test_crlfAndLfLines(self) -> None:
        """
        Lines may end in C{\\n} or C{\\r\\n}; output lines end in C{\\r\\n}.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.send(b"one\r\ntwo\n")
        self.assertEqual(bob.transport.value(), b"<alice> one\r\n<alice> two\r\n")

    def test_emptyLinesIgnored(self) -> None:
        """
        Empty and blank lines are not relayed.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.send(b"\n\r\n   \n")
        self.assertEqual(bob.received(), [])

    def test_slashEscape(self) -> None:
        """
        A line starting with C{//} is a message starting with C{/}.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.say("//etc/passwd is a path")
        self.assertEqual(bob.received(), ["<alice> /etc/passwd is a path"])

    def test_nickChange(self) -> None:
        """
        C{/nick} changes the nickname; the room sees the change and the old
        nickname is free again.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.received()
        alice.say("/nick alicia")
        self.assertEqual(
            alice.received(),
            ["*** you are now known as alicia", "*** alice is now known as alicia"],
        )
        self.assertEqual(bob.received(), ["*** alice is now known as alicia"])
        carol = self.chat.connect()
        carol.say("alice")
        self.assertIn("*** you are now known as alice", carol.received())

    def test_nickCaseChangeKeepsTheClaim(self) -> None:
        """
        Changing only the case of one's own nickname is allowed.
        """
        alice = self.chat.join("alice")
        alice.say("/nick Alice")
        self.assertIn("*** you are now known as Alice", alice.received())

    def test_impersonationRefused(self) -> None:
        """
        A nickname equal to one in use after case folding and NFKC
        normalisation (case variants, fullwidth letters, ligatures) is
        refused.
        """
        self.chat.join("Bob")
        self.chat.join("ﬀred")
        mallory = self.chat.connect()
        mallory.received()
        for attempt in ["bob", "BOB", "ｂｏｂ", "Ｂｏｂ", "bOb", "FFRED", "ffred"]:
            mallory.say(attempt)
            shown = unicodedata.normalize("NFKC", attempt)
            self.assertEqual(
                mallory.received(), [f"*** nickname {shown} is taken"], attempt
            )
        mallory.say("/nick mallory", "/nick BoB")
        self.assertEqual(mallory.received()[-1], "*** nickname BoB is taken")

    def test_invalidNicknames(self) -> None:
        """
        Nicknames with spaces, invisible or control characters, or too long,
        are refused with the reason.
        """
        client = self.chat.connect()
        client.received()
        client.say("two words", "bob\u200b", "a" * 21)
        self.assertEqual(
            client.received(),
            [
                "*** nickname refused: a nickname has only letters, digits, '-', '_' and '.'",
                "*** nickname refused: a nickname has only letters, digits, '-', '_' and '.'",
                "*** nickname refused: a nickname has at most 20 characters",
            ],
        )

    def test_commandsNeedANickname(self) -> None:
        """
        C{/join}, C{/msg} and C{/me} need a nickname first.
        """
        client = self.chat.connect()
        client.received()
        client.say("/join dev", "/msg bob hi", "/me waves")
        self.assertEqual(
            client.received(), ["*** pick a nickname first: /nick NAME"] * 3
        )

    def test_joinCreatesRoomsAndMoves(self) -> None:
        """
        C{/join ROOM} creates the room on demand and leaves the old one;
        both rooms are told.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.received()
        bob.say("/join #Dev")
        self.assertEqual(alice.received(), ["*** bob left #lobby"])
        self.assertEqual(bob.received(), ["*** bob left #lobby", "*** bob joined #dev"])
        bob.say("in dev")
        self.assertEqual(alice.received(), [])
        alice.say("/join dev")
        self.assertEqual(bob.received(), ["*** alice joined #dev"])
        bob.say("/join DEV")
        self.assertEqual(bob.received(), ["*** you are already in #dev"])

    def test_partAndNoRoom(self) -> None:
        """
        C{/part} leaves the room; lines then go nowhere, with a notice.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.received()
        bob.say("/part")
        self.assertEqual(alice.received(), ["*** bob left #lobby"])
        self.assertEqual(bob.received(), ["*** bob left #lobby", "*** you left #lobby"])
        bob.say("anyone?", "/part")
        self.assertEqual(
            bob.received(),
            ["*** you are in no room: /join ROOM", "*** you are in no room"],
        )
        self.assertEqual(alice.received(), [])

    def test_roomsAndWho(self) -> None:
        """
        C{/rooms} lists rooms with members; C{/who} lists a room's members.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        bob.say("/join dev")
        bob.received()
        alice.received()
        alice.say("/rooms", "/who", "/who #dev", "/who nowhere")
        self.assertEqual(
            alice.received(),
            [
                "*** rooms: #dev (1), #lobby (1)",
                "*** #lobby (1): alice",
                "*** #dev (1): bob",
                "*** nobody is in #nowhere",
            ],
        )

    def test_privateMessage(self) -> None:
        """
        C{/msg NICK text} reaches only that client (found by its key, so any
        case works), in any room; the sender gets a confirmation; an unknown
        nickname gets a notice.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        carol = self.chat.join("carol")
        bob.say("/join elsewhere")
        for client in (alice, bob, carol):
            client.received()
        alice.say("/msg BOB psst", "/msg nobody hello", "/msg bob")
        self.assertEqual(bob.received(), ["*alice* psst"])
        self.assertEqual(carol.received(), [])
        self.assertEqual(
            alice.received(),
            [
                "-> *BOB* psst",
                "*** no such nickname: nobody",
                "*** usage: /msg NICK TEXT",
            ],
        )

    def test_me(self) -> None:
        """
        C{/me action} shows as C{* nick action}.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.say("/me waves")
        self.assertEqual(bob.received(), ["* alice waves"])

    def test_help(self) -> None:
        """
        C{/help} lists every command.
        """
        client = self.chat.connect()
        client.received()
        client.say("/help")
        text = "\n".join(client.received())
        for command in [
            "/nick",
            "/join",
            "/part",
            "/rooms",
            "/who",
            "/msg",
            "/me",
            "/help",
            "/quit",
        ]:
            self.assertIn(command, text)

    def test_unknownCommand(self) -> None:
        """
        An unknown command gets a one-line error.
        """
        client = self.chat.join("alice")
        client.say("/frobnicate now")
        self.assertEqual(
            client.received(), ["*** unknown command /frobnicate (try /help)"]
        )

    def test_quit(self) -> None:
        """
        C{/quit reason} says goodbye, closes the connection, and the room
        sees the reason; the nickname is free again.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.received()
        bob.say("/quit gotta go", "ignored")
        self.assertEqual(bob.received(), ["*** bye"])
        self.assertTrue(bob.closed)
        self.assertEqual(alice.received(), ["*** bob left #lobby (quit: gotta go)"])
        self.assertEqual(self.chat.join("bob").protocol.session.nick, "bob")

    def test_connectionLostLeaves(self) -> None:
        """
        A client whose connection drops leaves its room and frees its
        nickname.
        """
        alice = self.chat.join("alice")
        bob = self.chat.join("bob")
        alice.received()
        bob.session.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(alice.received(), ["*** bob left #lobby (connection lost)"])

    def test_history(self) -> None:
        """
        Joining a room replays its last C{history_lines} messages, framed by
        notices; joins and parts are not part of it.
        """
        chat = ChatHarness(self, history_lines=2)
        alice = chat.join("alice")
        alice.say("one", "two", "/me three")
        bob = chat.connect()
        bob.received()
        bob.say("bob")
        self.assertEqual(
            bob.received(),
            [
                "*** you are now known as bob",
                "*** last 2 messages in #lobby:",
                "<alice> two",
                "* alice three",
                "*** end of history",
                "*** bob joined #lobby",
            ],
        )

    def test_historyDisabled(self) -> None:
        """
        C{history_lines = 0} replays nothing.
        """
        chat = ChatHarness(self, history_lines=0)
        alice = chat.join("alice")
        alice.say("one")
        bob = chat.connect()
        bob.received()
        bob.say("bob")
        self.assertEqual(
            bob.received(), ["*** you are now known as bob", "*** bob joined #lobby"]
        )

    def test_noDefaultRoom(self) -> None:
        """
        With C{default_room = ""} a client joins no room until it asks.
        """
        chat = ChatHarness(self, default_room="")
        client = chat.connect()
        client.received()
        client.say("alice", "hi")
        self.assertEqual(
            client.received(),
            ["*** you are now known as alice", "*** you are in no room: /join ROOM"],
        )

    def test_tooManyRooms(self) -> None:
        """
        Past C{max_rooms} an empty room is forgotten to make space; if every
        room has members, a new one cannot be created.
        """
        chat = ChatHarness(self, max_rooms=2)
        alice = chat.join("alice")
        bob = chat.join("bob")
        bob.say("/join b")
        bob.received()
        alice.received()
        alice.say("/join c")
        self.assertEqual(alice.received(), ["*** cannot join #c: too many rooms"])
        bob.say("/join lobby")
        alice.say("/join c")
        self.assertEqual(alice.received()[-1], "*** alice joined #c")

    def test_tcpNoDelay(self) -> None:
        """
        The protocol turns Nagle's algorithm off.
        """

        class Transport(StringTransport):
            """
            A transport that records C{setTcpNoDelay}.
            """

            noDelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.noDelay = enabled

        protocol = ChatLineProtocol(self.chat.server)
        transport = Transport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.noDelay)
        self.assertIs(transport.producer, protocol.gate)
        self.assertTrue(transport.streaming)


class SafetyTests(SynchronousTestCase):
    """
    The safety bullets: escapes, long lines, floods, slow consumers, limits.
    """

    def test_escapeSequencesNeverReachOthers(self) -> None:
        """
        Escape sequences, control characters, bidi overrides and invalid
        UTF-8 sent by one client never reach another: what others get has
        none of them, and nicknames cannot carry them either.
        """
        chat = ChatHarness(self, flood_lines_burst=100)
        mallory = chat.join("mallory")
        alice = chat.join("alice")
        payloads = [
            b"\x1b[2J\x1b[H cleared your screen",
            b"\x1b]52;c;cm0gLXJmIH4=\x07 wrote your clipboard",
            b"\x1b]0;title\x1b\\ set your title",
            b"\xc2\x9b31m C1 CSI",
            b"\x1b[6n asks your terminal to answer",
            b"bell\x07\x07 backspace\x08\x08 nul\x00 del\x7f",
            b"\xe2\x80\xaegnp.exe \xe2\x81\xa6isolate",
            b"bad utf-8 \xff\xfe\xc0\xaf",
            b"\x1bP+q544e\x1b\\ DCS",
        ]
        for payload in payloads:
            mallory.send(payload + b"\n")
        mallory.send(b"/me \x1b[5mblinks\n/msg alice \x1b[31mred\n")
        mallory.send(b"/nick ev\x1b[0mil\n")
        data = alice.transport.value()
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\n", "")
        self.assertIsNone(FORBIDDEN.search(text), repr(data))
        self.assertNotIn(b"\x1b", data)
        lines = alice.received()
        self.assertEqual(len(lines), len(payloads) + 3)
        self.assertEqual(lines[-1], "*** mallory is now known as evil")

    def test_longLineRefused(self) -> None:
        """
        A 20,000-byte line is refused with a notice and not relayed; the
        lines around it are, whether the bytes come at once or in pieces.
        """
        for chunk in (None, 1000, 7):
            chat = ChatHarness(self)
            mallory = chat.join("mallory")
            alice = chat.join("alice")
            data = b"before\n" + b"x" * 20_000 + b"\nafter\n"
            if chunk is None:
                mallory.send(data)
            else:
                for i in range(0, len(data), chunk):
                    mallory.send(data[i : i + chunk])
            self.assertEqual(alice.received(), ["<mallory> before", "<mallory> after"])
            self.assertEqual(
                mallory.received(), ["*** line refused: longer than 4096 bytes"]
            )
            self.assertFalse(mallory.closed)

    def test_manyLinesInOneChunk(self) -> None:
        """
        A chunk of thousands of lines, split at arbitrary points (inside
        C{\r\n} too), is read line by line, in order, none lost.
        """
        lines = [f"line {i}" for i in range(3000)]
        data = "".join(line + "\r\n" for line in lines).encode("ascii")
        for cuts in ((), (1, 65536), (7, 40001, 40002)):
            chat = ChatHarness(
                self, flood_lines_burst=10_000, flood_bytes_burst=1_000_000
            )
            mallory = chat.join("mallory")
            alice = chat.join("alice")
            start = 0
            for cut in (*cuts, len(data)):
                mallory.send(data[start:cut])
                start = cut
            self.assertEqual(alice.received(), ["<mallory> " + l for l in lines])

    def test_unfinishedLongLineRefusedAtOnce(self) -> None:
        """
        An unfinished line already longer than C{max_line_length} is refused
        before it ends and not buffered; the rest of it is skipped and the
        next line is read.
        """
        chat = ChatHarness(self, max_line_length=100)
        mallory = chat.join("mallory")
        alice = chat.join("alice")
        mallory.send(b"x" * 102)
        self.assertEqual(
            mallory.received(), ["*** line refused: longer than 100 bytes"]
        )
        self.assertEqual(mallory.protocol._buffer, b"")
        mallory.send(b"y" * 5000)
        mallory.send(b"zz\nhello\n")
        self.assertEqual(alice.received(), ["<mallory> hello"])
        self.assertEqual(mallory.received(), [])

    def test_linesAfterQuitAreNotRead(self) -> None:
        """
        Lines in the same chunk after C{/quit} are not relayed.
        """
        chat = ChatHarness(self)
        mallory = chat.join("mallory")
        alice = chat.join("alice")
        mallory.send(b"first\n/quit bye\nsecond\nthird\n")
        lines = alice.received()
        self.assertIn("<mallory> first", lines)
        self.assertNotIn("<mallory> second", lines)
        self.assertTrue(mallory.closed)

    def test_bytesArrivingWhileReadingAreRead(self) -> None:
        """
        Bytes handed to C{dataReceived} while it is handling a line (a
        re-entrant call) are read after the lines before them, in order.
        """
        chat = ChatHarness(self)
        mallory = chat.join("mallory")
        alice = chat.join("alice")
        protocol = mallory.protocol
        session = protocol.session
        assert session is not None
        original = session.linesReceived
        fed = []

        def linesReceived(lines: list[bytes]) -> None:
            original(lines)
            if not fed:
                fed.append(lines)
                protocol.dataReceived(b"inner\n")

        session.linesReceived = linesReceived  # type: ignore[method-assign]
        mallory.send(b"one\ntwo\n")
        self.assertEqual(
            alice.received(), ["<mallory> one", "<mallory> two", "<mallory> inner"]
        )

    def test_longestLineAccepted(self) -> None:
        """
        A line of exactly C{max_line_length} bytes (with or without C{\\r})
        is accepted; one byte more is refused.
        """
        chat = ChatHarness(self, max_line_length=100)
        mallory = chat.join("mallory")
        alice = chat.join("alice")
        mallory.send(b"a" * 100 + b"\r\n" + b"b" * 100 + b"\n" + b"c" * 101 + b"\n")
        self.assertEqual(
            alice.received(), ["<mallory> " + "a" * 100, "<mallory> " + "b" * 100]
        )
        self.assertEqual(
            mallory.received(), ["*** line refused: longer than 100 bytes"]
        )

    def test_repeatedLongLinesDisconnect(self) -> None:
        """
        A client that keeps sending over-long lines is disconnected after
        C{max_refusals} in a row, and the kick is logged with its reason.
        """
        chat = ChatHarness(self, max_line_length=100, max_refusals=3)
        mallory = chat.join("mallory")
        alice = chat.join("alice")
        alice.received()
        for _ in range(3):
            mallory.send(b"x" * 200 + b"\n")
        self.assertFalse(mallory.closed)
        mallory.send(b"x" * 200 + b"\n")
        self.assertTrue(mallory.closed)
        self.assertEqual(
            mallory.received(),
            [
                "*** line refused: longer than 100 bytes",
                "*** disconnected: too many over-long lines",
            ],
        )
        self.assertEqual(
            alice.received(),
            ["*** mallory left #lobby (kicked: too many over-long lines)"],
        )
        [kick] = chat.chatEvents("kick")
        self.assertEqual(kick["reason"], "too many over-long lines")
        self.assertEqual(kick["nick"], "mallory")

    def test_floodRelaysAtMostTheConfiguredRate(self) -> None:
        """
        A client sending 1,000 lines a second for 5 seconds gets at most
        C{flood_lines_burst} plus C{flood_lines_per_second} per second
        relayed; the rest is refused (with one notice per run of refusals).
        """
        chat = ChatHarness(
            self, flood_lines_per_second=5, flood_lines_burst=10, max_refusals=10**9
        )
        flooder = chat.join("flooder")
        alice = chat.join("alice")
        for i in range(5000):
            flooder.say(f"line {i}")
            chat.clock.advance(0.001)
        relayed = alice.received()
        self.assertLessEqual(len(relayed), 10 + 5 * 5 + 1)
        self.assertGreaterEqual(len(relayed), 5 * 5)
        self.assertTrue(all(line.startswith("<flooder> line ") for line in relayed))
        notices = flooder.received()
        self.assertEqual(
            set(notices),
            {"*** line refused: flood limit (5 lines and 4096 bytes a second)"},
        )
        self.assertLessEqual(len(notices), len(relayed) + 1)

    def test_byteFloodLimited(self) -> None:
        """
        The byte rate is enforced too: long lines at a low line rate are
        refused once the byte budget is spent.
        """
        chat = ChatHarness(
            self,
            flood_bytes_per_second=1000,
            flood_bytes_burst=2000,
            max_line_length=900,
            max_refusals=10**9,
        )
        flooder = chat.join("flooder")
        alice = chat.join("alice")
        for _ in range(10):
            flooder.say("x" * 899)
            chat.clock.advance(0.1)
        self.assertEqual(len(alice.received()), 2 + 1)

    def test_persistentFlooderDisconnected(self) -> None:
        """
        A client that keeps flooding is disconnected after C{max_refusals}
        refused lines in a row; the kick is logged.
        """
        chat = ChatHarness(self)
        flooder = chat.join("flooder")
        chat.join("alice")
        flooder.send(b"spam\n" * 100)
        self.assertTrue(flooder.closed)
        self.assertEqual(flooder.received()[-1], "*** disconnected: flooding")
        self.assertEqual([e["reason"] for e in chat.chatEvents("kick")], ["flooding"])

    def test_floodRecovers(self) -> None:
        """
        After a pause, a client that was refused may talk again.
        """
        chat = ChatHarness(self, flood_lines_burst=2, flood_lines_per_second=1)
        talker = chat.join("talker")
        alice = chat.join("alice")
        chat.clock.advance(10)
        talker.say("a", "b", "c")
        chat.clock.advance(2)
        talker.say("d")
        self.assertEqual(alice.received(), ["<talker> a", "<talker> b", "<talker> d"])

    def test_slowConsumerDisconnected(self) -> None:
        """
        A client whose transport buffer is full (its producer paused) is
        disconnected, pending output dropped, once more than
        C{max_pending_output} bytes were written in the meantime; the others
        get everything and the kick is logged.
        """
        chat = ChatHarness(
            self,
            max_pending_output=10_000,
            flood_lines_per_second=10**6,
            flood_lines_burst=10**6,
            flood_bytes_per_second=1e12,
            flood_bytes_burst=2**40,
        )
        sleeper = chat.join("sleeper")
        talker = chat.join("talker")
        reader = chat.join("reader")
        sleeper.received()
        sleeper.transport.producer.pauseProducing()
        line = "y" * 990
        for _ in range(20):
            talker.say(line)
        self.assertTrue(sleeper.transport.disconnecting)
        self.assertTrue(sleeper.protocol.session.closed)
        written = len(sleeper.transport.value())
        self.assertLessEqual(written, 10_000 + 1000)
        lines = reader.received()
        self.assertEqual(lines.count(f"<talker> {line}"), 20)
        self.assertIn(
            "*** sleeper left #lobby (kicked: too slow: more than 10000 bytes of "
            "output pending)",
            lines,
        )
        [kick] = chat.chatEvents("kick")
        self.assertEqual(
            kick["reason"], "too slow: more than 10000 bytes of output pending"
        )

    def test_pauseOnEveryWriteStillCounts(self) -> None:
        """
        A transport calls C{pauseProducing} on every write while its buffer
        is full; the pending count is not reset by the repeats, so a client
        that never reads is still disconnected at the bound.
        """

        class FullTransport(StringTransport):
            """
            A transport whose buffer stays full: it pauses its producer on every write.
            """

            full = False

            def write(self, data: bytes) -> None:
                super().write(data)
                if self.full and self.producer is not None:
                    self.producer.pauseProducing()

        chat = ChatHarness(self, max_pending_output=5_000, flood_lines_burst=1000)
        talker = chat.join("talker")
        protocol = ChatLineProtocol(chat.server)
        transport = FullTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"sleeper\n")
        transport.full = True
        for _ in range(20):
            talker.say("z" * 1000)
        self.assertTrue(transport.disconnected)
        self.assertTrue(protocol.session.closed)

    def test_resumedConsumerKeepsGoing(self) -> None:
        """
        A client whose buffer drains (producer resumed) starts a fresh
        count: being briefly behind is not punished.
        """
        chat = ChatHarness(self, max_pending_output=5_000, flood_lines_burst=1000)
        reader = chat.join("reader")
        talker = chat.join("talker")
        gate = reader.transport.producer
        for _ in range(4):
            gate.pauseProducing()
            for _ in range(4):
                talker.say("z" * 1000)
            gate.resumeProducing()
        self.assertFalse(reader.closed)
        self.assertEqual(len(reader.received()), 16)

    def test_idleTimeoutAndLimitsComeFromSessions(self) -> None:
        """
        The service's C{limits} apply: C{max_sessions_per_peer} refuses a
        client, and the idle timeout disconnects a client that neither
        sends nor receives, which leaves its room saying why.
        """
        chat = ChatHarness(self, limits=Limits(maxSessionsPerPeer=2, idleTimeout=60))
        alice = chat.join("alice")
        bob = chat.join("bob")
        refused = chat.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        self.assertIsNone(refused)
        carol = chat.join("carol", host="192.0.2.2")
        carol.say("/join elsewhere")
        for _ in range(10):
            chat.clock.advance(10)
            bob.say("still here")
        self.assertTrue(carol.closed)
        self.assertFalse(alice.closed)
        self.assertFalse(bob.closed)
        # StringTransport does not call connectionLost; do what the reactor
        # would.
        carol.session.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(chat.chatEvents("part")[-1]["reason"], "idle timeout")


class LoggingTests(SynchronousTestCase):
    """
    Structured log events.
    """

    def test_eventsAndNoMessageText(self) -> None:
        """
        Nicknames, joins, parts and quits are logged as structured events
        with their reasons; message text is not logged by default.
        """
        chat = ChatHarness(self)
        alice = chat.join("alice")
        alice.say("secret words", "/nick alicia", "/join dev", "/quit done")
        kinds = [e["chatEvent"] for e in chat.events]
        self.assertEqual(kinds, ["nick", "join", "nick", "part", "join", "part"])
        self.assertEqual(chat.chatEvents("nick")[1]["oldNick"], "alice")
        self.assertEqual(
            [(e["room"], e["reason"]) for e in chat.chatEvents("part")],
            [("lobby", "part"), ("dev", "quit: done")],
        )
        for event in chat.events:
            self.assertEqual(event["service"], "chat")
            self.assertEqual(event["via"], "tcp")
            self.assertNotIn("secret", repr(event))

    def test_logMessages(self) -> None:
        """
        With C{log_messages = true}, messages, actions and private messages
        are logged too.
        """
        chat = ChatHarness(self, log_messages=True)
        alice = chat.join("alice")
        chat.join("bob")
        alice.say("hello", "/me waves", "/msg bob psst")
        texts = [(e["chatEvent"], e["text"]) for e in chat.events if "text" in e]
        self.assertEqual(
            texts, [("message", "hello"), ("action", "waves"), ("private", "psst")]
        )


class ProtocolFuzzTests(SynchronousTestCase):
    """
    Random bytes into the line protocol.
    """

    def feed(self, chunks: list[bytes]) -> tuple[bytes, bytes, bool, Any]:
        """
        Feed chunks to a client of a fresh service, with an observer.

        @param chunks: The bytes, in pieces.
        @return: What the client and the observer got, whether the client
            was disconnected, and the observer's view of the room.
        """
        chat = ChatHarness(self, max_line_length=64, history_lines=3)
        observer = chat.join("observer")
        client = chat.connect(host="192.0.2.9")
        for chunk in chunks:
            client.send(chunk)
        observer.say("/who", "/rooms")
        return (
            client.transport.value(),
            observer.transport.value(),
            client.closed,
            chat.server.hub.roomCount(),
        )

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=80),
                st.sampled_from(
                    [
                        b"\n",
                        b"\r\n",
                        b"\r",
                        b"x" * 70,
                        b"/nick ",
                        b"/join ",
                        b"/part\n",
                        b"/quit\n",
                        b"/me ",
                        b"/msg observer ",
                        b"bob\n",
                        b"\x1b[31m",
                        b"\xff",
                        b"\xe2\x80\xae",
                    ]
                ),
            ),
            max_size=30,
        )
    )
    def test_wholeAndByteByByteAgree(self, pieces: list[bytes]) -> None:
        """
        Random bytes never raise, and give exactly the same results (what the
        client and another member see, whether the client is disconnected)
        whether they arrive at once or one byte at a time.
        """
        data = b"".join(pieces)
        whole = self.feed([data])
        byByte = self.feed([data[i : i + 1] for i in range(len(data))])
        self.assertEqual(whole, byByte)
        self.assertIsNone(
            FORBIDDEN.search(whole[1].decode("utf-8").replace("\r\n", ""))
        )


class HubTests(SynchronousTestCase):
    """
    Tests for L{LocalHub} and the hub seam.
    """

    def test_interfaces(self) -> None:
        """
        L{LocalHub} provides L{IChatHub}; L{ChatSession} provides
        L{IChatMember}.
        """
        chat = ChatHarness(self)
        self.assertTrue(verifyObject(IChatHub, chat.server.hub))
        client = chat.join("alice")
        self.assertTrue(verifyObject(IChatMember, client.protocol.session))

    def test_nickClaims(self) -> None:
        """
        A nickname key can be held by one member at a time.
        """

        class Member:
            """
            A minimal L{IChatMember}.
            """

            memberId = "m"
            nick = None

            def deliver(self, batch: EventBatch) -> None:
                pass

        hub = LocalHub(Clock())
        a, b = Member(), Member()
        self.assertTrue(hub.claimNick(a, "x").result)
        self.assertTrue(hub.claimNick(a, "x").result)
        self.assertFalse(hub.claimNick(b, "x").result)
        hub.releaseNick(b, "x")
        self.assertFalse(hub.claimNick(b, "x").result)
        hub.releaseNick(a, "x")
        self.assertTrue(hub.claimNick(b, "x").result)

    def test_historyBounded(self) -> None:
        """
        A room keeps its last C{historyLines} messages and actions only.
        """
        clock = Clock()
        hub = LocalHub(clock, historyLines=2)
        hub.join("r", _Recorder())
        for i in range(5):
            hub.publish("r", ChatEvent(MESSAGE, "#r", "n", str(i)))
        clock.advance(0)
        self.assertEqual([e.text for e in hub.history("r").result], ["3", "4"])

    def test_memberLeavingDuringDelivery(self) -> None:
        """
        A member that leaves (or makes another leave) while an event is
        being delivered does not disturb the delivery to the others.
        """
        clock = Clock()
        hub = LocalHub(clock)
        recorders = [_Recorder() for _ in range(3)]
        leaver = _Recorder(onDeliver=lambda: [hub.leave("r", m) for m in recorders])
        hub.join("r", leaver)
        for member in recorders:
            hub.join("r", member)
        hub.publish("r", ChatEvent(MESSAGE, "#r", "n", "hi"))
        clock.advance(0)
        self.assertEqual([len(m.events) for m in recorders], [1, 1, 1])
        hub.publish("r", ChatEvent(MESSAGE, "#r", "n", "again"))
        clock.advance(0)
        self.assertEqual([len(m.events) for m in recorders], [1, 1, 1])

    def test_batchesPerIteration(self) -> None:
        """
        What is published to a room during one reactor iteration reaches
        each member as one batch, in order, with the lines joined once;
        history is updated when it is delivered.
        """
        clock = Clock()
        hub = LocalHub(clock)
        member = _Recorder()
        hub.join("r", member)
        for i in range(3):
            hub.publish("r", ChatEvent(MESSAGE, "#r", "n", str(i)))
        self.assertEqual(member.batches, [])
        self.assertEqual(hub.history("r").result, [])
        clock.advance(0)
        [batch] = member.batches
        self.assertEqual([e.text for e in batch.events], ["0", "1", "2"])
        self.assertEqual(batch.data, b"<n> 0\r\n<n> 1\r\n<n> 2\r\n")
        self.assertEqual(len(hub.history("r").result), 3)

    def test_publishAll(self) -> None:
        """
        C{publishAll} publishes its events in order, after what was published
        before in the same iteration, into one batch; to a room nobody is in
        it publishes nothing.
        """
        clock = Clock()
        hub = LocalHub(clock)
        member = _Recorder()
        hub.join("r", member)
        hub.publish("r", ChatEvent(MESSAGE, "#r", "n", "0"))
        hub.publishAll("r", [ChatEvent(MESSAGE, "#r", "n", str(i)) for i in (1, 2)])
        hub.publishAll("nobody", [ChatEvent(MESSAGE, "#nobody", "n", "x")])
        clock.advance(0)
        [batch] = member.batches
        self.assertEqual([e.text for e in batch.events], ["0", "1", "2"])

    def test_messagesAroundCommandsKeepTheirOrder(self) -> None:
        """
        Messages and commands in one chunk reach the room in the order they
        were sent, with each message rendered as L{render} renders it.
        """
        chat = ChatHarness(self)
        mallory = chat.join("mallory")
        alice = chat.join("alice")
        mallory.send(b"one\n/me waves\ntwo\n/nick eve\nthree\n")
        self.assertEqual(
            alice.received(),
            [
                "<mallory> one",
                "* mallory waves",
                "<mallory> two",
                "*** mallory is now known as eve",
                "<eve> three",
            ],
        )

    def test_settle(self) -> None:
        """
        C{settle} delivers what is pending at once (so a notice can follow
        the events that caused it), and cancels the pending delivery.
        """
        clock = Clock()
        hub = LocalHub(clock)
        member = _Recorder()
        hub.join("r", member)
        hub.publish("r", ChatEvent(MESSAGE, "#r", "n", "x"))
        hub.settle()
        self.assertEqual(len(member.events), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_asynchronousHubKeepsLineOrder(self) -> None:
        """
        With a hub whose answers come later (a remote backend), the lines a
        client sends after a command wait for it, and run in order.
        """
        chat = ChatHarness(self)
        pending: list[Deferred[bool]] = []
        local = chat.server.hub

        class SlowHub:
            """
            The local hub, but nickname claims answer only when told to.
            """

            def __getattr__(self, name: str) -> Any:
                return getattr(local, name)

            def claimNick(self, member: Any, key: str) -> Deferred[bool]:
                d: Deferred[bool] = Deferred()
                pending.append(d)
                d.addCallback(lambda _: local.claimNick(member, key))
                return d

        alice = chat.join("alice")
        chat.server.hub = SlowHub()  # type: ignore[assignment]
        bob = chat.connect()
        bob.received()
        bob.say("bob", "first", "second")
        self.assertEqual(alice.received(), [])
        pending[0].callback(None)
        self.assertEqual(
            alice.received(),
            ["*** bob joined #lobby", "<bob> first", "<bob> second"],
        )


class _Recorder:
    """
    An L{IChatMember} that records what it is delivered.
    """

    nick = "recorder"

    def __init__(self, onDeliver: Any = None) -> None:
        self.events: list[ChatEvent] = []
        self.batches: list[EventBatch] = []
        self.onDeliver = onDeliver
        self.memberId = str(id(self))

    def deliver(self, batch: EventBatch) -> None:
        self.batches.append(batch)
        self.events.extend(batch.events)
        if self.onDeliver is not None:
            self.onDeliver()


class ConfigTests(SynchronousTestCase):
    """
    The chat service type and its configuration.
    """

    def test_registered(self) -> None:
        """
        C{type = "chat"} is registered, with stream, datagram and web
        builders.
        """
        chat = serviceTypes()["chat"]
        self.assertEqual(chat.transports, frozenset({"stream", "datagram"}))
        self.assertIsNotNone(chat.buildWebResource)

    def test_settingsRead(self) -> None:
        """
        Every chat key is read from the service's table into
        L{ChatSettings}.
        """
        config = parseConfig(
            serviceTypes(),
            """
            [services.chat]
            type = "chat"
            listen = ["tcp:10023:interface=127.0.0.1", "udp:10023:interface=127.0.0.1"]
            greeting = "Hi there"
            default_room = "#Main"
            history_lines = 5
            max_rooms = 10
            max_line_length = 1000
            max_nick_length = 12
            max_room_length = 16
            flood_lines_per_second = 2.5
            flood_lines_burst = 4
            flood_bytes_per_second = 500
            flood_bytes_burst = 3000
            max_refusals = 7
            max_pending_output = 65536
            udp_member_timeout = 120
            udp_credit_limit = 4096
            log_messages = true
            web_check_origin = false
            """,
            "test",
        )
        settings = ChatSettings.fromMapping(config.services[0].settings)
        self.assertEqual(
            settings,
            ChatSettings(
                greeting="Hi there",
                defaultRoom="Main",
                historyLines=5,
                maxRooms=10,
                maxLineLength=1000,
                maxNickLength=12,
                maxRoomLength=16,
                floodLinesPerSecond=2.5,
                floodLinesBurst=4,
                floodBytesPerSecond=500.0,
                floodBytesBurst=3000,
                maxRefusals=7,
                maxPendingOutput=65536,
                udpMemberTimeout=120.0,
                udpCreditLimit=4096,
                logMessages=True,
                webCheckOrigin=False,
            ),
        )

    def test_defaultsMatch(self) -> None:
        """
        The settings' defaults are L{ChatSettings}' defaults.
        """
        values = {s.key: s.default for s in serviceTypes()["chat"].settings}
        self.assertEqual(ChatSettings.fromMapping(values), ChatSettings())

    def test_badValues(self) -> None:
        """
        Bad values are reported with their key paths, all at once.
        """
        from netd.config import ConfigError

        with self.assertRaises(ConfigError) as caught:
            parseConfig(
                serviceTypes(),
                """
                [services.chat]
                type = "chat"
                listen = ["tcp:10023"]
                greeting = "two\\nlines"
                default_room = "no spaces"
                max_line_length = 10
                log_mesages = true
                """,
                "test",
            )
        lines = caught.exception.lines()
        self.assertEqual(len(lines), 4, lines)
        self.assertIn(
            "test: services.chat.greeting: expected 1 to 200 printable characters on one line",
            lines,
        )
        self.assertIn(
            "test: services.chat.default_room: a room name has only letters, digits, '-', '_' and '.'",
            lines,
        )
        self.assertIn(
            "test: services.chat.max_line_length: 10 is out of range (64 to 65536)",
            lines,
        )
        self.assertIn(
            "test: services.chat.log_mesages: unknown key (did you mean 'log_messages'?)",
            lines,
        )

    def test_documented(self) -> None:
        """
        Every chat key appears in the configuration reference's chat table
        (C{docs/configuration.md}) and in C{etc/netd.toml}.
        """
        import os

        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(
            os.path.join(repo, "docs", "configuration.md"), encoding="utf-8"
        ) as f:
            readme = f.read()
        with open(os.path.join(repo, "etc", "netd.toml"), encoding="utf-8") as f:
            example = f.read()
        for setting in serviceTypes()["chat"].settings:
            self.assertIn(f"| `{setting.key}` |", readme, setting.key)
            self.assertIn(f"{setting.key} =", example, setting.key)

    def test_oneServerPerInstance(self) -> None:
        """
        The stream factory, the datagram protocols and the web resource of
        one instance share one L{ChatServer} (one hub).
        """
        from netd.descriptions import DatagramListener
        from netd.services.chat import (
            buildDatagramProtocol,
            buildStreamFactory,
            buildWebResource,
        )
        from tests.support import makeContext

        context = makeContext("chat")
        factory = buildStreamFactory(context)
        protocol = buildDatagramProtocol(
            context, DatagramListener("udp:1", 1, "127.0.0.1")
        )
        resource = buildWebResource(context)
        self.assertIsInstance(factory.server, ChatServer)
        self.assertIs(protocol.server, factory.server)
        self.assertIs(resource.chatServer, factory.server)
        self.assertIsNot(buildStreamFactory(makeContext("chat")).server, factory.server)
