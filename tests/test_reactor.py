# -*- test-case-name: tests.test_reactor -*-
"""
Tests for L{netd.reactor}.

Twisted's own reactor-builder tests (system events, time, file descriptor
sets, TCP, UDP, UNIX sockets, processes) run against L{NetdEPollReactor},
so every contract of the epoll reactor is checked on netd's poll loop; the
TCP and TLS transport tests in L{tests.test_transport} run on it too. Unit
tests check what the short read path does with exceptions, disconnections,
lost descriptors and other events, and that C{twistd netd} installs it only
when no reactor is installed yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from select import EPOLLHUP, EPOLLIN, EPOLLOUT
from typing import Any

from twisted.internet import main
from twisted.internet.test import (
    test_core,
    test_fdset,
    test_process,
    test_tcp,
    test_time,
    test_udp,
    test_unix,
)
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from netd import reactor as netdreactor
from netd.reactor import NetdEPollReactor

NETD_EPOLL = "netd.reactor.NetdEPollReactor"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(netdreactor.__file__)))


class _OnNetdReactor:
    """
    Build only L{NetdEPollReactor} in a reactor-builder test.
    """

    _reactors = [NETD_EPOLL]


def _worldExecutable(path: str) -> bool:
    """
    Whether every directory above C{path} lets other users through.

    @param path: A file's path.
    @return: C{True} if a user other than its owner could reach it.
    """
    directory = os.path.dirname(os.path.realpath(path))
    while True:
        if not os.stat(directory).st_mode & 0o001:
            return False
        parent = os.path.dirname(directory)
        if parent == directory:
            return True
        directory = parent


class _FDSetOnNetd(test_fdset.ReactorFDSetTestsBuilder):
    """
    Twisted's file descriptor set tests, with the skip Twisted gives
    C{EPollReactor} by its class name.
    """

    def test_lostFileDescriptor(self) -> None:
        """
        Skipped: epoll forgets a closed descriptor without an event, so no
        epoll reactor can notice it (Twisted skips this test for its own).
        """
        raise SkipTest("epoll reactors cannot detect lost file descriptors")


class _ProcessOnNetd(test_process.ProcessTestsBuilder):
    """
    Twisted's process tests.
    """

    def test_changeUID(self) -> None:
        """
        Twisted's test, run when the child, once it switched users, can
        still reach this Python (not where it lives under a private home).
        """
        if os.getuid() == 0 and not _worldExecutable(sys.executable):
            raise SkipTest(f"{sys.executable} is not reachable by other users")
        super().test_changeUID()


for _name, _builder in [
    ("SystemEvent", test_core.SystemEventTestsBuilder),
    ("Time", test_time.TimeTestsBuilder),
    ("FDSet", _FDSetOnNetd),
    ("TCP4Client", test_tcp.TCP4ClientTestsBuilder),
    ("TCPConnection", test_tcp.TCPConnectionTestsBuilder),
    ("TCPPort", test_tcp.TCPPortTestsBuilder),
    ("TCPFDPort", test_tcp.TCPFDPortTestsBuilder),
    ("UDPServer", test_udp.UDPServerTestsBuilder),
    ("UDPFDServer", test_udp.UDPFDServerTestsBuilder),
    ("UNIX", test_unix.UNIXTestsBuilder),
    ("UNIXDatagram", test_unix.UNIXDatagramTestsBuilder),
    ("Process", _ProcessOnNetd),
]:
    _onNetd = type(
        f"Netd{_name}Tests",
        (_OnNetdReactor, _builder),
        {"__module__": __name__, "__doc__": f"Twisted's {_builder.__name__} tests."},
    )
    globals().update(_onNetd.makeTestCaseClasses())
del _name, _builder, _onNetd


class FakeSelectable:
    """
    A selectable that records the calls the reactor makes and answers as
    told.

    @ivar calls: The names of the methods called, in order.
    """

    def __init__(
        self, fd: int = 7, readResult: Any = None, readError: Any = None
    ) -> None:
        self.fd = fd
        self.readResult = readResult
        self.readError = readError
        self.calls: list[str] = []

    def fileno(self) -> int:
        """
        @return: The descriptor number.
        """
        return self.fd

    def logPrefix(self) -> str:
        """
        @return: A prefix for log events.
        """
        return "FakeSelectable"

    def doRead(self) -> Any:
        """
        Record the read; raise or return as told.

        @return: The configured result.
        """
        self.calls.append("doRead")
        if self.readError is not None:
            raise self.readError
        return self.readResult

    def doWrite(self) -> None:
        """
        Record the write.
        """
        self.calls.append("doWrite")

    def connectionLost(self, reason: Any) -> None:
        """
        Record the loss.

        @param reason: Why.
        """
        self.calls.append(f"connectionLost:{reason.type.__name__}")


class FakePoller:
    """
    An epoll object that returns a scripted list of events once.
    """

    def __init__(self, events: list[tuple[int, int]]) -> None:
        self.events = events

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        """
        @return: The scripted events, then none.
        """
        events, self.events = self.events, []
        return events

    def unregister(self, fd: int) -> None:
        """
        Forget a descriptor.
        """

    def close(self) -> None:
        """
        Nothing to close.
        """


class DoPollTests(SynchronousTestCase):
    """
    What L{NetdEPollReactor.doPoll} does with each kind of event.
    """

    def poll(self, selectable: FakeSelectable, event: int) -> NetdEPollReactor:
        """
        Run one C{doPoll} on a reactor that reports C{event} for
        C{selectable}, which it reads from.

        @param selectable: The selectable.
        @param event: The epoll event mask.
        @return: The reactor.
        """
        reactor = NetdEPollReactor()
        self.addCleanup(reactor._poller.close)
        reactor._poller.close()
        reactor._poller = FakePoller([(selectable.fd, event)])
        reactor._selectables[selectable.fd] = selectable
        reactor._reads.add(selectable.fd)
        reactor.doPoll(0)
        return reactor

    def test_readEventCallsDoRead(self) -> None:
        """
        A plain C{EPOLLIN} event calls C{doRead} and nothing else.
        """
        selectable = FakeSelectable()
        self.poll(selectable, EPOLLIN)
        self.assertEqual(selectable.calls, ["doRead"])

    def test_readReturningReasonDisconnects(self) -> None:
        """
        A reason returned by C{doRead} disconnects the selectable with it.
        """
        selectable = FakeSelectable(readResult=main.CONNECTION_DONE)
        self.poll(selectable, EPOLLIN)
        self.assertEqual(selectable.calls, ["doRead", "connectionLost:ConnectionDone"])

    def test_readExceptionIsLoggedAndDisconnects(self) -> None:
        """
        An exception from C{doRead} is logged and disconnects the selectable,
        as Twisted's C{_doReadOrWrite} does.
        """
        selectable = FakeSelectable(readError=ZeroDivisionError("boom"))
        self.poll(selectable, EPOLLIN)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(
            selectable.calls, ["doRead", "connectionLost:ZeroDivisionError"]
        )

    def test_logContextIsTheSelectablesPrefix(self) -> None:
        """
        While C{doRead} runs, the legacy log context's C{system} is the
        selectable's C{logPrefix}, as under Twisted's C{callWithLogger}; a
        C{logPrefix} that raises is logged and replaced by a placeholder.
        """
        from twisted.python import context
        from twisted.python.log import ILogContext

        seen: list[str] = []
        selectable = FakeSelectable()
        selectable.doRead = lambda: seen.append(  # type: ignore[method-assign]
            context.get(ILogContext)["system"]
        )
        self.poll(selectable, EPOLLIN)
        self.assertEqual(seen, ["FakeSelectable"])

        def broken() -> str:
            raise ValueError("no prefix")

        selectable.logPrefix = broken  # type: ignore[method-assign]
        self.poll(selectable, EPOLLIN)
        self.assertEqual(seen, ["FakeSelectable", "(buggy logPrefix method)"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(context.get(ILogContext)["system"], "-")

    def test_lostDescriptorIsNotRead(self) -> None:
        """
        A selectable whose C{fileno} is -1 is disconnected without a read.
        """
        selectable = FakeSelectable()
        selectable.fileno = lambda: -1  # type: ignore[method-assign]
        reactor = NetdEPollReactor()
        self.addCleanup(reactor._poller.close)
        reactor._poller.close()
        reactor._poller = FakePoller([(7, EPOLLIN)])
        reactor._selectables[7] = selectable
        reactor.doPoll(0)
        self.assertEqual(selectable.calls, ["connectionLost:ConnectionFdescWentAway"])

    def test_otherEventsTakeTwistedsPath(self) -> None:
        """
        A write event, or a read with a hang-up, goes through Twisted's
        C{_doReadOrWrite}.
        """
        writer = FakeSelectable()
        self.poll(writer, EPOLLOUT)
        self.assertEqual(writer.calls, ["doWrite"])
        hungUp = FakeSelectable()
        self.poll(hungUp, EPOLLIN | EPOLLHUP)
        self.assertEqual(hungUp.calls, ["doRead"])

    def test_unknownDescriptorIsIgnored(self) -> None:
        """
        An event for a descriptor the reactor no longer tracks is skipped.
        """
        reactor = NetdEPollReactor()
        self.addCleanup(reactor._poller.close)
        reactor._poller.close()
        reactor._poller = FakePoller([(99, EPOLLIN)])
        reactor.doPoll(0)


class ReadContextTests(SynchronousTestCase):
    """
    The log context L{NetdEPollReactor} gives a read is built only when
    something asks for it, is fresh every time, and leaves nothing behind.
    """

    def setUp(self) -> None:
        self.reactor = NetdEPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.reactor._poller.close()
        self.poller = FakePoller([])
        self.reactor._poller = self.poller  # type: ignore[assignment]

    def add(self, selectable: FakeSelectable) -> None:
        """
        Make the reactor track C{selectable}.

        @param selectable: The selectable.
        """
        self.reactor._selectables[selectable.fd] = selectable
        self.reactor._reads.add(selectable.fd)

    def test_builtOnlyWhenAsked(self) -> None:
        """
        A read that logs nothing never asks for the selectable's
        C{logPrefix}; two reads that do get two separate contexts.
        """
        from twisted.python import context
        from twisted.python.log import ILogContext

        asked: list[str] = []
        quiet = FakeSelectable(fd=7)
        quiet.logPrefix = lambda: asked.append("quiet") or "quiet"  # type: ignore[method-assign]
        self.add(quiet)
        self.poller.events = [(7, EPOLLIN)]
        self.reactor.doPoll(0)
        self.assertEqual((quiet.calls, asked), (["doRead"], []))

        seen: list[Any] = []
        chatty = FakeSelectable(fd=8)
        chatty.doRead = lambda: seen.append(  # type: ignore[method-assign]
            context.get(ILogContext)
        )
        self.add(chatty)
        for _ in range(2):
            self.poller.events = [(8, EPOLLIN)]
            self.reactor.doPoll(0)
        self.assertEqual([c["system"] for c in seen], ["FakeSelectable"] * 2)
        self.assertIsNot(seen[0], seen[1])
        self.assertEqual(context.get(ILogContext)["system"], "-")

    def test_otherEventsSeeTheBaseContext(self) -> None:
        """
        An event that takes Twisted's path after a read in the same poll
        gets its context from the base context, as under Twisted's reactor,
        not from the selectable read before it.
        """
        from twisted.python import context
        from twisted.python.log import ILogContext

        seen: list[Any] = []
        reader = FakeSelectable(fd=7)
        writer = FakeSelectable(fd=8)
        writer.logPrefix = lambda: "writer"  # type: ignore[method-assign]
        writer.doWrite = lambda: seen.append(  # type: ignore[method-assign]
            dict(context.get(ILogContext))
        )
        self.add(reader)
        self.add(writer)
        context.call(
            {ILogContext: {"system": "-", "outer": "kept"}},
            self._pollWith,
            [(7, EPOLLIN), (8, EPOLLOUT)],
        )
        self.assertEqual(seen, [{"system": "writer", "outer": "kept"}])

    def _pollWith(self, events: list[tuple[int, int]]) -> None:
        """
        Poll once, reporting C{events}.

        @param events: The events.
        """
        self.poller.events = events
        self.reactor.doPoll(0)


class InstallTests(SynchronousTestCase):
    """
    When netd installs its reactor.
    """

    def test_pluginFound(self) -> None:
        """
        Twisted's reactor plugins include netd's, as C{netd}, installing
        L{netd.reactor}.
        """
        from twisted.application.reactors import IReactorInstaller, getReactorTypes
        from zope.interface.verify import verifyObject

        found = [r for r in getReactorTypes() if r.shortName == "netd"]
        self.assertEqual(len(found), 1)
        self.assertTrue(verifyObject(IReactorInstaller, found[0]))
        self.assertEqual(found[0].moduleName, "netd.reactor")

    def test_askedReactorIsKept(self) -> None:
        """
        With a reactor installed (trial's) and asked for, L{selectReactor}
        keeps it.
        """
        from twisted.internet import reactor

        self.assertIs(netdreactor.selectReactor("epoll"), reactor)

    def test_noReactorInstallsThroughPlugin(self) -> None:
        """
        With no reactor installed and none asked for, L{selectReactor}
        installs netd's through Twisted's reactor plugins:
        C{installReactor("netd")}.
        """
        calls: list[str] = []
        self.patch(sys, "modules", {**sys.modules})
        del sys.modules["twisted.internet.reactor"]
        self.patch(netdreactor, "installReactor", lambda name: calls.append(name))
        netdreactor.selectReactor(None)
        self.assertEqual(calls, ["netd"])

    def test_unaskedReactorRefused(self) -> None:
        """
        With another reactor installed (trial's) and none asked for,
        L{selectReactor} raises L{netdreactor.ReactorConflict} naming it and
        the fix.
        """
        from twisted.internet import reactor

        if isinstance(reactor, netdreactor.NetdEPollReactor):
            raise self.skipTest("trial runs on netd's reactor")
        kind = type(reactor)
        e = self.assertRaises(
            netdreactor.ReactorConflict, netdreactor.selectReactor, None
        )
        self.assertEqual(
            str(e),
            f"the {kind.__module__}.{kind.__qualname__} reactor was installed "
            "before netd could install its own (something imported "
            "twisted.internet.reactor first: a sitecustomize, .pth file or "
            "another twistd plugin); remove that import, or choose the "
            "reactor explicitly with twistd --reactor=NAME (netd for netd's)",
        )

    def runTwistd(
        self, *arguments: str, before: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """
        Start C{twistd} in a child process up to C{makeService} and print
        the installed reactor's class.

        @param arguments: twistd's arguments before C{netd}.
        @param before: Code the child runs first.
        @return: The finished child (the class name on its standard output).
        """
        code = (
            before + "\n"
            "import os, sys, netd.tap\n"
            "original = netd.tap.makeService\n"
            "def report(options):\n"
            "    original(options)\n"
            "    from twisted.internet import reactor\n"
            "    print(type(reactor).__name__, flush=True)\n"
            "    os._exit(0)\n"
            "netd.tap.makeService = report\n"
            "sys.argv = ['twistd', '-n', '--pidfile=', *sys.argv[1:], 'netd']\n"
            "from twisted.scripts.twistd import run\n"
            "run()\n"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO, *filter(None, [env.get("PYTHONPATH")])]
        )
        result = subprocess.run(
            [sys.executable, "-c", code, *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        return result

    def test_twistdNetdInstallsIt(self) -> None:
        """
        C{twistd netd} runs on L{NetdEPollReactor}.
        """
        self.assertEqual(self.runTwistd().stdout.strip(), "NetdEPollReactor")

    def test_twistdReactorNetd(self) -> None:
        """
        C{twistd --reactor=netd netd} runs on L{NetdEPollReactor}, installed
        by twistd from the plugin.
        """
        result = self.runTwistd("--reactor=netd")
        self.assertEqual(result.stdout.strip(), "NetdEPollReactor", result.stderr)

    def test_twistdReactorOptionWins(self) -> None:
        """
        C{twistd --reactor epoll netd} keeps Twisted's epoll reactor.
        """
        self.assertEqual(
            self.runTwistd("--reactor", "epoll").stdout.strip(), "EPollReactor"
        )

    def test_twistdNetdRefusesAnotherReactor(self) -> None:
        """
        C{twistd netd} when something installed another reactor first,
        without C{--reactor}: netd's usage error (status 64, one line and a
        pointer to C{--help}) naming the reactor, the cause and the fix,
        before C{makeService}; no silent fallback.
        """
        result = self.runTwistd(
            before="from twisted.internet import selectreactor\n"
            "selectreactor.install()"
        )
        self.assertEqual(result.returncode, 64, result.stderr)
        self.assertEqual(
            result.stderr.splitlines()[-1],
            "twistd netd: 'twistd netd --help' lists the options",
        )
        self.assertEqual(
            result.stderr.splitlines()[-2],
            "twistd netd: the twisted.internet.selectreactor.SelectReactor "
            "reactor was installed before netd could install its own "
            "(something imported twisted.internet.reactor first: a "
            "sitecustomize, .pth file or another twistd plugin); remove that "
            "import, or choose the reactor explicitly with twistd "
            "--reactor=NAME (netd for netd's)",
        )

    def test_twistdReactorAskedForIsKept(self) -> None:
        """
        C{twistd --reactor=select netd}, with the select reactor installed
        only by C{--reactor}: no conflict, it runs on it.
        """
        result = self.runTwistd("--reactor=select")
        self.assertEqual(result.stdout.strip(), "SelectReactor", result.stderr)
