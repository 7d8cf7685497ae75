# -*- test-case-name: tests.test_sessions -*-
"""
Interfaces between netd's layers that are not Twisted's.

L{ISessionTransport}: what a service's protocol may ask of the transport a
netd session gives it, beyond L{ITransport}.
"""

from __future__ import annotations

import socket

from zope.interface import Attribute, Interface


class ISessionTransport(Interface):
    """
    A transport that counts bytes and can hand out a C{sendfile}-capable
    socket: netd's session wrapper (L{netd.sessions.Session}), seen by the
    protocol it wraps directly.

    Inside TLS the protocol's transport is the TLS layer, which does not
    provide this interface: bytes must be encrypted, so nothing may be sent
    around it.
    """

    bytesOut = Attribute(
        "Bytes written to the peer. A protocol that sends bytes around the "
        "transport (with sendfile) adds them here."
    )

    def sendfileSocket() -> socket.socket | None:
        """
        @return: The connected L{socket.socket} under the session, to which
            C{os.sendfile} may write once the transport's own buffer is
            empty; L{None} if there is none (an in-memory transport).
        """
