# -*- test-case-name: tests.test_reflection -*-
"""
Keeping UDP replies from being used against third parties.

A UDP source address can be forged, so a service that answers datagrams can
be made to send its answers to a victim (reflection), or to another UDP
service that answers back (a loop, e.g. echo to chargen). L{ReplyGuard}
applies the classic inetd rules and a per-source budget before any reply:

  - never answer source port 0 (no one can receive it) nor, by default, a
    privileged source port (below 1024), where servers and not clients live;
  - never answer one of netd's own listening ports (two netd services, or
    two netd hosts, would otherwise talk to each other forever);
  - at most C{rate} replies per second to one source address, with bursts of
    C{burst}, metered with GCRA (one float per address, see
    L{netd.ratelimit.RateMeter}).

Every UDP service that answers declares L{guardSettings} among its settings
and builds its guard with L{guardFor}, so the rules and their keys are the
same for all of them; L{GuardedReplyDatagram} is the whole UDP side of a
service whose reply is made by one function (chargen, daytime, time).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Any

from netd.datagrams import ServiceDatagramProtocol
from netd.ratelimit import RateMeter
from netd.servicetype import ServiceContext
from netd.settings import Setting, boolean, integer, number


class ReplyGuard:
    """
    Decides whether a reply to a datagram's source may be sent.

    @ivar minSourcePort: The lowest source port answered (at least 1).
    @ivar ownPorts: netd's listening ports (a live set, filled at start-up).
    """

    def __init__(
        self,
        minSourcePort: int,
        ownPorts: Set[int],
        rate: float,
        burst: int,
        clock: Callable[[], float],
        maxSources: int = 65536,
    ) -> None:
        """
        @param minSourcePort: Datagrams from lower source ports get no reply;
            0 or 1 answers every port but 0.
        @param ownPorts: The ports netd listens on.
        @param rate: Replies per second allowed to one source address.
        @param burst: Replies allowed back to back to one source address.
        @param clock: Returns the current time in seconds.
        @param maxSources: How many source addresses are tracked at once; past
            that the least recently added is forgotten.
        """
        self.minSourcePort = max(1, minSourcePort)
        self.ownPorts = ownPorts
        self._meter = RateMeter(rate, burst, clock, maxSources)

    def check(self, host: str, port: int) -> str | None:
        """
        Judge one reply and, if it is allowed, charge it to the budget.

        @param host: The datagram's source address.
        @param port: Its source port.
        @return: L{None} to reply, or the reason not to.
        """
        if port < self.minSourcePort:
            return "source port 0" if port == 0 else "privileged source port"
        if port in self.ownPorts:
            return "source is a netd service port"
        if not self._meter.take(host):
            return "reply budget exceeded"
        return None

    def tracked(self) -> int:
        """
        @return: How many source addresses have budget state.
        """
        return self._meter.tracked()


def guardSettings() -> tuple[Setting, ...]:
    """
    The settings of a L{ReplyGuard}, for a service type's C{settings}.

    @return: C{udp_min_source_port}, C{udp_refuse_own_ports},
        C{udp_reply_rate} and C{udp_reply_burst}.
    """
    return (
        Setting(
            "udp_min_source_port",
            1024,
            integer(0, 65535),
            "UDP datagrams from lower source ports get no reply (0: reply to all but port 0)",
        ),
        Setting(
            "udp_refuse_own_ports",
            True,
            boolean,
            "no UDP reply to a source port netd itself listens on",
        ),
        Setting(
            "udp_reply_rate",
            100.0,
            number(0.001, 1e9),
            "UDP replies per second to one source address",
        ),
        Setting(
            "udp_reply_burst",
            200,
            integer(1, 1_000_000_000),
            "UDP replies one source address may get back to back",
        ),
    )


def guardFor(context: ServiceContext) -> ReplyGuard:
    """
    Build the reply guard of one UDP listener from its service's
    L{guardSettings}.

    @param context: The service instance.
    @return: A new guard, on the instance's reactor clock.
    """
    settings = context.settings
    ownPorts = context.ownPorts if settings["udp_refuse_own_ports"] else frozenset()
    return ReplyGuard(
        minSourcePort=settings["udp_min_source_port"],
        ownPorts=ownPorts,
        rate=settings["udp_reply_rate"],
        burst=settings["udp_reply_burst"],
        clock=context.reactor.seconds,
    )


class GuardedReplyDatagram(ServiceDatagramProtocol):
    """
    Answers each datagram that passes the filter and the guard with
    L{answer}'s bytes.

    @ivar guard: Decides which sources get a reply.
    @ivar answer: Makes the reply to one datagram.
    """

    def __init__(
        self,
        context: ServiceContext,
        guard: ReplyGuard,
        answer: Callable[[bytes], bytes],
    ) -> None:
        """
        @param context: The service instance.
        @param guard: The listener's guard (L{guardFor}).
        @param answer: Called with the request's payload, returns the reply.
        """
        super().__init__(context)
        self.guard = guard
        self.answer = answer

    def serviceDatagram(self, data: bytes, addr: Any) -> None:
        """
        Reply, unless the guard says no.

        @param data: The payload.
        @param addr: The source C{(host, port, ...)}.
        """
        reason = self.guard.check(addr[0], addr[1])
        if reason is not None:
            self.drop(reason, addr[0])
            return
        self.reply(self.answer(data), addr)


def guardedReplies(
    answerFor: Callable[[ServiceContext], Callable[[bytes], bytes]],
) -> Callable[[ServiceContext, Any], GuardedReplyDatagram]:
    """
    The C{buildDatagramProtocol} of a service type whose UDP side is
    L{GuardedReplyDatagram}.

    @param answerFor: Given the service instance, makes the reply maker of
        one listener (called once per listener).
    @return: A builder taking the service instance and a
        L{DatagramListener<netd.descriptions.DatagramListener>}, returning
        the listener's protocol with its own guard (L{guardFor}).
    """

    def buildDatagramProtocol(
        context: ServiceContext, listener: Any
    ) -> GuardedReplyDatagram:
        return GuardedReplyDatagram(context, guardFor(context), answerFor(context))

    return buildDatagramProtocol
