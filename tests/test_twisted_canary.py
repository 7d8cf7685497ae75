# -*- test-case-name: tests.test_twisted_canary -*-
"""
The canary for a Twisted upgrade: every private Twisted name and signature
netd relies on, with the netd module that relies on it.

Each entry of L{RELIANCES} fails with one line naming the Twisted name, the
netd module and what to re-check there; L{VersionTests} fails when the
installed Twisted is outside the range C{setup.cfg} pins. When a Twisted
upgrade breaks an entry, re-read the Twisted code it names, adapt the netd
module, then update the entry (and the pin).
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

import attrs
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase


@attrs.frozen
class Reliance:
    """
    One private Twisted name netd uses.

    @ivar name: The Twisted name, fully qualified (C{module.Class.attr}).
    @ivar module: The netd module that relies on it.
    @ivar recheck: What to re-check there when this entry fails.
    @ivar signature: The signature netd was written against (for a callable
        netd calls or overrides), or L{None} to check existence only.
    @ivar instanceAttribute: If set, the attribute is set on instances, not
        the class: check that the source of L{name} (a class) assigns
        C{self.<instanceAttribute>}.
    """

    name: str
    module: str
    recheck: str
    signature: str | None = None
    instanceAttribute: str | None = None


RELIANCES = [
    # netd/reactor.py: NetdEPollReactor.doPoll replaces Twisted's.
    Reliance(
        "twisted.internet.epollreactor.EPollReactor.doPoll",
        "netd.reactor",
        "NetdEPollReactor.doPoll overrides it: compare with Twisted's doPoll",
        "(self, timeout)",
    ),
    Reliance(
        "twisted.internet.epollreactor.EPollReactor._doReadOrWrite",
        "netd.reactor",
        "doPoll calls it for non-EPOLLIN events, and copies its handling of"
        " a read's result",
        "(self, selectable, fd, event)",
    ),
    Reliance(
        "twisted.internet.epollreactor.EPollReactor._disconnectSelectable",
        "netd.reactor",
        "doPoll calls it with (selectable, why, True) after a failed read",
    ),
    Reliance(
        "twisted.internet.epollreactor.EPollReactor",
        "netd.reactor",
        "doPoll reads self._selectables (fd -> selectable)",
        instanceAttribute="_selectables",
    ),
    Reliance(
        "twisted.internet.epollreactor.EPollReactor",
        "netd.reactor",
        "doPoll calls self._poller.poll(timeout, maxevents)",
        instanceAttribute="_poller",
    ),
    Reliance(
        "twisted.internet.posixbase._NO_FILEDESC",
        "netd.reactor",
        "doPoll returns it for a selectable whose fileno() is -1",
    ),
    Reliance(
        "twisted.python.context.ContextTracker",
        "netd.reactor",
        "doPoll appends to currentContext().contexts (the context stack)",
        instanceAttribute="contexts",
    ),
    # netd/transport.py: WriteThroughServer writes past the buffer.
    Reliance(
        "twisted.internet.tcp.Server.__init__",
        "netd.transport",
        "WriteThroughServer.__init__ passes these arguments on",
        "(self, sock: 'socket.socket', protocol: 'IProtocol',"
        " client: 'tuple[object, ...]', server: 'Port', sessionno: 'int',"
        " reactor: 'IReactorFDSet') -> 'None'",
    ),
    Reliance(
        "twisted.internet.abstract.FileDescriptor",
        "netd.transport",
        "_canWriteThrough: nothing may be queued in _tempData",
        instanceAttribute="_tempDataLen",
    ),
    Reliance(
        "twisted.internet.abstract.FileDescriptor._writeDisconnecting",
        "netd.transport",
        "_canWriteThrough: no write-through once half-closing",
    ),
    Reliance(
        "twisted.internet.tcp.Connection._aborting",
        "netd.transport",
        "_canWriteThrough: no write-through once aborting",
    ),
    Reliance(
        "twisted.internet.abstract.FileDescriptor._maybePauseProducer",
        "netd.transport",
        "the buffer it measures must still be dataBuffer/_tempData only",
        "(self)",
    ),
    # netd/tls.py: RecordBatchingTLS writes each application write's
    # records to the socket together.
    Reliance(
        "twisted.protocols.tls.TLSMemoryBIOProtocol._write",
        "netd.tls",
        "RecordBatchingTLS._write overrides it: compare with Twisted's loop"
        " (WantReadError buffering, Error shutdown)",
        "(self, bytes)",
    ),
    Reliance(
        "twisted.protocols.tls.TLSMemoryBIOProtocol._flushSendBIO",
        "netd.tls",
        "RecordBatchingTLS._flushSendBIO overrides it (reads the BIO dry)",
        "(self)",
    ),
    Reliance(
        "twisted.protocols.tls.TLSMemoryBIOProtocol._bufferedWrite",
        "netd.tls",
        "RecordBatchingTLS._write buffers through it when OpenSSL wants to read",
        "(self, octets)",
    ),
    Reliance(
        "twisted.protocols.tls.TLSMemoryBIOProtocol._tlsShutdownFinished",
        "netd.tls",
        "RecordBatchingTLS._write ends the connection through it on SSL.Error",
        "(self, reason)",
    ),
    Reliance(
        "twisted.protocols.tls.TLSMemoryBIOProtocol._lostTLSConnection",
        "netd.tls",
        "RecordBatchingTLS._write writes nothing once it is set",
    ),
    Reliance(
        "twisted.protocols.tls.TLSMemoryBIOProtocol",
        "netd.tls",
        "RecordBatchingTLS._write sends through the OpenSSL connection it keeps",
        instanceAttribute="_tlsConnection",
    ),
    # netd/sockets.py: netd's ports and adopted sockets.
    Reliance(
        "twisted.internet.tcp.Port.transport",
        "netd.sockets",
        "TCPPort sets it to WriteThroughServer (the class a port builds"
        " connections with)",
    ),
    Reliance(
        "twisted.internet.tcp.Port",
        "netd.sockets",
        "SharedTCPPort pins numberAccepts (Port.doRead's batch size) to 1",
        instanceAttribute="numberAccepts",
    ),
    Reliance(
        "twisted.internet.tcp.Port._fromListeningDescriptor",
        "netd.sockets",
        "adoptStreamPort calls it for systemd/worker sockets",
        "(reactor, fd, addressFamily, factory)",
    ),
    Reliance(
        "twisted.internet.unix.Port._fromListeningDescriptor",
        "netd.sockets",
        "adoptStreamPort calls it on AdoptedUNIXPort",
        "(reactor, fd, factory)",
    ),
    Reliance(
        "twisted.internet.udp.Port._fromListeningDescriptor",
        "netd.sockets",
        "adoptDatagramPort calls it on UDPPort",
        "(reactor, fd, addressFamily, protocol, maxPacketSize)",
    ),
    Reliance(
        "twisted.internet.udp.Port.__init__",
        "netd.sockets",
        "UDPPort.__init__ passes these arguments on",
        "(self, port, proto, interface='', maxPacketSize=8192, reactor=None)",
    ),
    Reliance(
        "twisted.internet.udp.Port",
        "netd.sockets",
        "UDPPort.write skips its host cache on a connected port",
        instanceAttribute="_connectedAddr",
    ),
    Reliance(
        "twisted.internet.unix.Port.connectionLost",
        "netd.sockets",
        "AdoptedUNIXPort.connectionLost overrides it",
        "(self, reason)",
    ),
    # netd/systemd.py: the sockets Twisted's systemd: parser already read.
    Reliance(
        "twisted.internet.endpoints._SystemdParser._sddaemon",
        "netd.systemd",
        "InheritedSockets.fromEnvironment reuses this ListenFDs record",
    ),
    # netd/chat/tcp.py: ChatLineProtocol splits a chunk once, in LineReceiver's
    # own buffer.
    Reliance(
        "twisted.protocols.basic.LineReceiver._buffer",
        "netd.chat.tcp",
        "ChatLineProtocol.dataReceived keeps the unfinished line in it, for"
        " LineReceiver.clearLineBuffer, setRawMode and resumeProducing",
    ),
    Reliance(
        "twisted.protocols.basic.LineReceiver._busyReceiving",
        "netd.chat.tcp",
        "ChatLineProtocol.dataReceived sets it while handling a chunk, as"
        " LineReceiver.dataReceived does (resumeProducing checks it)",
    ),
    Reliance(
        "twisted.protocols.basic.LineReceiver.dataReceived",
        "netd.chat.tcp",
        "ChatLineProtocol.dataReceived replaces it: compare with Twisted's",
        "(self, data)",
    ),
    # netd/tls.py: the options a parsed ssl: description carries.
    Reliance(
        "twisted.internet.endpoints.SSL4ServerEndpoint",
        "netd.tls",
        "loadServerTLS reads endpoint._sslContextFactory",
        instanceAttribute="_sslContextFactory",
    ),
    # netd/startup.py: both ends of twistd's daemon status pipe.
    Reliance(
        "twisted.scripts._twistd_unix.UnixApplicationRunner._waitForStart",
        "netd.startup",
        "guardRunner replaces it: the starting process reads the status pipe",
        "(self, readPipe: int) -> int",
    ),
    Reliance(
        "twisted.scripts._twistd_unix.UnixApplicationRunner.startApplication",
        "netd.startup",
        "guardRunner wraps it; config['statusPipe'] is set by setupEnvironment",
        "(self, application)",
    ),
    Reliance(
        "twisted.application.app.AppLogger",
        "netd.startup",
        "_startApplication puts twistd's observer (self._observer) behind netd's"
        " filter",
        instanceAttribute="_observer",
    ),
]


def _qualify(name: str) -> Any:
    """
    Look up a Twisted name.

    @param name: Fully qualified.
    @return: The object.
    """
    return namedAny(name)


def _problem(reliance: Reliance) -> str | None:
    """
    Check one reliance.

    @param reliance: The entry.
    @return: One line saying what changed, or L{None} if nothing did.
    """
    where = f"(relied on by {reliance.module}: {reliance.recheck})"
    try:
        target = _qualify(reliance.name)
    except (AttributeError, ImportError) as e:
        return f"{reliance.name} is gone ({e}) {where}"
    if reliance.instanceAttribute is not None:
        try:
            source = inspect.getsource(target)
        except (OSError, TypeError) as e:
            return f"cannot read the source of {reliance.name} ({e}) {where}"
        if f"self.{reliance.instanceAttribute} " not in source:
            return (
                f"{reliance.name} no longer sets self."
                f"{reliance.instanceAttribute} {where}"
            )
    if reliance.signature is not None:
        found = str(inspect.signature(target))
        if found != reliance.signature:
            return (
                f"{reliance.name} has signature {found}, netd was written "
                f"against {reliance.signature} {where}"
            )
    return None


class CanaryTests(SynchronousTestCase):
    """
    The private Twisted names netd relies on are still there, unchanged.
    """

    def test_reliances(self) -> None:
        """
        Every entry of L{RELIANCES} exists, with its recorded signature; the
        failure lists one line per entry that changed.
        """
        problems = [p for p in map(_problem, RELIANCES) if p is not None]
        if problems:
            self.fail(
                "Twisted changed a private name netd uses:\n  " + "\n  ".join(problems)
            )

    def test_problemNamesModule(self) -> None:
        """
        A missing name fails with the netd module and what to re-check.
        """
        problem = _problem(
            Reliance("twisted.internet.tcp.Port._gone", "netd.sockets", "re-read")
        )
        assert problem is not None
        self.assertIn("twisted.internet.tcp.Port._gone is gone", problem)
        self.assertIn("(relied on by netd.sockets: re-read)", problem)

    def test_signatureChangeNamed(self) -> None:
        """
        A changed signature fails naming both signatures.
        """
        problem = _problem(
            Reliance(
                "twisted.internet.unix.Port.connectionLost",
                "netd.sockets",
                "re-read",
                "(self)",
            )
        )
        self.assertEqual(
            problem,
            "twisted.internet.unix.Port.connectionLost has signature "
            "(self, reason), netd was written against (self) "
            "(relied on by netd.sockets: re-read)",
        )


def _version(text: str) -> tuple[int, ...]:
    """
    A release number as a tuple.

    @param text: C{"26.10.0"}, C{"26.11"}, ...
    @return: C{(26, 10, 0)}, C{(26, 11)}, ...
    """
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def pinnedRange(setupCfg: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """
    The Twisted range C{setup.cfg} pins in C{install_requires}.

    @param setupCfg: The text of C{setup.cfg}.
    @return: The lower bound (included) and the upper bound (excluded).
    @raise ValueError: If there is no C{twisted} line with both bounds.
    """
    for line in setupCfg.splitlines():
        match = re.match(r"\s*twisted(\[[^]]*\])?\s*(>=.*)$", line, re.IGNORECASE)
        if match is None:
            continue
        bounds = dict(re.findall(r"(>=|<)\s*([0-9.]+)", match.group(2)))
        if ">=" in bounds and "<" in bounds:
            return _version(bounds[">="]), _version(bounds["<"])
    raise ValueError("setup.cfg pins no Twisted range (>= X, < Y)")


class VersionTests(SynchronousTestCase):
    """
    The installed Twisted is within the range C{setup.cfg} pins.
    """

    def setupCfg(self) -> str:
        """
        Read C{setup.cfg}, or skip (tests run from an installed copy).

        @return: Its text.
        """
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.cfg")
        if not os.path.exists(path):
            raise self.skipTest("no setup.cfg beside the tests (an installed copy)")
        with open(path) as f:
            return f.read()

    def test_installedWithinPin(self) -> None:
        """
        C{twisted.__version__} is within C{setup.cfg}'s pin.
        """
        import twisted

        low, high = pinnedRange(self.setupCfg())
        installed = _version(twisted.__version__)
        self.assertTrue(
            low <= installed < high,
            f"Twisted {twisted.__version__} is installed; setup.cfg pins "
            f">= {'.'.join(map(str, low))}, < {'.'.join(map(str, high))}: run "
            "tests.test_twisted_canary against the new release, adapt the netd "
            "modules its failures name, then move the pin in setup.cfg",
        )

    def test_pinIsOneMinor(self) -> None:
        """
        The pin has an upper bound: the next minor release after the lower
        bound's (Twisted may change private names in any release).
        """
        low, high = pinnedRange(self.setupCfg())
        self.assertEqual(high, (low[0], low[1] + 1))

    def test_pinnedRangeParsed(self) -> None:
        """
        L{pinnedRange} reads the bounds of the C{twisted} requirement and
        refuses a file without an upper bound.
        """
        self.assertEqual(
            pinnedRange(
                "install_requires =\n"
                "    twisted[tls,websocket] >= 26.10.0, < 26.11\n"
                "    attrs >= 23.1.0\n"
            ),
            ((26, 10, 0), (26, 11)),
        )
        self.assertRaises(ValueError, pinnedRange, "    twisted >= 26.10.0\n")
