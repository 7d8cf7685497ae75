# -*- test-case-name: tests.test_tls -*-
"""
TLS for C{ssl:} listeners: the certificate and key an C{ssl:} description
names, a modern protocol floor and cipher list, and ALPN.

ALPN: Twisted 26.10's L{CertificateOptions} installs an ALPN select callback
on every server context, which answers a client that offers ALPN with an
empty protocol name (an C{internal_error} alert that kills the handshake)
unless the wrapped factory names the protocol offered. curl and every
browser offer ALPN, so netd replaces that callback (L{ServerTLS}): a
protocol the service speaks is selected, and with no protocol in common the
handshake goes on without ALPN (RFC 7301 section 3.2 allows either; a
server for C{nc}-style line protocols and a static-file server are both
expected to fall back).

Closing: Twisted's L{BufferingTLSTransport} holds small writes until the
next reactor turn, and flushes them when the application closes, but not
when the client's C{close_notify} arrives in the same read as its last data:
the reply (an echo, a response) was then dropped and only netd's own
C{close_notify} sent (C{echo hi | socat - OPENSSL:...} got nothing back).
L{RecordBatchingTLS} sends what is held before answering the client's
C{close_notify}; L{tlsServerFactory} builds the factory of every C{ssl:}
listener with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from OpenSSL import SSL
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

# Mozilla's "intermediate" server configuration (TLS 1.2 suites; TLS 1.3
# suites are OpenSSL's, all of which it accepts):
# https://wiki.mozilla.org/Security/Server_Side_TLS#Intermediate_compatibility_.28recommended.29
MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    Server TLS connections for one C{ssl:} listener, with netd's ALPN
    policy instead of Twisted's (see the module docstring).

    @ivar options: The certificate options (context, certificate, ciphers).
    @ivar protocols: The ALPN protocol names the service speaks, most
        preferred first; empty for a service with no ALPN name (echo,
        chat): then no protocol is ever selected.
    """

    def __init__(self, options: Any, protocols: Sequence[bytes] = ()) -> None:
        self.options = options
        self.protocols = tuple(protocols)
        self._context: SSL.Context | None = None

    def selectProtocol(
        self, connection: SSL.Connection, offered: Sequence[bytes]
    ) -> Any:
        """
        Choose the ALPN protocol of one handshake.

        @param connection: The connection being negotiated.
        @param offered: What the client offered, in its order.
        @return: The first of L{protocols} that the client offered, or
            L{SSL.NO_OVERLAPPING_PROTOCOLS} so that the handshake completes
            without ALPN.
        """
        for name in self.protocols:
            if name in offered:
                return name
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def context(self) -> SSL.Context:
        """
        @return: The listener's one OpenSSL context (built on first use), its
            ALPN select callback netd's.
        """
        if self._context is None:
            context = self.options.getContext()
            context.set_alpn_select_callback(self.selectProtocol)
            self._context = context
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        @param tlsProtocol: The L{TLSMemoryBIOProtocol} the connection is for.
        @return: A new server-side OpenSSL connection.
        """
        return SSL.Connection(self.context())


def sslContextFactory(description: str, protocols: Sequence[bytes] = ()) -> ServerTLS:
    """
    Load the TLS certificate and key an C{ssl:} description names.

    Twisted's C{ssl:} parser does the work (options, certificate chain,
    DH parameters); this is the one place netd reads the endpoint it builds,
    so that netd can put its own session accounting outside the TLS layer.

    @param description: An C{ssl:} endpoint description.
    @param protocols: The ALPN protocol names the service speaks.
    @return: A L{ServerTLS} (an L{IOpenSSLServerConnectionCreator}).
    @raise ValueError: If the certificate or key cannot be loaded.
    """
    try:
        endpoint = serverFromString(None, description)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot load the TLS certificate or key: {e}") from None
    except Exception as e:
        # pyOpenSSL raises its own Error types for malformed PEM files.
        raise ValueError(f"cannot load the TLS certificate or key: {e!r}") from None
    # Private Twisted API: see tests/test_twisted_canary.py. (Twisted keeps
    # the options an ssl: description parsed to private.)
    return ServerTLS(modernTLS(endpoint._sslContextFactory), protocols)


def modernTLS(options: Any) -> Any:
    """
    Restrict the options Twisted's C{ssl:} parser built to TLS 1.2 and later
    and Mozilla's "intermediate" cipher list (Twisted's default list still
    offers RSA key exchange and CBC suites).

    @param options: The L{CertificateOptions} built from the description.
    @return: Equivalent options with the modern protocol floor and ciphers;
        C{options} itself if it is not a L{CertificateOptions} or names its
        own C{sslmethod}.
    """
    if type(options) is not CertificateOptions or options.method != SSL.TLS_METHOD:
        return options
    return CertificateOptions(
        privateKey=options.privateKey,
        certificate=options.certificate,
        extraCertChain=options.extraCertChain or None,
        dhParameters=options.dhParameters,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(
            MOZILLA_INTERMEDIATE_CIPHERS
        ),
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )


#: The most plaintext one TLS record carries.
RECORD = 2**14
#: Encrypted bytes collected before they are handed to the socket within one
#: application write (so that a very large write is not held whole).
FLUSH_EVERY = 2**18
#: Bytes a TLS record adds to its plaintext, at most (header, tag, padding,
#: with room to spare); and room for handshake messages or a session ticket
#: in the same read.
OVERHEAD = 64
HANDSHAKE = 2**12


class RecordBatchingTLS(BufferingTLSTransport):
    """
    Twisted's TLS transport, but each application write becomes one socket
    write, not one per 16 KiB record.

    netd goes around Twisted's C{TLSMemoryBIOProtocol._write} for speed:
    it reads the records out of OpenSSL's memory BIO and writes them to the
    socket after each C{SSL_write} of 16 KiB, so a 64 KiB write (an HTTP/2
    or HTTP/1.1 file chunk) costs four socket sends and four trips through
    Python; over loopback that was about a quarter of netd's CPU per MiB
    (bench/RESULTS.md, HTTP/2 1 MiB: 1.4-1.6 ms per MiB before, 1.0-1.2
    after). Everything else, the handshake, buffering while OpenSSL wants
    to read, errors and shutdown, is Twisted's (C{tests.test_tls}
    L{RecordBatchingTests}; the private names it uses are in
    C{tests.test_twisted_canary}), except one fix: the writes Twisted holds
    are sent before the peer's C{close_notify} is answered (see the module
    docstring, L{_shutdownTLS}).
    """

    def _shutdownTLS(self) -> None:
        """
        Send the writes held for the next reactor turn, then answer (or
        start) the TLS shutdown.
        """
        # Private Twisted API (canary: tests.test_tls.FlushOnCloseNotifyTests):
        # what the transport calls for the peer's close_notify (and for its
        # own close, which already flushed); _aggregator holds the writes.
        self._aggregator.flush()
        super()._shutdownTLS()

    def _write(self, bytes: bytes) -> None:
        """
        Encrypt all of C{bytes}, one record at a time as OpenSSL takes them,
        and write the records to the transport together.

        @param bytes: Application bytes (Twisted's parameter name).
        """
        if self._lostTLSConnection:
            return
        view = memoryview(bytes)
        size = len(view)
        sent = flushed = 0
        send = self._tlsConnection.send
        while sent < size:
            try:
                sent += send(view[sent : sent + RECORD])
            except SSL.WantReadError:
                self._flushSendBIO(sent - flushed)
                self._bufferedWrite(view[sent:].tobytes())
                return
            except SSL.Error:
                self._flushSendBIO(sent - flushed)
                self._tlsShutdownFinished(Failure())
                return
            if sent - flushed >= FLUSH_EVERY:
                self._flushSendBIO(sent - flushed)
                flushed = sent
        self._flushSendBIO(sent - flushed)

    def _flushSendBIO(self, plaintext: int = 0) -> None:
        """
        Write everything waiting in OpenSSL's send BIO, in one write.

        @param plaintext: How many application bytes were encrypted since
            the last flush: the BIO is read in one call sized for their
            records (pyOpenSSL allocates, and zeroes, the size asked for
            each call), then again only while calls come back full.
        """
        read = self._tlsConnection.bio_read
        want = plaintext + OVERHEAD * (plaintext // RECORD + 2) + HANDSHAKE
        chunks = []
        while True:
            try:
                chunk = read(want)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < want:
                break
        if chunks:
            transport = self.transport
            assert transport is not None
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))


class TLSFactory(TLSMemoryBIOFactory):
    """
    L{TLSMemoryBIOFactory} building L{RecordBatchingTLS} connections.
    """

    protocol = RecordBatchingTLS


def tlsServerFactory(
    contextFactory: IOpenSSLServerConnectionCreator,
    wrapped: IProtocolFactory,
    clock: IReactorTime | None = None,
) -> TLSFactory:
    """
    @param contextFactory: The listener's TLS settings (L{sslContextFactory}).
    @param wrapped: The factory of the connections inside TLS.
    @param clock: When held writes are sent (L{None}: the global reactor,
        as Twisted's default).
    @return: The server-side TLS factory of an C{ssl:} listener.
    """
    factory = TLSFactory(contextFactory, False, wrapped, clock)
    factory.noisy = False
    return factory
