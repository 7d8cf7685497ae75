# -*- test-case-name: tests.test_chat_udp -*-
"""
Tests for L{netd.chat.udp}: the chat service over datagrams, in memory.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netd.chat.udp import HINT, ChatDatagramProtocol
from netd.limits import Limits
from netd.descriptions import DatagramListener
from netd.services.chat import buildDatagramProtocol
from tests.chatsupport import ChatHarness
from tests.support import FakeDatagramTransport


class UDPHarness(ChatHarness):
    """
    A chat service with one UDP listener and TCP clients on a fake clock.

    @ivar udp: The UDP protocol; its transport records what it sends.
    """

    def __init__(
        self, testCase: Any, limits: Limits | None = None, **settings: Any
    ) -> None:
        super().__init__(testCase, limits, **settings)
        self.udp: ChatDatagramProtocol = buildDatagramProtocol(
            self.context, DatagramListener("udp:10023", 10023, "127.0.0.1")
        )
        self.udp.transport = FakeDatagramTransport()
        self.udp.doStart()
        testCase.addCleanup(self.udp.doStop)

    def datagram(
        self, data: bytes | str, addr: tuple[str, int] = ("198.51.100.7", 5000)
    ) -> None:
        """
        Deliver one datagram.

        @param data: Its payload (text is encoded as UTF-8).
        @param addr: Its source.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.udp.datagramReceived(data, addr)
        self.clock.advance(0)

    def sent(self, addr: tuple[str, int] = ("198.51.100.7", 5000)) -> list[str]:
        """
        What was sent to one source since the last call.

        @param addr: The source.
        @return: The lines, decoded.
        """
        written = self.udp.transport.written
        mine = [data for data, to in written if to == addr]
        self.udp.transport.written = [(d, to) for d, to in written if to != addr]
        return [data.decode("utf-8").rstrip("\r\n") for data in mine]


PAD = " " * 200 + "\n"


