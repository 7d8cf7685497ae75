# -*- test-case-name: tests.test_chat_web -*-
"""
The chat service in a browser: a page and a WebSocket, as a
L{twisted.web.resource.Resource} an http service mounts at a path (say
C{/chat/}).

  - C{""} (the mount path itself): a single page, HTML with its script and
    style inline, no external assets, so it works offline. It shows every
    line the server sends as text (never as HTML) and sends what is typed.
  - C{"ws"}: a L{WebSocketResource}; each text message is one line for a
    L{ChatSession}, in the same rooms as the TCP and UDP clients.

The WebSocket gets the same protections as a TCP client: C{max_sessions}
and C{max_sessions_per_peer} (counted with the service's other clients),
the idle timeout, C{max_line_length} (a message longer than that is
refused; a client that sends far more without ever completing a message is
disconnected), flood control and the output bound. By default a browser may
only open it from a page of the same origin (C{web_check_origin}).
"""

from __future__ import annotations

import base64
import hashlib
from typing import cast
from urllib.parse import urlsplit

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.util import redirectTo
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from wsproto.utilities import LocalProtocolError
from zope.interface import implementer

from netd.chat.commands import ChatServer, ChatSession, IChatFrontEnd
from netd.chat.hub import EventBatch
from netd.chat.tcp import OutputGate
from netd.sessions import IStreamTransport, describeEnd, describePeer

STYLE = """
html, body { margin: 0; height: 100%; font: 15px/1.4 system-ui, sans-serif; }
body { display: flex; flex-direction: column; background: #fafafa; color: #222; }
header { padding: .4em .8em; background: #234; color: #fff; }
#status { float: right; opacity: .8; }
#log { flex: 1; overflow-y: auto; padding: .5em .8em; margin: 0;
  font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-word; }
#log .notice { color: #667; }
#log .private { color: #a14; }
form { display: flex; padding: .5em; gap: .5em; border-top: 1px solid #ccc; }
#input { flex: 1; font: inherit; padding: .3em; }
""".strip()

SCRIPT = """
"use strict";
const log = document.getElementById("log");
const input = document.getElementById("input");
const status = document.getElementById("status");
const url = new URL("ws", location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
let socket = null;
function show(text) {
  const line = document.createElement("div");
  line.textContent = text;
  if (text.startsWith("***")) line.className = "notice";
  else if (text.startsWith("*") && !text.startsWith("* ")) line.className = "private";
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.appendChild(line);
  while (log.childElementCount > 2000) log.removeChild(log.firstElementChild);
  if (atBottom) log.scrollTop = log.scrollHeight;
}
function connect() {
  status.textContent = "connecting";
  socket = new WebSocket(url);
  socket.onopen = () => { status.textContent = "connected"; input.focus(); };
  socket.onmessage = (event) => show(String(event.data));
  socket.onclose = () => { status.textContent = "disconnected"; show("*** disconnected (reload to reconnect)"); };
}
document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket && socket.readyState === WebSocket.OPEN && input.value) {
    socket.send(input.value);
    input.value = "";
  }
});
connect();
""".strip()


