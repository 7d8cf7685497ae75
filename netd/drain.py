# -*- test-case-name: tests.test_drain -*-
"""
Draining: letting open sessions finish, up to a deadline, then closing the
rest.

When netd stops (SIGTERM) its listeners close at once, so no new session
starts; the sessions already open are tracked by their
L{SessionFactory<netd.sessions.SessionFactory>} (a L{WrappingFactory}, whose
C{protocols} holds every open session) and get C{drain_timeout} seconds to
end by themselves. Those still open then are aborted, each logging its
session event with the reason C{"drain deadline reached"}. A reload that
retires a service drains that service's sessions the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netd.words import plural

DRAIN_REASON = "drain deadline reached"


def openSessions(factories: Iterable[Any]) -> list[Any]:
    """
    The sessions open on some listeners.

    @param factories: L{SessionFactory} instances (any L{WrappingFactory}).
    @return: Their open protocols.
    """
    return [session for factory in factories for session in list(factory.protocols)]


def abortSession(session: Any, reason: str = DRAIN_REASON) -> None:
    """
    Close a session at once, recording why for its session event: through
    its own L{abortSession<netd.sessions.Session.abortSession>} if it has
    one (an exec session ends its program first).

    @param session: A L{Session<netd.sessions.Session>} (or any protocol
        wrapper with a transport).
    @param reason: Why.
    """
    cut = getattr(type(session), "abortSession", None)
    if cut is not None:
        cut(session, reason)
        return
    if getattr(session, "closeReason", "") is None:
        session.closeReason = reason
    transport = session.transport
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


class Drain:
    """
    Waits for sessions to end, then aborts those left at the deadline.

    @ivar timeout: Seconds the sessions get.
    @ivar aborted: How many sessions were aborted at the deadline.
    @ivar done: Fires with L{aborted} once no session is left.
    """

    _log = Logger()

    pollInterval = 0.05
    # After the abort, how long to wait for the transports to report the
    # connection lost before giving up on them.
    graceAfterAbort = 5.0

    def __init__(
        self,
        sessions: Callable[[], list[Any]],
        clock: Any,
        timeout: float,
        what: str = "netd",
    ) -> None:
        """
        @param sessions: Returns the sessions still open.
        @param clock: An L{IReactorTime} provider.
        @param timeout: Seconds before the rest are aborted.
        @param what: Who is draining, for the log events.
        """
        self.sessions = sessions
        self.clock = clock
        self.timeout = timeout
        self.what = what
        self.aborted = 0
        self.done: Deferred[int] = Deferred()
        self._started = 0.0
        self._abortedAt: float | None = None
        self._call = LoopingCall(self._check)
        self._call.clock = clock

    def start(self) -> Deferred[int]:
        """
        Begin; check at once (nothing open: L{done} fires now).

        @return: L{done}.
        """
        self._started = self.clock.seconds()
        count = len(self.sessions())
        if count:
            self._log.info(
                "{what}: waiting up to {timeout:g}s for {sessions} to end",
                what=self.what,
                timeout=self.timeout,
                count=count,
                sessions=plural(count, "open session"),
            )
        self._call.start(self.pollInterval, now=True)
        return self.done

    def abortNow(self) -> None:
        """
        Do not wait any longer: abort every session still open.
        """
        self._abort()

    def _check(self) -> None:
        """
        Finish if no session is left; abort the rest at the deadline.
        """
        left = self.sessions()
        now = self.clock.seconds()
        if not left or (
            self._abortedAt is not None
            and now - self._abortedAt >= self.graceAfterAbort
        ):
            self._call.stop()
            self.done.callback(self.aborted)
            return
        if self._abortedAt is None and now - self._started >= self.timeout:
            self._abort()

    def _abort(self) -> None:
        """
        Abort every session still open.
        """
        if self._abortedAt is not None:
            return
        self._abortedAt = self.clock.seconds()
        left = self.sessions()
        self.aborted = len(left)
        if left:
            self._log.warn(
                "{what}: closing {sessions} still open after {timeout:g}s",
                what=self.what,
                count=len(left),
                sessions=plural(len(left), "session"),
                timeout=self.timeout,
            )
        for session in left:
            abortSession(session)
