# -*- test-case-name: tests.test_chat_redis_e2e -*-
"""
End to end: two real C{twistd netd} processes (standing for two hosts), one
of them with C{workers = 2}, sharing chat rooms through one real
C{redis-server}; plain blocking sockets as clients (what C{nc} does), and a
headless chromium (L{tests.browsersupport}) on the chat page that the second
host's http service mounts. Redis is killed and started again
mid-conversation.
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.browsersupport import BROWSER, BROWSER_SKIP, DRIVER, ENTER, WebDriver
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
{web}"""

WEB = """
[services.web]
type = "http"
listen = ["tcp:{port}:interface=127.0.0.1"]
chat = "chat"
chat_path = "/chat/"
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


class BrowserMember:
    """
    A chromium page on a chat page, with a nickname, in C{#lobby}.
    """

    def __init__(self, case: SynchronousTestCase, url: str, nick: str) -> None:
        assert DRIVER is not None and BROWSER is not None
        profile = tempfile.mkdtemp(prefix="netd-chromium-")
        case.addCleanup(shutil.rmtree, profile, ignore_errors=True)
        self.driver = WebDriver(DRIVER, BROWSER, profile)
        case.addCleanup(self.driver.quit)
        self.driver.open(url)
        self.driver.waitForText("#status", "connected")
        self.driver.waitForText("#log", "type a nickname")
        self.driver.type("#input", nick + ENTER)
        self.driver.waitForText("#log", f"*** {nick} joined #lobby")

    def send(self, text: str) -> None:
        """
        Type a line and press Enter.
        """
        self.driver.type("#input", text + ENTER)

    def messages(self, count: int, timeout: float = 20.0) -> list[str]:
        """
        Wait until the page shows at least C{count} messages (C{<nick> text}
        lines, since it loaded).

        @return: All of them, in the order shown.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines: list[str] = self.driver.script(
                "return Array.from(document.querySelectorAll('#log > div'))"
                ".map(e => e.textContent)"
            )
            got = [line for line in lines if line.startswith("<")]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} of {count} messages: {lines!r}")
            time.sleep(0.1)


def startHosts(
    case: SynchronousTestCase,
) -> tuple[RedisServer, Netd, Netd, int, int, int, int]:
    """
    Start one C{redis-server} and two netd "hosts" on it: A, one
    process, chat on TCP and UDP; B, C{workers = 2}, chat on TCP and an
    http service mounting the chat page at C{/chat/}. Each is stopped
    at C{case}'s cleanup.

    @return: Redis, A, B, A's chat TCP and UDP ports, B's chat TCP port
        and B's http port.
    """
    redis = RedisServer()
    case.addCleanup(redis.stop)
    redis.start()
    portA, portB, webB = freePort(), freePort(), freePort()
    udpA = freePort()
    a = Netd(
        CONFIG.format(
            netd="",
            port=portA,
            hub=redis.url,
            udp=f', "udp:{udpA}:interface=127.0.0.1"',
            web="",
        )
    )
    case.addCleanup(a.stop)
    b = Netd(
        CONFIG.format(
            netd="workers = 2",
            port=portB,
            hub=redis.url,
            udp="",
            web=WEB.format(port=webB),
        )
    )
    case.addCleanup(b.stop)
    waitOutput(a, r"Redis hub .* connected")
    waitOutput(b, r"netd ready with 2 workers")
    waitOutput(b, r"Redis hub .* connected", count=2)
    return redis, a, b, portA, udpA, portB, webB


