# -*- test-case-name: tests.test_probe -*-
"""
The self-test: C{twistd netd --check --probe}.

For every configured listener, connect over loopback and check that it
behaves like its service type: echo sends back what it got (TCP and UDP),
discard swallows, http answers C{200}, chat greets. The result is one line
per listener and exit status 0, or 69 (EX_UNAVAILABLE) with the failing
listeners named, so it can run as C{ExecStartPost=} or as a health check.

A service type brings its own check as L{ServiceType.probe
<netd.servicetype.ServiceType.probe>}: a callable taking a L{ProbeTarget}
and returning a few words on success, or raising L{ProbeFailed} (or
L{ProbeSkipped} for a listener it cannot check), defined in the type's own
module with the helpers here. Types without one get a plain connect.

Probes are short-lived clients run before any reactor, so they use
blocking sockets with timeouts: each one is a few lines, and a type can use
any stdlib client (C{http.client}, ...).
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from attrs import frozen

if TYPE_CHECKING:
    from netd.config import NetdConfig, ServiceConfig
    from netd.descriptions import Listener

DEFAULT_TIMEOUT = 3.0
# How long silence must last to count as "nothing came back".
QUIET = 0.3


class ProbeFailed(Exception):
    """
    A listener does not behave as its service type should.
    """


class ProbeSkipped(Exception):
    """
    A probe cannot check this listener (e.g. a stream-only probe given a
    datagram listener).
    """


def streamOnly(target: ProbeTarget) -> None:
    """
    @param target: The listener.
    @raise ProbeSkipped: If it is a datagram one.
    """
    if target.transport == "datagram":
        raise ProbeSkipped(f"no datagram probe for {target.service.type}")


@frozen
class ProbeTarget:
    """
    One listener to probe, and how to reach it from this host.

    @ivar service: The service's configuration.
    @ivar listener: The listener.
    @ivar family: C{AF_INET}, C{AF_INET6} or C{AF_UNIX}.
    @ivar address: C{(host, port)} or a UNIX socket path.
    @ivar tls: Whether to speak TLS (an C{ssl:} listener).
    @ivar timeout: Seconds any one step may take.
    """

    service: ServiceConfig
    listener: Listener
    family: int
    address: Any
    tls: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @property
    def transport(self) -> str:
        """
        C{"stream"} or C{"datagram"}.
        """
        return self.listener.transport

    def connect(self) -> socket.socket:
        """
        Open a stream connection (through TLS for an C{ssl:} listener,
        offering ALPN C{h2,http/1.1} as a browser does; the certificate is not
        verified: this is netd checking itself).

        @return: The connected socket.
        @raise ProbeFailed: If it cannot connect.
        """
        skt = socket.socket(self.family, socket.SOCK_STREAM)
        skt.settimeout(self.timeout)
        try:
            skt.connect(self.address)
            if self.tls:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                # Offer ALPN as browsers and curl do: a server that mishandles
                # it (issue 12) must fail the probe, not only real clients.
                context.set_alpn_protocols(["h2", "http/1.1"])
                skt = context.wrap_socket(skt)
        except (OSError, ssl.SSLError) as e:
            skt.close()
            raise ProbeFailed(f"cannot connect: {why(e)}") from None
        return skt

    def datagramSocket(self) -> socket.socket:
        """
        @return: A UDP socket connected to the listener, on an ephemeral
            (unprivileged) port of the loopback address.
        """
        skt = socket.socket(self.family, socket.SOCK_DGRAM)
        skt.settimeout(self.timeout)
        skt.connect(self.address)
        return skt

    def askDatagram(self, payload: bytes, attempts: int = 3) -> bytes:
        """
        Send a datagram until one comes back (UDP is lossy), within
        L{timeout} in all.

        @param payload: What to send.
        @param attempts: How many times to send it.
        @return: The first datagram received.
        @raise ProbeFailed: If none comes, or the socket fails.
        """
        with self.datagramSocket() as skt:
            skt.settimeout(self.timeout / attempts)
            for attempt in range(attempts):
                try:
                    skt.send(payload)
                    return skt.recv(65535)
                except socket.timeout:
                    continue
                except OSError as e:
                    raise ProbeFailed(f"no reply: {why(e)}") from None
        raise ProbeFailed(
            f"no reply to {attempts} datagrams within {self.timeout:g}s (are "
            "127.0.0.1/::1 allowed, and the reply guard's limits above "
            f"{attempts} datagrams?)"
        )


def why(error: BaseException) -> str:
    """
    @param error: A socket error.
    @return: A few words.
    """
    if isinstance(error, socket.timeout):
        return "timed out"
    strerror = getattr(error, "strerror", None)
    return (strerror or str(error) or type(error).__name__).lower()


def receiveExactly(skt: socket.socket, count: int) -> bytes:
    """
    @param skt: A connected stream socket.
    @param count: How many bytes to read.
    @return: What came, possibly less if the stream ended.
    """
    chunks: list[bytes] = []
    got = 0
    while got < count:
        chunk = skt.recv(count - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def silent(skt: socket.socket) -> bytes | None:
    """
    Wait briefly for anything to arrive.

    @param skt: A socket.
    @return: L{None} if nothing arrived, else what did (C{b""}: the stream
        ended).
    """
    skt.settimeout(QUIET)
    try:
        return skt.recv(4096)
    except (socket.timeout, BlockingIOError):
        return None


def connectProbe(target: ProbeTarget) -> str:
    """
    Any stream service: a connection is accepted.

    @param target: The listener.
    @return: What was checked.
    @raise ProbeFailed: If it is not.
    """
    streamOnly(target)
    target.connect().close()
    return "accepted a connection"


def targetFor(
    service: ServiceConfig, listener: Listener, timeout: float = DEFAULT_TIMEOUT
) -> ProbeTarget | str:
    """
    Work out how to reach a listener over loopback.

    @param service: The service.
    @param listener: One of its listeners.
    @param timeout: Seconds any one step may take.
    @return: The target, or why it cannot be probed.
    """
    kind = listener.kind
    if kind == "systemd":
        return "passed by systemd: its address is known only to the socket unit"
    if kind == "unix":
        path = listener.description.split(":", 1)[1].split(":", 1)[0]
        return ProbeTarget(service, listener, socket.AF_UNIX, path, False, timeout)
    if not listener.port:
        return "ephemeral port (port 0): its number is known only to the process"
    host = listener.interface or "0.0.0.0"
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return ProbeTarget(
        service, listener, family, (host, listener.port), kind == "ssl", timeout
    )


def probeFor(service: ServiceConfig) -> Callable[[ProbeTarget], str]:
    """
    @param service: A service.
    @return: The probe its type declares, or a plain connect.
    """
    return service.serviceType.probe or connectProbe


def probeConfig(
    config: NetdConfig, out: TextIO, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """
    Probe every listener of a configuration, writing one line each.

    @param config: The configuration (of the running netd).
    @param out: Where the report goes.
    @param timeout: Seconds any one step may take.
    @return: How many listeners failed.
    """
    passed = failed = skipped = 0
    for service in config.services:
        probe = probeFor(service)
        for listener in service.listeners:
            name = f"{service.name} on {listener.description}"
            target = targetFor(service, listener, timeout)
            if isinstance(target, str):
                skipped += 1
                out.write(f"netd: probe skipped {name}: {target}\n")
                continue
            try:
                result = probe(target)
            except ProbeSkipped as e:
                skipped += 1
                out.write(f"netd: probe skipped {name}: {e}\n")
            except ProbeFailed as e:
                failed += 1
                out.write(f"netd: probe FAILED {name}: {e}\n")
            except OSError as e:
                failed += 1
                out.write(f"netd: probe FAILED {name}: {why(e)}\n")
            else:
                passed += 1
                out.write(f"netd: probe ok {name}: {result}\n")
    out.write(f"netd: probe: {passed} ok, {failed} failed, {skipped} skipped\n")
    return failed