def _hash(source: str) -> str:
    """
    @param source: An inline script or style.
    @return: Its CSP source expression, C{'sha256-...'}.
    """
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def page(title: str, maxLineLength: int) -> bytes:
    """
    The single-page client.

    @param title: The page title (the service name).
    @param maxLineLength: The longest line the server accepts.
    @return: The HTML.
    """
    from html import escape

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<header><span id="status">loading</span><strong>{escape(title)}</strong></header>
<div id="log" role="log" aria-live="polite"></div>
<form id="form" autocomplete="off">
<input id="input" maxlength="{maxLineLength}" placeholder="type a nickname, a message or /help" autofocus>
<button type="submit">Send</button>
</form>
<script>{SCRIPT}</script>
</body>
</html>
""".encode("utf-8")


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class ChatPage(Resource):
    """
    Serves the single-page client.
    """

    isLeaf = True

    def __init__(self, server: ChatServer) -> None:
        super().__init__()
        self._body = page(f"netd chat: {server.name}", server.settings.maxLineLength)

    def render_GET(self, request: Request) -> bytes:
        """
        @param request: The request.
        @return: The page.
        """
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cache-control", b"no-cache")
        return self._body

    def render_HEAD(self, request: Request) -> bytes:
        """
        @param request: The request.
        @return: The page (twisted.web sends only its headers).
        """
        return self.render_GET(request)


@implementer(IChatFrontEnd)
class ChatWebSocket:
    """
    One browser (or any WebSocket client) in the chat.

    @ivar server: The chat service.
    @ivar request: The upgraded HTTP request.
    @ivar host: The peer's address, as admitted by the policy.
    @ivar session: Its L{ChatSession}.
    @ivar gate: Tracks the TCP transport's write buffer.
    @ivar activity: Messages in and out so far (for the idle timeout).
    """

    transport: WebSocketTransport | None = None
    activity = 0
    _idleCheck: IDelayedCall | None = None
    _idleLooks = 4

    def __init__(self, server: ChatServer, request: Request, host: str) -> None:
        self.server = server
        self.request = request
        self.host = host
        self.gate = OutputGate()
        settings = server.settings
        self._maxLine = settings.maxLineLength
        self._maxPending = settings.maxPendingOutput
        # Bytes a client may send without completing a message: room for a
        # message of max_line_length characters of up to 4 bytes each (the
        # page limits characters, not bytes; longer ones are refused with a
        # notice once complete), plus framing and control frames.
        self._maxPartial = 4 * settings.maxLineLength + 4096
        self._partial = 0
        self._delivered = False
        self._closed = False
        self._released = False
        peer = _connection(request).getPeer()
        self.session = ChatSession(server, self, describePeer(peer), "ws", echo=True)

    # WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        """
        The HTTP connection now carries this WebSocket: watch its input and
        its write buffer, and take over its timeout.

        @param transport: The WebSocket transport.
        """
        self.transport = transport
        channel = self.request.channel
        # The HTTP channel's own timeout is not reset by WebSocket traffic;
        # this protocol keeps the chat service's idle timeout instead.
        channel.setTimeout(None)
        # twisted.web hands the upgraded connection's bytes to the WebSocket
        # parser by replacing the channel's dataReceived; wrap it to bound
        # how much a client may send without completing a message.
        self._parse = channel.dataReceived
        channel.dataReceived = self._rawDataReceived  # type: ignore[method-assign]  # as twisted.web's own upgrade does
        # The HTTP channel registered itself as its transport's producer (to
        # stop reading while a response is pending); it handles no more
        # requests, so the output gate takes its place.
        try:
            _connection(self.request).unregisterProducer()
        except RuntimeError:
            pass  # none was registered
        transport.attachProducer(self.gate)

    def negotiationFinished(self) -> None:
        """
        The WebSocket is open: greet the client.
        """
        if self.server.idleTimeout:
            self._lastActivity = -1
            self._quietLooks = 0
            self._checkIdle()
        self.session.start()

    def _rawDataReceived(self, data: bytes) -> None:
        """
        Bytes from the client, before the WebSocket parser.

        @param data: The bytes.
        """
        if self._closed:
            return
        self.activity += 1
        self._delivered = False
        self._parse(data)
        if self._delivered:
            self._partial = 0
        else:
            self._partial += len(data)
            if self._partial > self._maxPartial:
                self.session.kick("message too long", abort=True)
                return
        if self.gate.paused:
            # A client that sends (pings, say) while not reading what it is
            # sent makes output pile up: count it against the bound.
            self.gate.pending += len(data)
            if self.gate.pending > self._maxPending:
                self._tooSlow()

    def textMessageReceived(self, message: str) -> None:
        """
        One line from the client.

        @param message: The text.
        """
        self._delivered = True
        self._partial = 0
        self._line(message.encode("utf-8", "replace"))

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        """
        One line from the client, as bytes (decoded as UTF-8).

        @param data: The bytes.
        """
        self._delivered = True
        self._partial = 0
        self._line(bytes(data))

    def _line(self, line: bytes) -> None:
        """
        Hand one message to the session as a line.

        @param line: The message.
        """
        if self._closed:
            return
        if line[-1:] == b"\n":
            line = line[:-1]
            if line[-1:] == b"\r":
                line = line[:-1]
        if len(line) > self._maxLine:
            self.session.lineTooLong()
        else:
            self.session.lineReceived(line)

    def pongReceived(self, payload: bytes) -> None:
        """
        Pongs are ignored.

        @param payload: The pong's payload.
        """

    def connectionLost(self, reason: Failure) -> None:
        """
        The WebSocket is gone.

        @param reason: Why.
        """
        self._closed = True
        self._stopIdleCheck()
        why = describeEnd(reason)
        self.session.end(
            "connection closed" if why == "closed" else f"connection {why}"
        )
        self._release()

    def _release(self) -> None:
        """
        Give the admission back to the policy (once).
        """
        if not self._released:
            self._released = True
            if self.server.policy is not None:
                self.server.policy.release(self.host)

    def _checkIdle(self) -> None:
        """
        Look at the activity count every quarter of the idle timeout, the
        way L{netd.sessions.Session} does; disconnect after four quiet looks
        in a row.
        """
        self._idleCheck = None
        if self.activity != self._lastActivity:
            self._lastActivity = self.activity
            self._quietLooks = 0
        else:
            self._quietLooks += 1
            if self._quietLooks >= self._idleLooks:
                self.session.kick("idle timeout")
                return
        self._idleCheck = self.server.clock.callLater(
            self.server.idleTimeout / self._idleLooks, self._checkIdle
        )

    def _stopIdleCheck(self) -> None:
        """
        Cancel the idle check.
        """
        if self._idleCheck is not None and self._idleCheck.active():
            self._idleCheck.cancel()
        self._idleCheck = None

    # IChatFrontEnd

    def writeBatch(self, batch: EventBatch) -> None:
        """
        Send each event's line as a text message.

        @param batch: The events.
        """
        for event in batch.events:
            self._send(event.line)

    def writeNotice(self, text: str) -> None:
        """
        Send a line from the server as a text message.

        @param text: The line.
        """
        self._send(text)

    def _send(self, text: str) -> None:
        """
        Send a text message, within the output bound.

        @param text: The message.
        """
        if self._closed or self.transport is None:
            return
        gate = self.gate
        if gate.paused:
            gate.pending += len(text) + 4
            if gate.pending > self._maxPending:
                self._tooSlow()
                return
        self.activity += 1
        try:
            self.transport.sendTextMessage(text)
        except LocalProtocolError:
            # The WebSocket is closing (a Close frame went either way) but
            # the connection is not lost yet; Twisted's WebSocket protocol
            # is not told of that, and wsproto refuses to send more. So is
            # everything after it.
            self._closed = True

    def _tooSlow(self) -> None:
        """
        Disconnect a client that does not read what it is sent.
        """
        self.session.kick(
            f"too slow: more than {self._maxPending} bytes of output pending",
            abort=True,
        )

    def disconnect(self, abort: bool) -> None:
        """
        Close the WebSocket.

        @param abort: Drop the TCP connection now, pending output and all.
        """
        if self._closed:
            return
        self._closed = True
        self._stopIdleCheck()
        if abort:
            _connection(self.request).abortConnection()
        elif self.transport is not None:
            self.transport.loseConnection(1000)


class ChatWebSocketResource(WebSocketResource):
    """
    The WebSocket endpoint: admits the client (origin, session limits)
    before the upgrade.

    @ivar chatServer: The chat service (not C{server}: L{Resource} has a
        C{server} attribute of its own).
    """

    def __init__(self, server: ChatServer) -> None:
        super().__init__(self)
        self.chatServer = server

    def buildProtocol(self, request: Request) -> ChatWebSocket:
        """
        The L{WebSocketServerFactory} method: one protocol per upgrade.

        @param request: The request being upgraded.
        @return: A L{ChatWebSocket}.
        """
        return ChatWebSocket(self.chatServer, request, _clientHost(request))

    def render_GET(self, request: Request) -> bytes | int:
        """
        Check the origin and the session limits, then upgrade.

        @param request: The request.
        @return: The upgrade (C{NOT_DONE_YET}) or an error page.
        """
        if self.chatServer.settings.webCheckOrigin and not sameOrigin(request):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"cross-origin WebSocket refused\n"
        host = _clientHost(request)
        policy = self.chatServer.policy
        if policy is not None and not policy.admit(host):
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"too many chat clients\n"
        result = super().render_GET(request)
        if isinstance(result, bytes) and policy is not None:
            # The handshake failed: no protocol will release the admission.
            policy.release(host)
        return result


def _connection(request: Request) -> IStreamTransport:
    """
    The connection under a request's HTTP channel.

    @param request: A request still being handled, so connected.
    @return: Its L{netd.sessions.Session}, or the TLS protocol around one.
    """
    transport = request.channel.transport
    assert transport is not None, "the request's channel is not connected"
    return cast(IStreamTransport, transport)


def _clientHost(request: Request) -> str:
    """
    @param request: A request.
    @return: The key its client is counted under by the session policy.
    """
    return getattr(request.getClientAddress(), "host", None) or "unix"


def sameOrigin(request: Request) -> bool:
    """
    Whether a WebSocket upgrade comes from a page of the server's own origin.

    Clients that send no C{Origin} (anything but a browser) pass.

    @param request: The upgrade request.
    @return: C{True} if there is no C{Origin} header or its host and port
        are the request's C{Host}.
    """
    rawOrigin = request.getHeader(b"origin")
    if rawOrigin is None:
        return True
    rawHost = request.getHeader(b"host")
    if rawHost is None:
        return False
    origin = rawOrigin.decode("latin-1") if isinstance(rawOrigin, bytes) else rawOrigin
    host = rawHost.decode("latin-1") if isinstance(rawHost, bytes) else rawHost
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    default = "443" if parts.scheme == "https" else "80"
    return _normalHost(parts.netloc, default) == _normalHost(host, default)


def _normalHost(netloc: str, defaultPort: str) -> str:
    """
    @param netloc: C{host[:port]}.
    @param defaultPort: The port meant when none is given.
    @return: C{host:port}, lower case.
    """
    netloc = netloc.lower()
    if netloc.endswith("]") or ":" not in netloc.rsplit("]", 1)[-1]:
        return f"{netloc}:{defaultPort}"
    return netloc


class ChatWebResource(Resource):
    """
    What an http service mounts: the page at C{""}, the WebSocket at
    C{"ws"}. Requested without its trailing slash, it redirects to it (so
    that the page's relative C{ws} URL resolves).

    @ivar chatServer: The chat service (not C{server}: L{Resource} has a
        C{server} attribute of its own).
    """

    def __init__(self, server: ChatServer) -> None:
        super().__init__()
        self.chatServer = server
        self.putChild(b"", ChatPage(server))
        self.putChild(b"ws", ChatWebSocketResource(server))

    def render_GET(self, request: Request) -> bytes:
        """
        Redirect C{/chat} to C{/chat/}.

        @param request: The request.
        @return: The redirect page.
        """
        return redirectTo(request.uri.split(b"?", 1)[0] + b"/", request)