def membersOnBothWorkers(
    case: SynchronousTestCase, b: Netd, portB: int
) -> list[Member]:
    """
    Connect members C{b0}, C{b1}, ... to host B until both of its workers
    serve some, keeping at least three.

    The workers share one listening socket and whichever wakes first
    accepts, so one of them can win many times in a row on a loaded
    machine: a member that lands on a worker already served is closed again
    (its quit notice is not a message), and the attempts are bounded in
    count and time.
    """
    kept: list[Member] = []
    workersServing: set[str] = set()
    deadline = time.monotonic() + 60
    for n in range(200):
        if len(kept) >= 3 and len(workersServing) == 2:
            break
        if time.monotonic() > deadline:
            break
        member = Member(case, portB, f"b{n}")
        waitOutput(b, rf"\[worker \d[^\]]*\][^\n]*: b{n} joined #lobby")
        worker = re.findall(
            rf"\[worker (\d)[^\]]*\][^\n]*: b{n} joined #lobby", b.output
        )[-1]
        if worker not in workersServing or len(kept) < 2 or len(workersServing) == 2:
            workersServing.add(worker)
            kept.append(member)
        else:
            member.client.close()
            time.sleep(0.02)
    case.assertEqual(workersServing, {"0", "1"}, b.output)
    return kept


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
        redis, a, b, portA, udpA, portB, _ = startHosts(self)
        amy = Member(self, portA, "amy")
        onB = membersOnBothWorkers(self, b, portB)
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


class BrowserEndToEndTests(SynchronousTestCase):
    """
    A browser on host B, a TCP client on host A and a UDP member on host A,
    in one room through Redis.
    """

    skip = SKIP or BROWSER_SKIP

    def test_browserTCPAndUDPSeeOneOrder(self) -> None:
        """
        A chromium page on the chat page that host B's http service mounts
        (its WebSocket served by one of B's two workers), TCP clients on both
        hosts and a UDP member on host A are in C{#lobby}. Four senders (a
        TCP client on A, one on B, the UDP member and the browser itself)
        talk at once: the browser, a TCP observer on each host and the UDP
        member see the same messages in the same order, each sender's in the
        order sent, the browser's own message among them.
        """
        redis, a, b, portA, udpA, portB, webB = startHosts(self)
        amy = Member(self, portA, "amy")
        watcherA = Member(self, portA, "wa")
        onB = membersOnBothWorkers(self, b, portB)
        sender, watcherB = onB[0], onB[-1]
        web = BrowserMember(self, f"http://127.0.0.1:{webB}/chat/", "web")
        self.assertRegex(
            b.output,
            r"\[worker \d[^\]]*\][^\n]*web joined #lobby \(127\.0\.0\.1:\d+, ws\)",
        )
        watcherA.client.expect(r"^\*\*\* web joined #lobby$")

        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(udp.close)
        udp.connect(("127.0.0.1", udpA))
        udp.settimeout(15)
        pad = " " * 400  # a UDP source is sent at most what it sent
        udp.send(f"/nick udpu{pad}\n".encode())
        watcherB.client.expect(r"^\*\*\* udpu joined #lobby$")

        rounds = 10
        for i in range(rounds):
            amy.client.send(f"a{i}")
            sender.client.send(f"b{i}")
            udp.send(f"u{i}{pad}\n".encode())
            if i == rounds // 2:
                web.send("w from the browser")
        total = 3 * rounds + 1
        fromA = watcherA.messages(total)
        fromB = watcherB.messages(total)
        inBrowser = web.messages(total)
        self.assertEqual(fromA, fromB)
        self.assertEqual(inBrowser, fromA)
        for nick, prefix in (("amy", "a"), ("b0", "b"), ("udpu", "u")):
            self.assertEqual(
                [m for m in fromA if m.startswith(f"<{nick}>")],
                [f"<{nick}> {prefix}{i}" for i in range(rounds)],
            )
        self.assertEqual(
            [m for m in fromA if m.startswith("<web>")], ["<web> w from the browser"]
        )
        self.assertEqual(len(fromA), total)

        # The UDP member sees the others' messages in that order too (not
        # its own: a UDP member gets no echo).
        fromUDP: list[str] = []
        others = [m for m in fromA if not m.startswith("<udpu>")]
        while len(fromUDP) < len(others):
            datagram = udp.recv(65536).decode()
            fromUDP.extend(
                line for line in datagram.splitlines() if line.startswith("<")
            )
        self.assertEqual(fromUDP, others)
        # Nothing more came to the page: exactly those messages, once each.
        self.assertEqual(web.messages(total), inBrowser)

        for netd in (a, b):
            self.assertNotIn("Traceback", netd.output)
            self.assertNotIn("Unhandled", netd.output)
        self.assertEqual(a.stop(), 0)
        self.assertEqual(b.stop(), 0)
        redis.stop()
