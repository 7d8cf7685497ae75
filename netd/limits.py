# -*- test-case-name: tests.test_config -*-
"""
The session limits every service honours: L{Limits}, and the settings of
C{[netd.limits]} and C{[services.NAME.limits]} that fill it. Enforced by
L{netd.policy}; read by L{netd.config}.
"""

from __future__ import annotations

import math

from attrs import frozen

from netd.settings import Network, Setting, integer, networks, number


@frozen
class Limits:
    """
    The session limits every service honours (see L{netd.policy}).

    @ivar maxSessions: Most concurrent sessions for the service.
    @ivar maxSessionsPerPeer: Most concurrent sessions from one address.
    @ivar idleTimeout: Seconds without traffic before a session is closed;
        0 disables.
    @ivar maxDuration: Seconds a session may last; 0 is unlimited.
    @ivar maxBytes: Bytes (in plus out) a session may carry; 0 is unlimited.
    @ivar allow: If not empty, only peers in these networks are served.
    @ivar deny: Peers in these networks are never served (wins over allow).
    @ivar maxConnectionsPerSecond: New stream sessions per second the
        service accepts from everyone together; 0 is unlimited.
    @ivar connectionBurst: Sessions the service accepts back to back above
        that rate; 0 means one second's worth (at least 1).
    @ivar maxConnectionsPerSecondPerPeer: New stream sessions per second
        accepted from one address; 0 is unlimited.
    @ivar connectionBurstPerPeer: Sessions one address may open back to
        back; 0 means one second's worth (at least 1).
    """

    maxSessions: int = 1000
    maxSessionsPerPeer: int = 64
    idleTimeout: float = 300.0
    maxDuration: float = 0.0
    maxBytes: int = 0
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    maxConnectionsPerSecond: float = 0.0
    connectionBurst: int = 0
    maxConnectionsPerSecondPerPeer: float = 0.0
    connectionBurstPerPeer: int = 0


def effectiveBurst(rate: float, burst: int) -> int:
    """
    The burst a connection-rate limit allows.

    @param rate: The limit, per second (more than 0).
    @param burst: The configured burst, or 0 for one second's worth.
    @return: C{burst}, or else C{rate} rounded up (at least 1).
    """
    return burst or max(1, math.ceil(rate))


# An instance: the class attributes of a slotted attrs class are descriptors.
_DEFAULT_LIMITS = Limits()

LIMIT_SETTINGS = (
    Setting(
        "max_sessions",
        _DEFAULT_LIMITS.maxSessions,
        integer(1, 1_000_000),
        "most concurrent sessions for the service",
    ),
    Setting(
        "max_sessions_per_peer",
        _DEFAULT_LIMITS.maxSessionsPerPeer,
        integer(1, 1_000_000),
        "most concurrent sessions from one source address",
    ),
    Setting(
        "idle_timeout",
        _DEFAULT_LIMITS.idleTimeout,
        number(0, 86400 * 365),
        "seconds without traffic before a session is closed (0: never)",
    ),
    Setting(
        "max_duration",
        _DEFAULT_LIMITS.maxDuration,
        number(0, 86400 * 365),
        "seconds a session may last (0: unlimited)",
    ),
    Setting(
        "max_bytes",
        _DEFAULT_LIMITS.maxBytes,
        integer(0, 2**62),
        "bytes in plus out a session may carry (0: unlimited)",
    ),
    Setting(
        "allow",
        _DEFAULT_LIMITS.allow,
        networks,
        "if not empty, serve only these CIDR prefixes",
    ),
    Setting(
        "deny",
        _DEFAULT_LIMITS.deny,
        networks,
        "never serve these CIDR prefixes (wins over allow)",
    ),
    Setting(
        "max_connections_per_second",
        _DEFAULT_LIMITS.maxConnectionsPerSecond,
        number(0, 1e9),
        "new stream sessions per second accepted from all sources together (0: unlimited)",
    ),
    Setting(
        "connection_burst",
        _DEFAULT_LIMITS.connectionBurst,
        integer(0, 1_000_000_000),
        "sessions accepted back to back above max_connections_per_second (0: one second's worth)",
    ),
    Setting(
        "max_connections_per_second_per_peer",
        _DEFAULT_LIMITS.maxConnectionsPerSecondPerPeer,
        number(0, 1e9),
        "new stream sessions per second accepted from one source address (0: unlimited)",
    ),
    Setting(
        "connection_burst_per_peer",
        _DEFAULT_LIMITS.connectionBurstPerPeer,
        integer(0, 1_000_000_000),
        "sessions one source address may open back to back (0: one second's worth)",
    ),
)

LIMIT_FIELDS = {
    "max_sessions": "maxSessions",
    "max_sessions_per_peer": "maxSessionsPerPeer",
    "idle_timeout": "idleTimeout",
    "max_duration": "maxDuration",
    "max_bytes": "maxBytes",
    "allow": "allow",
    "deny": "deny",
    "max_connections_per_second": "maxConnectionsPerSecond",
    "connection_burst": "connectionBurst",
    "max_connections_per_second_per_peer": "maxConnectionsPerSecondPerPeer",
    "connection_burst_per_peer": "connectionBurstPerPeer",
}
