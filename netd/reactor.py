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
on the context stack per poll, updated for each event), calls C{doRead},
and handles an exception or a returned reason exactly as C{_doReadOrWrite}
does, in that context. A TCP connection's or UDP port's context is built
once and kept while it reads, since its C{logPrefix} is fixed. Every other
event (a write, a hang-up, an error) goes to Twisted's own
C{_doReadOrWrite} under C{callWithLogger}, unchanged.
Twisted's reactor tests for system events, time, descriptor sets, TCP,
TLS, UDP, UNIX sockets and processes run against it (L{tests.test_reactor},
L{tests.test_transport}).

C{twistd netd} installs it (L{installIfUnset}) unless a reactor is already
installed, for example with C{twistd --reactor epoll netd}.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet import epollreactor, tcp, udp
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import context, log
from twisted.python.log import ILogContext


def _logPrefix(selectable: Any) -> str:
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


# Selectables whose logPrefix never changes while they read: tcp.Server's
# and udp.Port's is the logstr they set when they start.
_FIXED_PREFIX = (tcp.Server, udp.Port)


class NetdEPollReactor(epollreactor.EPollReactor):
    """
    An epoll reactor that calls C{doRead} directly for plain read events,
    with the same logging context as Twisted's path, set up in fewer steps.
    """

    def __init__(self) -> None:
        self._readContexts: dict[Any, dict[str, Any]] = {}
        self._readContextsBase: dict[str, Any] | None = None
        super().__init__()

    def _readContext(self, selectable: Any, base: dict[str, Any]) -> dict[str, Any]:
        """
        The log context of C{selectable} while it reads: a copy of C{base}
        with its C{logPrefix} as C{system}, as L{log.callWithLogger} builds
        it.

        A TCP connection's or a UDP port's prefix is fixed once it is
        reading, so theirs is kept until they stop reading (or the base
        context changes), which saves a copy and a call on every read. Any
        other selectable gets a fresh one each time.

        @param selectable: An L{IReadDescriptor}.
        @param base: The current legacy log context.
        @return: The log context.
        """
        logContext = base.copy()
        logContext["system"] = _logPrefix(selectable)
        if isinstance(selectable, _FIXED_PREFIX):
            self._readContexts[selectable] = logContext
        return logContext

    def removeReader(self, reader: Any) -> None:
        """
        Stop reading from C{reader}, and forget its log context.

        @param reader: An L{IReadDescriptor}.
        """
        self._readContexts.pop(reader, None)
        super().removeReader(reader)

    def removeAll(self) -> list[Any]:
        """
        Stop reading from and writing to every selectable, and forget their
        log contexts.

        @return: The selectables removed.
        """
        self._readContexts.clear()
        return super().removeAll()

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for events and dispatch them.

        One context mapping is pushed on the context stack for the whole
        poll, and its L{ILogContext} is set to each read's selectable in
        turn (and back to the base context for Twisted's own path), instead
        of a push and a pop per event.

        @param timeout: Seconds to wait at most, or L{None} to wait for ever.
        """
        if timeout is None:
            timeout = -1
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
        base = context.get(ILogContext)
        readContexts = self._readContexts
        if base is not self._readContextsBase:
            readContexts.clear()
            self._readContextsBase = base
        key = ILogContext
        slot: dict[Any, Any] = {key: base}
        stack = context.theContextTracker.currentContext().contexts
        stack.append(slot)
        try:
            for fd, event in events:
                try:
                    selectable = selectables[fd]
                except KeyError:
                    continue
                if event != EPOLLIN:
                    slot[key] = base
                    log.callWithLogger(selectable, doReadOrWrite, selectable, fd, event)
                    continue
                try:
                    slot[key] = readContexts[selectable]
                except KeyError:
                    slot[key] = self._readContext(selectable, base)
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


def installIfUnset() -> bool:
    """
    Install a L{NetdEPollReactor} unless a reactor is already installed.

    @return: Whether it was installed.
    """
    if "twisted.internet.reactor" in sys.modules:
        return False
    install()
    return True
