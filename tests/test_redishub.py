# -*- test-case-name: tests.test_redishub -*-
"""
Tests for L{netd.chat.redishub}: two hubs (two nodes, as on two hosts) on
one real C{redis-server}, and the faults: Redis down at start, killed and
restarted, stopped (partitioned), a wrong password, TLS to a plain port.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from netd.chat.hub import JOIN, MESSAGE, PRIVATE, ChatEvent, EventBatch, IChatMember
from netd.chat.redishub import RedisHub, decodeEvents, encodeEvents, hexName
from netd.chat.redisclient import parseHubAddress
from tests.redissupport import SKIP, RedisServer


@implementer(IChatMember)
class Member:
    """
    A member that records what it is delivered.
    """

    def __init__(self, memberId: str, nick: str) -> None:
        self.memberId = memberId
        self.nick = nick
        self.lines: list[str] = []

    def deliver(self, batch: EventBatch) -> None:
        self.lines.extend(event.line for event in batch.events)


def waitFor(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = ""
) -> Deferred[None]:
    """
    @param predicate: A condition.
    @param timeout: Seconds before giving up.
    @param what: For the failure message.
    @return: A L{Deferred} firing once it holds (or failing).
    """
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]

    def check() -> Any:
        if predicate():
            return None
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"timed out waiting for {what or predicate}")
        return deferLater(reactor, 0.01, check)  # type: ignore[arg-type]

    return deferLater(reactor, 0, check)  # type: ignore[arg-type]


def message(room: str, nick: str, text: str, origin: str) -> ChatEvent:
    return ChatEvent(MESSAGE, "#" + room, nick, text, origin, 0.0)


class LogCatcher:
    """
    Collect log events of C{netd.chat.redis}.
    """

    def __init__(self, case: TestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.observe)
        case.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith("netd.chat.redis"):
            self.events.append(event)

    def texts(self, hubEvent: str | None = None) -> list[str]:
        from twisted.logger import formatEvent

        return [
            formatEvent(e)
            for e in self.events
            if hubEvent is None or e.get("hubEvent") == hubEvent
        ]


class RedisTestCase(TestCase):
    """
    Starts a C{redis-server}, makes hubs on it.
    """

    skip = SKIP
    timeout = 60

    def startRedis(self, **kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        self.addCleanup(server.stop)
        server.start()
        return server

    def makeHub(self, url: str, node: str, **kwargs: Any) -> RedisHub:
        kwargs.setdefault("timeout", 1.0)
        kwargs.setdefault("retryMax", 0.3)
        hub = RedisHub(reactor, parseHubAddress(url), "chat", node=node, **kwargs)
        hub.start()
        self.addCleanup(hub.stop)
        return hub


class CodingTests(TestCase):
    """
    Names and events as they go to Redis.
    """

    def test_hexName(self) -> None:
        """
        A name a client chose becomes hex digits only: key syntax (C{*},
        C{{}}, C{:}, spaces, newlines) cannot get through.
        """
        self.assertEqual(hexName("a*{b}: \r\n"), "612a7b627d3a200d0a")
        self.assertTrue(all(c in "0123456789abcdef" for c in hexName("é#x?")))

    def test_eventsRoundTrip(self) -> None:
        """
        Events survive L{encodeEvents} and L{decodeEvents}, lines rendered
        again.
        """
        events = [
            message("lobby", "bob", 'hi "there" é', "1.1"),
            ChatEvent(JOIN, "#lobby", "amy", "", "1.2", 5.0),
        ]
        back = decodeEvents(encodeEvents(events))
        self.assertEqual(
            [e.line for e in back], ['<bob> hi "there" é', "*** amy joined #lobby"]
        )
        self.assertEqual([e.origin for e in back], ["1.1", "1.2"])


class HubTests(RedisTestCase):
    """
    Two nodes on one Redis.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = self.startRedis()
        self.a = self.makeHub(self.redis.url, "node-a")
        self.b = self.makeHub(self.redis.url, "node-b")
        yield waitFor(lambda: self.a.connected and self.b.connected, what="connected")

    @inlineCallbacks
    def test_deliveryAndOrder(self) -> Any:
        """
        Messages published on both nodes reach members on both, in one order
        for everyone; each room's batch goes out as one stream entry per
        iteration.
        """
        amy, bob, cid = Member("a.1", "amy"), Member("b.1", "bob"), Member("b.2", "cid")
        self.assertEqual((yield self.a.join("lobby", amy)), [])
        yield self.b.join("lobby", bob)
        yield self.b.join("lobby", cid)
        for i in range(50):
            self.a.publish("lobby", message("lobby", "amy", f"a{i}", "a.1"))
            self.b.publish("lobby", message("lobby", "bob", f"b{i}", "b.1"))
            if i % 10 == 0:
                yield deferLater(reactor, 0.001, lambda: None)  # type: ignore[arg-type]
        yield waitFor(lambda: len(amy.lines) == 100 and len(cid.lines) == 100)
        self.assertEqual(amy.lines, bob.lines)
        self.assertEqual(amy.lines, cid.lines)
        self.assertEqual(
            [x for x in amy.lines if "<amy>" in x], [f"<amy> a{i}" for i in range(50)]
        )
        self.assertLessEqual(self.a.published, 10)

    @inlineCallbacks
    def test_historyAcrossNodes(self) -> Any:
        """
        What was said on one node is the history a joiner on the other gets,
        oldest first, and L{RedisHub.history} reads it for a room without
        local members.
        """
        amy = Member("a.1", "amy")
        yield self.a.join("lobby", amy)
        for i in range(25):
            self.a.publish("lobby", message("lobby", "amy", f"m{i}", "a.1"))
        yield waitFor(lambda: len(amy.lines) == 25)
        history = yield self.b.history("lobby")
        self.assertEqual(
            [e.line for e in history], [f"<amy> m{i}" for i in range(5, 25)]
        )
        bob = Member("b.1", "bob")
        history = yield self.b.join("lobby", bob)
        self.assertEqual([e.text for e in history], [f"m{i}" for i in range(5, 25)])
        self.a.publish("lobby", message("lobby", "amy", "after", "a.1"))
        yield waitFor(lambda: bob.lines == ["<amy> after"])

    @inlineCallbacks
    def test_nickUnique(self) -> Any:
        """
        A nickname is held by one member in the whole cluster; it comes free
        when released.
        """
        amy, other = Member("a.1", "amy"), Member("b.1", "amy")
        self.assertTrue((yield self.a.claimNick(amy, "amy")))
        self.assertTrue((yield self.a.claimNick(amy, "amy")))
        self.assertFalse((yield self.b.claimNick(other, "amy")))
        self.assertFalse((yield self.a.claimNick(Member("a.2", "x"), "amy")))
        self.a.releaseNick(amy, "amy")
        yield waitFor(lambda: self.redis.command("DBSIZE").strip() != "", what="dbsize")
        yield deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
        self.assertTrue((yield self.b.claimNick(other, "amy")))

    @inlineCallbacks
    def test_crashedNodeNicksExpire(self) -> Any:
        """
        A node that stops renewing (crashed) loses its nicknames and members
        once its lease runs out.
        """
        crashed = RedisHub(
            reactor,
            parseHubAddress(self.redis.url),
            "chat",
            node="node-c",
            lease=1.0,
            timeout=1.0,
        )
        crashed.start()
        yield waitFor(lambda: crashed.connected)
        zed = Member("c.1", "zed")
        self.assertTrue((yield crashed.claimNick(zed, "zed")))
        yield crashed.join("lobby", zed)
        yield waitFor(
            lambda: self.redis.command(
                "HLEN", "netd:" + hexName("chat") + ":m:" + hexName("lobby")
            ).strip()
            == "1"
        )
        self.assertEqual((yield self.b.members("lobby")), ["zed"])
        # A crash: the connections go, nothing is said to Redis.
        crashed.started = False
        for call in (crashed._leaseCall, crashed._overdueCall):
            if call is not None and call.active():
                call.cancel()
        crashed.commands.stop()
        crashed.reader.stop()
        self.assertFalse((yield self.b.claimNick(Member("b.9", "zed"), "zed")))
        yield deferLater(reactor, 1.2, lambda: None)  # type: ignore[arg-type]
        self.assertTrue((yield self.b.claimNick(Member("b.9", "zed"), "zed")))
        yield self.b._renew()
        self.assertEqual((yield self.b.members("lobby")), [])
        self.assertEqual((yield self.b.rooms()), [])

    @inlineCallbacks
    def test_roomsAndWho(self) -> Any:
        """
        C{/rooms} and C{/who} count every node's members.
        """
        yield self.a.join("lobby", Member("a.1", "amy"))
        yield self.b.join("lobby", Member("b.1", "bob"))
        yield self.b.join("den", Member("b.2", "cid"))
        yield waitFor(lambda: not any(r.dirty for r in self.b._rooms.values()))
        yield deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
        self.assertEqual((yield self.a.rooms()), [("den", 1), ("lobby", 2)])
        self.assertEqual(sorted((yield self.a.members("lobby"))), ["amy", "bob"])
        self.assertEqual((yield self.a.members("den")), ["cid"])

    @inlineCallbacks
    def test_private(self) -> Any:
        """
        A private message reaches the nickname's holder on another node;
        an unknown nickname is reported.
        """
        bob = Member("b.1", "bob")
        yield self.b.claimNick(bob, "bob")
        event = ChatEvent(PRIVATE, "", "amy", "psst", "a.1", 0.0)
        self.assertTrue((yield self.a.sendPrivate("bob", event)))
        yield waitFor(lambda: bob.lines == ["*amy* psst"])
        self.assertFalse((yield self.a.sendPrivate("nobody", event)))

    @inlineCallbacks
    def test_keysAreData(self) -> Any:
        """
        Room and nickname names with key syntax in them stay inside their
        own hex-named keys.
        """
        evil = "x*}{:\n"
        member = Member("a.1", evil)
        yield self.a.claimNick(member, evil)
        yield self.a.join(evil, member)
        keys = self.redis.command("--raw", "KEYS", "*").split()
        self.assertTrue(keys)
        for key in keys:
            self.assertTrue(key.startswith("netd:" + hexName("chat") + ":"), key)
            self.assertNotIn("*", key)
            self.assertNotIn("{", key)


