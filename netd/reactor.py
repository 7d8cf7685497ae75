# -*- test-case-name: tests.test_reactor -*-
"""
netd's reactor: Twisted's epoll reactor with a shorter path for read events.

For every ready file descriptor, L{EPollReactor.doPoll
<twisted.internet.epollreactor.EPollReactor.doPoll>} calls
L{log.callWithLogger<twisted.python.log.callWithLogger>}, which goes through
four function calls and two dictionary copies to push the selectable's
C{logPrefix} on the legacy logging context (so that a C{log.msg} made while
reading knows its C{system}), and then C{_doReadOrWrite}, which decodes the
event. Measured with cProfile under a 64-byte TCP echo load, that was about
a third of the Python time of a round trip.

L{NetdEPollReactor} handles an event that is exactly C{EPOLLIN} (data to
read, nothing else) itself: it sets the same logging context (one mapping
on the context stack per poll, told which selectable is being read, which
builds that selectable's context only if something logs), calls
C{doRead}, and handles an exception or a returned reason exactly as
C{_doReadOrWrite} does, in that context. Every other event (a write, a
hang-up, an error) goes to Twisted's own C{_doReadOrWrite} under
C{callWithLogger}, unchanged.
Twisted's reactor tests for system events, time, descriptor sets, TCP,
TLS, UDP, UNIX sockets and processes run against it (L{tests.test_reactor},
L{tests.test_transport}).

It is a Twisted reactor plugin (C{twisted/plugins/netd_reactor.py}, short
name C{netd}), so C{twistd --reactor=netd} and C{twistd --help-reactors}
know it. C{twistd netd} without C{--reactor} installs it through the same
mechanism (L{selectReactor}); C{twistd --reactor=epoll netd} keeps the
reactor asked for; a reactor installed by something else before netd's
refuses to start (L{ReactorConflict}) instead of running on it silently.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import cast

from twisted.application.reactors import installReactor
from twisted.internet import epollreactor
from twisted.internet.interfaces import ILoggingContext, IReactorCore, IReadDescriptor

# Private Twisted API: see tests/test_twisted_canary.py.
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.python.log import ILogContext


def _logPrefix(selectable: ILoggingContext) -> str:
    """
    A selectable's C{logPrefix}, as L{log.callWithLogger} would find it.

    @param selectable: An L{IReadDescriptor}.
    @return: Its prefix, or a placeholder if asking for it failed (logged,
        as L{log.callWithLogger} logs it).
    """
    try:
        return selectable.logPrefix()
    except BaseException:
        log.err(system="(buggy logPrefix method)")
        return "(buggy logPrefix method)"


class _PollContext(dict[object, object]):
    """
    The context mapping L{NetdEPollReactor} pushes for one poll.

    Its L{ILogContext} is that of the selectable being read: a copy of the
    base context with the selectable's C{logPrefix} as C{system}, as
    L{log.callWithLogger} builds it, but built only when something asks for
    it (a legacy C{log.msg} made while reading), not for every read. While
    no selectable is being read, it is the base context.

    @ivar base: The legacy log context under this poll.
    @ivar selectable: The selectable being read, or L{None}.
    """

    __slots__ = ("base", "selectable")

    def __init__(self, base: dict[str, object]) -> None:
        super().__init__()
        self.base = base
        self.selectable: IReadDescriptor | None = None

    def __missing__(self, key: object) -> dict[str, object]:
        """
        Build the log context of the selectable being read.

        @param key: The context key looked up.
        @return: The log context, for L{ILogContext}.
        @raise KeyError: For any other key (the lookup goes on down the
            context stack).
        """
        if key is not ILogContext:
            raise KeyError(key)
        selectable = self.selectable
        if selectable is None:
            return self.base
        # A logPrefix that raises is logged by _logPrefix; that event gets
        # the base context instead of coming back here.
        self.selectable = None
        try:
            logContext = self.base.copy()
            logContext["system"] = _logPrefix(selectable)
        finally:
            self.selectable = selectable
        return logContext


class NetdEPollReactor(epollreactor.EPollReactor):
    """
    An epoll reactor that calls C{doRead} directly for plain read events,
    with the same logging context as Twisted's path, set up in fewer steps.
    """

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for events and dispatch them.

        One L{_PollContext} is pushed on the context stack for the whole
        poll and told which selectable is being read, instead of a context
        built, pushed and popped for every event.

        @param timeout: Seconds to wait at most, or L{None} to wait for ever.
        """
        if timeout is None:
            timeout = -1
        # Private Twisted API: see tests/test_twisted_canary.py.
        selectables = self._selectables
        try:
            events = self._poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        if not events:
            return
        doReadOrWrite = self._doReadOrWrite
        slot = _PollContext(context.get(ILogContext))
        stack = context.theContextTracker.currentContext().contexts
        stack.append(slot)
        why: BaseException | Failure | None
        try:
            for fd, event in events:
                try:
                    selectable = selectables[fd]
                except KeyError:
                    continue
                if event != EPOLLIN:
                    slot.selectable = None
                    log.callWithLogger(selectable, doReadOrWrite, selectable, fd, event)
                    continue
                slot.selectable = selectable
                try:
                    if selectable.fileno() == -1:
                        why = _NO_FILEDESC
                    else:
                        why = selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    self._disconnectSelectable(selectable, why, True)
        finally:
            stack.pop()

    doIteration = doPoll


def install() -> NetdEPollReactor:
    """
    Install a L{NetdEPollReactor} as the global reactor.

    @return: The reactor.
    @raise twisted.internet.error.ReactorAlreadyInstalledError: If one is.
    """
    from twisted.internet.main import installReactor

    reactor = NetdEPollReactor()
    installReactor(reactor)
    return reactor


PLUGIN_NAME = "netd"


class ReactorConflict(Exception):
    """
    A reactor other than netd's was installed before C{twistd netd} could
    install netd's, and C{twistd --reactor} did not ask for it.
    """


def selectReactor(asked: str | None) -> IReactorCore:
    """
    Make sure C{twistd netd} runs on the reactor it should.

    With C{twistd --reactor NAME}, twistd has installed that reactor while
    parsing its options: it is kept. Otherwise netd's is installed through
    Twisted's reactor plugins (L{installReactor}C{("netd")}), unless it
    already is.

    @param asked: twistd's C{reactor} option (the short name given to
        C{--reactor}), or L{None}.
    @return: The installed reactor.
    @raise ReactorConflict: If another reactor is installed and was not
        asked for: something imported C{twisted.internet.reactor} (and so
        installed Twisted's default) before twistd ran netd.
    """
    if asked is None and "twisted.internet.reactor" not in sys.modules:
        return installReactor(PLUGIN_NAME)
    from twisted.internet import reactor

    if asked is None and not isinstance(reactor, NetdEPollReactor):
        kind = type(reactor)
        raise ReactorConflict(
            f"the {kind.__module__}.{kind.__qualname__} reactor was installed "
            "before netd could install its own (something imported "
            "twisted.internet.reactor first: a sitecustomize, .pth file or "
            "another twistd plugin); remove that import, or choose the "
            "reactor explicitly with twistd --reactor=NAME (netd for netd's)"
        )
    # The module attribute is the installed reactor (as in
    # twisted.application.reactors.installReactor).
    return cast(IReactorCore, reactor)