class UDPChatTests(SynchronousTestCase):
    """
    UDP members, TCP members, one set of rooms.
    """

    def test_nickMakesAMemberInTheSameRooms(self) -> None:
        """
        C{/nick NAME} from a UDP source makes it a member of the default
        room, where TCP members see it; its lines reach them, and theirs
        reach it.
        """
        chat = UDPHarness(self)
        alice = chat.join("alice")
        chat.datagram("/nick carol" + " " * 100 + "\n")
        self.assertEqual(
            chat.sent(),
            ["*** you are now known as carol", "*** carol joined #lobby"],
        )
        self.assertEqual(alice.received(), ["*** carol joined #lobby"])
        chat.datagram("hi from udp\n")
        self.assertEqual(alice.received(), ["<carol> hi from udp"])
        chat.datagram(PAD)
        alice.say("hi from tcp")
        self.assertEqual(chat.sent(), ["<alice> hi from tcp"])

    def test_strangerGetsOneShortReply(self) -> None:
        """
        A source that has not joined gets one short reply, never larger than
        its datagram, and nothing after that; a datagram smaller than the
        reply gets none.
        """
        chat = UDPHarness(self)
        chat.datagram("hi")
        self.assertEqual(chat.sent(), [])
        chat.datagram("x" * 100)
        self.assertEqual(chat.sent(), [HINT.decode().rstrip()])
        for _ in range(10):
            chat.datagram("x" * 100)
            chat.datagram("/help" + " " * 100)
        self.assertEqual(chat.sent(), [])
        other = ("198.51.100.8", 5000)
        chat.datagram("y" * 100, other)
        self.assertEqual(len(chat.sent(other)), 1)

    def test_failedNickIsTheOneReply(self) -> None:
        """
        A C{/nick} that fails (taken) gets its reason as the source's one
        reply and leaves no member behind.
        """
        chat = UDPHarness(self)
        chat.join("alice")
        chat.datagram("/nick ALICE" + " " * 40)
        self.assertEqual(chat.sent(), ["*** nickname ALICE is taken"])
        self.assertEqual(chat.udp.clients, {})
        chat.datagram("/nick Alice" + " " * 40)
        self.assertEqual(chat.sent(), [])

    def test_noAmplification(self) -> None:
        """
        A member in a busy room is sent at most as many bytes as it sent:
        what does not fit is dropped and counted, and sending more buys
        more.
        """
        chat = UDPHarness(self, flood_lines_burst=1000)
        talker = chat.join("talker")
        chat.datagram("/nick lurker\n")
        sentIn = len("/nick lurker\n")
        for i in range(100):
            talker.say(f"message number {i} " + "z" * 50)
        out = sum(len(d) for d, _ in chat.udp.transport.written)
        self.assertLessEqual(out, sentIn)
        self.assertGreater(chat.context.counters.datagramsDropped, 90)
        chat.datagram(" " * 1000)
        talker.say("now it fits")
        self.assertEqual(chat.sent()[-1], "<talker> now it fits")

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "c"]),
                st.one_of(
                    st.sampled_from(
                        [
                            "/nick x",
                            "/nick y",
                            "/help",
                            "/who",
                            "/rooms",
                            "/join r",
                            "/quit",
                            "",
                        ]
                    ),
                    st.text(max_size=60),
                ),
            ),
            max_size=40,
        )
    )
    def test_neverMoreOutThanIn(self, datagrams: list[tuple[str, str]]) -> None:
        """
        Whatever sources send (commands, text, nicknames), no source is ever
        sent more bytes than it sent, even with a busy TCP room around.
        """
        chat = UDPHarness(self, flood_lines_burst=1000, history_lines=50)
        talker = chat.join("talker")
        for i in range(30):
            talker.say(f"history {i}")
        sources = {
            "a": ("192.0.2.1", 4000),
            "b": ("192.0.2.1", 4001),
            "c": ("192.0.2.2", 4000),
        }
        bytesIn: Counter[tuple[str, int]] = Counter()
        for source, text in datagrams:
            data = text.encode("utf-8")
            bytesIn[sources[source]] += len(data)
            chat.datagram(data, sources[source])
            talker.say("busy busy busy")
        bytesOut: Counter[tuple[str, int]] = Counter()
        for data, addr in chat.udp.transport.written:
            bytesOut[addr] += len(data)
        for addr, count in bytesOut.items():
            self.assertLessEqual(count, bytesIn[addr])

    def test_membersExpire(self) -> None:
        """
        A member silent for C{udp_member_timeout} seconds leaves its room
        (the room is told why) and its nickname is free again.
        """
        chat = UDPHarness(self, udp_member_timeout=60)
        alice = chat.join("alice")
        chat.datagram("/nick carol" + PAD)
        alice.received()
        chat.clock.advance(30)
        chat.datagram("still here" + PAD)
        chat.clock.advance(40)
        self.assertEqual(alice.received(), ["<carol> still here" + PAD.rstrip()])
        chat.clock.advance(30)
        self.assertEqual(alice.received(), ["*** carol left #lobby (timed out)"])
        self.assertEqual(chat.udp.clients, {})
        self.assertEqual(chat.join("carol").protocol.session.nick, "carol")

    def test_quit(self) -> None:
        """
        C{/quit} ends the membership at once.
        """
        chat = UDPHarness(self)
        alice = chat.join("alice")
        chat.datagram("/nick carol" + PAD)
        alice.received()
        chat.datagram("/quit bye")
        self.assertEqual(alice.received(), ["*** carol left #lobby (quit: bye)"])
        self.assertEqual(chat.udp.clients, {})

    def test_sessionLimitsCountUDPMembers(self) -> None:
        """
        UDP members count against C{max_sessions_per_peer} with the TCP
        clients from the same address, and are released when they leave.
        """
        chat = UDPHarness(self, limits=Limits(maxSessionsPerPeer=2))
        chat.join("alice", host="198.51.100.7")
        chat.datagram("/nick b" + PAD, ("198.51.100.7", 1))
        chat.datagram("/nick c" + PAD, ("198.51.100.7", 2))
        self.assertEqual(len(chat.udp.clients), 1)
        chat.datagram("/quit", ("198.51.100.7", 1))
        chat.datagram("/nick c" + PAD, ("198.51.100.7", 2))
        self.assertEqual(len(chat.udp.clients), 1)
        self.assertEqual(chat.context.policy.active, 2)

    def test_floodAndLongLines(self) -> None:
        """
        Flood control and the line length limit apply to UDP members as to
        TCP clients; a persistent flooder is dropped.
        """
        chat = UDPHarness(self, max_line_length=100)
        alice = chat.join("alice")
        chat.datagram("/nick carol" + " " * 80)
        chat.sent()
        alice.received()
        chat.datagram("x" * 101)
        self.assertEqual(chat.sent(), ["*** line refused: longer than 100 bytes"])
        for i in range(30):
            chat.datagram(f"spam {i}")
        self.assertLessEqual(len(alice.received()), 11)
        self.assertEqual(chat.udp.clients, {})
        self.assertEqual(chat.chatEvents("kick")[0]["via"], "udp")

    def test_denyList(self) -> None:
        """
        The service's deny list applies to datagrams.
        """
        import ipaddress

        chat = UDPHarness(
            self, limits=Limits(deny=(ipaddress.ip_network("198.51.100.0/24"),))
        )
        chat.datagram("/nick carol" + PAD)
        self.assertEqual(chat.udp.clients, {})
        self.assertEqual(chat.sent(), [])