class FaultTests(RedisTestCase):
    """
    Redis down, killed, stopped, refusing.
    """

    @inlineCallbacks
    def test_downAtStart(self) -> Any:
        """
        With Redis not running, the hub serves local members at once, logs
        one clear line however many attempts fail, and connects once Redis
        comes.
        """
        logs = LogCatcher(self)
        redis = RedisServer()
        self.addCleanup(redis.stop)
        hub = self.makeHub(redis.url, "node-a", retryMax=0.2)
        amy, bob = Member("a.1", "amy"), Member("a.2", "bob")
        self.assertTrue((yield hub.claimNick(amy, "amy")))
        yield hub.join("lobby", amy)
        yield hub.join("lobby", bob)
        hub.publish("lobby", message("lobby", "amy", "hello", "a.1"))
        yield waitFor(lambda: bob.lines == ["<amy> hello"])
        yield deferLater(reactor, 1.5, lambda: None)  # type: ignore[arg-type]
        self.assertGreaterEqual(hub.commands.attempts, 3)
        unavailable = logs.texts("unavailable")
        self.assertEqual(len(unavailable), 1, unavailable)
        self.assertIn("cannot connect", unavailable[0])
        self.assertIn(redis.url, unavailable[0])
        redis.start()
        yield waitFor(lambda: hub.connected)
        self.assertEqual(len(logs.texts("connected")), 1)
        # What was said meanwhile, and the nickname, reach Redis.
        yield waitFor(lambda: not hub._outbox)
        other = self.makeHub(redis.url, "node-b")
        yield waitFor(lambda: other.connected)
        yield hub._renew()
        self.assertFalse((yield other.claimNick(Member("b.1", "amy"), "amy")))
        self.assertEqual([e.text for e in (yield other.history("lobby"))], ["hello"])

    @inlineCallbacks
    def test_killedAndRestarted(self) -> Any:
        """
        Redis killed mid-conversation and started again (empty): no crash,
        local members keep chatting, the nodes resume reading each other
        by themselves, nicknames are claimed again, and every message is
        delivered on both nodes.
        """
        redis = self.startRedis()
        a = self.makeHub(redis.url, "node-a", retryMax=0.2)
        b = self.makeHub(redis.url, "node-b", retryMax=0.2)
        yield waitFor(lambda: a.connected and b.connected)
        amy, bob = Member("a.1", "amy"), Member("b.1", "bob")
        yield a.claimNick(amy, "amy")
        yield a.join("lobby", amy)
        yield b.join("lobby", bob)
        sent = []
        for i in range(10):
            sent.append(f"<amy> before{i}")
            a.publish("lobby", message("lobby", "amy", f"before{i}", "a.1"))
        yield waitFor(lambda: len(bob.lines) == 10)
        redis.kill()
        for i in range(10):
            sent.append(f"<amy> during{i}")
            a.publish("lobby", message("lobby", "amy", f"during{i}", "a.1"))
            yield deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
        yield waitFor(lambda: len(amy.lines) == 20, what="local delivery while down")
        redis.start()
        yield waitFor(lambda: a.connected and b.connected, what="reconnect")
        for i in range(10):
            sent.append(f"<amy> after{i}")
            a.publish("lobby", message("lobby", "amy", f"after{i}", "a.1"))
        yield waitFor(lambda: len(bob.lines) == 30, what=f"bob got {bob.lines}")
        self.assertEqual(amy.lines, sent)
        self.assertEqual(sorted(bob.lines), sorted(sent))
        yield a._renew()
        self.assertFalse((yield b.claimNick(Member("b.2", "amy"), "amy")))
        self.assertEqual(a.lostEntries + b.lostEntries + a.notShared, 0)
        state = a.state()
        self.assertTrue(state.connected)
        self.assertGreaterEqual(state.reconnects, 1)
        self.assertEqual(state.rooms, 1)
        self.assertEqual((state.notShared, state.lostEntries), (0, 0))
        # What the metrics endpoint reads of a shared hub (netd.metrics).
        self.assertEqual(a.reconnects, state.reconnects)
        self.assertEqual(a.lostMessages, 0)
        self.assertEqual((a.memberCount(), b.memberCount()), (1, 1))

    @inlineCallbacks
    def test_partitioned(self) -> Any:
        """
        Redis stopped (SIGSTOP: connected, answering nothing): local members
        get their messages within C{hub_max_delay}; the outbox stays within
        C{hub_buffer}, the overflow counted in a log line; once Redis goes
        on, the other node gets what was kept.
        """
        logs = LogCatcher(self)
        redis = self.startRedis()
        a = self.makeHub(redis.url, "node-a", maxDelay=0.1, bufferEvents=50)
        b = self.makeHub(redis.url, "node-b")
        yield waitFor(lambda: a.connected and b.connected)
        amy, bob = Member("a.1", "amy"), Member("b.1", "bob")
        yield a.join("lobby", amy)
        yield b.join("lobby", bob)
        redis.pause()
        start = reactor.seconds()  # type: ignore[attr-defined]
        a.publish("lobby", message("lobby", "amy", "first", "a.1"))
        yield waitFor(lambda: amy.lines == ["<amy> first"])
        # Redis stays stopped: delivery did not wait for it (a bound loose
        # enough for a loaded machine; Redis answers only after resume()).
        self.assertLess(reactor.seconds() - start, 3.0)  # type: ignore[attr-defined]
        for i in range(100):
            a.publish("lobby", message("lobby", "amy", f"m{i}", "a.1"))
            yield deferLater(reactor, 0, lambda: None)  # type: ignore[arg-type]
            self.assertLessEqual(a._outboxEvents, 50)
        yield waitFor(lambda: len(amy.lines) == 101)
        # The watchdog notices Redis answers nothing, and the overflow line
        # is logged: wait for both rather than for a fixed time.
        yield waitFor(
            lambda: not a.state().connected and logs.texts("notShared"),
            timeout=15,
            what="the watchdog and the overflow line",
        )
        self.assertEqual(a.notShared, 51)
        self.assertEqual(a.state().notShared, 51)
        self.assertFalse(a.state().connected)
        self.assertTrue(
            any("51 messages could not be shared" in t for t in logs.texts("notShared"))
        )
        redis.resume()
        # What Redis had read from the socket before it stopped, it
        # processes now; the outbox is sent again; whatever Redis never got
        # the other node counts as missed (a gap in the sequence numbers).
        sent = ["<amy> first"] + [f"<amy> m{i}" for i in range(100)]
        yield waitFor(
            lambda: len(bob.lines) + b.lostEntries == 101,
            timeout=15,
            what=f"bob {len(bob.lines)}",
        )
        self.assertEqual(bob.lines[-50:], sent[-50:])
        self.assertEqual(bob.lines, [line for line in sent if line in bob.lines])
        if b.lostEntries:
            self.assertTrue(logs.texts("lost"))

    @inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        A wrong password: one clear line naming C{hub_password_file}; local
        chat works.
        """
        logs = LogCatcher(self)
        redis = self.startRedis(password="right")
        hub = self.makeHub(redis.url, "node-a", password="wrong", retryMax=0.2)
        yield deferLater(reactor, 1.0, lambda: None)  # type: ignore[arg-type]
        lines = logs.texts("unavailable")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("hub_password_file", lines[0])
        self.assertFalse(hub.connected)
        good = self.makeHub(redis.url, "node-b", password="right")
        yield waitFor(lambda: good.connected)

    @inlineCallbacks
    def test_noPassword(self) -> Any:
        """
        No password for a Redis that wants one: the line says to set
        C{hub_password_file}.
        """
        logs = LogCatcher(self)
        redis = self.startRedis(password="right")
        self.makeHub(redis.url, "node-a", retryMax=0.2)
        yield waitFor(lambda: bool(logs.texts("unavailable")))
        self.assertIn("set hub_password_file", logs.texts("unavailable")[0])

    @inlineCallbacks
    def test_tlsToPlainPort(self) -> Any:
        """
        C{rediss://} to a port that speaks no TLS: one line naming C{hub}.
        """
        logs = LogCatcher(self)
        redis = self.startRedis()
        url = f"rediss://127.0.0.1:{redis.port}/0"
        self.makeHub(url, "node-a", retryMax=0.2)
        yield deferLater(reactor, 1.5, lambda: None)  # type: ignore[arg-type]
        lines = logs.texts("unavailable")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("check hub", lines[0])

    @inlineCallbacks
    def test_tls(self) -> Any:
        """
        C{rediss://} with C{hub_ca_file} naming the server's certificate
        authority: two nodes share a room over TLS.
        """
        redis = self.startRedis(tls=True)
        a = self.makeHub(redis.url, "node-a", caFile=redis.certificate)
        b = self.makeHub(redis.url, "node-b", caFile=redis.certificate)
        yield waitFor(lambda: a.connected and b.connected)
        amy, bob = Member("a.1", "amy"), Member("b.1", "bob")
        yield a.join("lobby", amy)
        yield b.join("lobby", bob)
        a.publish("lobby", message("lobby", "amy", "over TLS", "a.1"))
        yield waitFor(lambda: bob.lines == ["<amy> over TLS"])

    @inlineCallbacks
    def test_tlsUntrusted(self) -> Any:
        """
        A server certificate netd does not trust: one line saying it is a
        TLS error and naming C{hub} and C{hub_ca_file}; no connection.
        """
        logs = LogCatcher(self)
        redis = self.startRedis(tls=True)
        hub = self.makeHub(redis.url, "node-a", retryMax=0.2)
        yield deferLater(reactor, 1.5, lambda: None)  # type: ignore[arg-type]
        lines = logs.texts("unavailable")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("TLS error", lines[0])
        self.assertIn("hub_ca_file", lines[0])
        self.assertFalse(hub.connected)

    @inlineCallbacks
    def test_unixSocket(self) -> Any:
        """
        C{unix:///path} works.
        """
        redis = self.startRedis(unix=True)
        a = self.makeHub(redis.url, "node-a")
        b = self.makeHub(redis.url, "node-b")
        yield waitFor(lambda: a.connected and b.connected)
        amy, bob = Member("a.1", "amy"), Member("b.1", "bob")
        yield a.join("lobby", amy)
        yield b.join("lobby", bob)
        a.publish("lobby", message("lobby", "amy", "over unix", "a.1"))
        yield waitFor(lambda: bob.lines == ["<amy> over unix"])


class AddressTests(TestCase):
    """
    L{parseHubAddress}.
    """

    def test_forms(self) -> None:
        """
        redis://, rediss:// and unix:// URLs.
        """
        a = parseHubAddress("redis://127.0.0.1:6380/2")
        self.assertEqual(
            (a.scheme, a.host, a.port, a.db), ("redis", "127.0.0.1", 6380, 2)
        )
        a = parseHubAddress("rediss://alice@redis.example")
        self.assertEqual(
            (a.scheme, a.host, a.port, a.user),
            ("rediss", "redis.example", 6379, "alice"),
        )
        a = parseHubAddress("unix:///run/redis.sock?db=3")
        self.assertEqual((a.path, a.db), ("/run/redis.sock", 3))

    def test_refused(self) -> None:
        """
        A password in the URL, another scheme or a bad database are refused
        with a message.
        """
        with self.assertRaises(ValueError) as e:
            parseHubAddress("redis://:secret@host")
        self.assertIn("hub_password_file", str(e.exception))
        for url in ("http://host", "redis://host/x", "redis:///0", "unix://rel"):
            self.assertRaises(ValueError, parseHubAddress, url)
