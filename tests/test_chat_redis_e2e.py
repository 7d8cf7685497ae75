# -*- test-case-name: tests.test_chat_redis_e2e -*-
"""
End to end: two real C{twistd netd} processes (standing for two hosts), one
of them with C{workers = 2}, sharing chat rooms through one real
C{redis-server}; plain blocking sockets as clients (what C{nc} does). Redis
is killed and started again mid-conversation.
"""

from __future__ import annotations

import re
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.chatsupport import LineClient, Netd
from tests.redissupport import SKIP, RedisServer, freePort

CONFIG = """\
[netd]
stats_interval = 3600
drain_timeout = 1
{netd}

[services.chat]
type = "chat"
listen = ["tcp:{port}:interface=127.0.0.1"{udp}]
hub = "{hub}"
hub_retry_max = 0.5
hub_timeout = 2
flood_lines_per_second = 1000
flood_lines_burst = 1000

[services.chat.limits]
max_sessions_per_peer = 1000
"""


def waitOutput(netd: Netd, pattern: str, count: int = 1, timeout: float = 20.0) -> None:
    """
    Wait until a daemon's log has C{count} lines matching C{pattern}.
    """
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(regex.findall(netd.output)) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} x{count} in:\n{netd.output}")


class Member:
    """
    A chat client with a nickname, in C{#lobby}.
    """

    def __init__(self, case: SynchronousTestCase, port: int, nick: str) -> None:
        self.nick = nick
        self.client = LineClient(port)
        case.addCleanup(self.client.close)
        self.client.expect("type a nickname")
        self.client.send(nick)
        self.client.expect(rf"^\*\*\* {nick} joined #lobby$")

    def messages(self, count: int, timeout: float = 15.0) -> list[str]:
        """
        Read until C{count} messages (C{<nick> text} lines) came.
        """
        got: list[str] = []
        while len(got) < count:
            lines = self.client.expect(r"^<", timeout)
            got.append(lines[-1])
        return got


class RedisEndToEndTests(SynchronousTestCase):
    """
    Two netd "hosts", three processes, one Redis.
    """

    skip = SKIP

    def test_twoHostsAndWorkers(self) -> None:
        """
        Members on host A (one process; TCP and UDP) and host B (two
        workers, both serving chat) share C{#lobby}: messages from two senders on
        different hosts reach every observer in the same order; a nickname
        held on A is taken on B; a late joiner on B gets the history said on
        A. Redis is then killed: each host goes on serving its own members;
        once Redis is back (a new, empty one on the same port), what A said
        meanwhile reaches B and delivery across hosts resumes.
        """
        redis = RedisServer()
        self.addCleanup(redis.stop)
        redis.start()
        portA, portB = freePort(), freePort()
        udpA = freePort()
        a = Netd(
            CONFIG.format(
                netd="",
                port=portA,
                hub=redis.url,
                udp=f', "udp:{udpA}:interface=127.0.0.1"',
            )
        )
        self.addCleanup(a.stop)
        b = Netd(CONFIG.format(netd="workers = 2", port=portB, hub=redis.url, udp=""))
        self.addCleanup(b.stop)
        waitOutput(a, r"Redis hub .* connected")
        waitOutput(b, r"netd ready with 2 workers")
        waitOutput(b, r"Redis hub .* connected", count=2)

        amy = Member(self, portA, "amy")
        # Connections to B until both of its workers serve some.
        onB: list[Member] = []
        for n in range(20):
            onB.append(Member(self, portB, f"b{n}"))
            joins = re.findall(
                r"\[worker (\d)[^\]]*\][^\n]*b\d+ joined #lobby", b.output
            )
            if len(onB) >= 3 and len(set(joins)) == 2:
                break
        self.assertEqual(
            set(re.findall(r"\[worker (\d)[^\]]*\][^\n]*joined #lobby", b.output)),
            {"0", "1"},
            b.output,
        )
        watcherA = Member(self, portA, "wa")
        sender = onB[0]

        # Two senders, on two hosts, at once; two observers, one per host.
        for i in range(20):
            amy.client.send(f"a{i}")
            sender.client.send(f"b{i}")
        fromA = watcherA.messages(40)
        fromB = onB[-1].messages(40)
        self.assertEqual(fromA, fromB)
        self.assertEqual(
            [m for m in fromA if m.startswith("<amy>")],
            [f"<amy> a{i}" for i in range(20)],
        )
        self.assertEqual(
            sorted(amy.messages(20)), sorted(f"<b0> b{i}" for i in range(20))
        )

        # A UDP member on host A, seen on host B and on A.
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(udp.close)
        udp.connect(("127.0.0.1", udpA))
        pad = " " * 400  # a UDP source is sent at most what it sent
        udp.send(f"/nick udpu{pad}\n".encode())
        onB[-1].client.expect(r"^\*\*\* udpu joined #lobby$")
        udp.send(f"hi from udp{pad}\n".encode())
        self.assertEqual(onB[-1].messages(1), ["<udpu> hi from udp"])
        self.assertEqual(watcherA.messages(1), ["<udpu> hi from udp"])
        said = fromA + ["<udpu> hi from udp"]

        # One nickname in the whole cluster.
        other = LineClient(portB)
        self.addCleanup(other.close)
        other.expect("type a nickname")
        other.send("amy")
        other.expect(r"nickname amy is taken")

        # History said on both hosts, for a joiner on B.
        late = LineClient(portB)
        self.addCleanup(late.close)
        late.expect("type a nickname")
        late.send("late")
        history = late.expect("end of history")
        self.assertEqual([line for line in history if line.startswith("<")], said[-20:])

        # /who is cluster-wide.
        late.send("/who")
        who = late.expect(r"^\*\*\* #lobby \(")[-1]
        for nick in ["amy", "wa", "late", "udpu"] + [m.nick for m in onB]:
            self.assertIn(nick, who)

        # Redis dies mid-conversation.
        redis.kill()
        amy.client.send("while down")
        self.assertEqual(watcherA.messages(1), ["<amy> while down"])
        waitOutput(a, r"Redis hub .* connection lost")
        redis.start()
        waitOutput(a, r"Redis hub .* connected", count=2, timeout=30)
        waitOutput(b, r"Redis hub .* connected", count=4, timeout=30)
        self.assertEqual(onB[-1].messages(1, timeout=20), ["<amy> while down"])
        amy.client.send("after")
        self.assertEqual(onB[-1].messages(1, timeout=20), ["<amy> after"])
        sender.client.send("back")
        self.assertEqual(watcherA.messages(2, timeout=20), ["<amy> after", "<b0> back"])
        for netd in (a, b):
            self.assertNotIn("Traceback", netd.output)
            self.assertNotIn("Unhandled", netd.output)
        self.assertEqual(a.stop(), 0)
        self.assertEqual(b.stop(), 0)
