# -*- test-case-name: tests.test_chat -*-
"""
What a chat client may say and do, whichever front end carries its lines.

L{ChatServer} is the state one chat service instance shares: its settings,
its hub and its log. L{ChatSession} is one client: its nickname and room,
its flood control, the commands, and the notices it gets. A front end (TCP
line protocol, UDP source, WebSocket) turns its transport into lines for
L{ChatSession.lineReceived} and implements L{IChatFrontEnd} to carry what
the session says back; the session is the L{IChatMember} the hub sees.

Commands::

    /nick NAME        pick or change your nickname
    /join ROOM        join ROOM (created on demand), leaving your room
    /part             leave your room
    /rooms            list the rooms
    /who [ROOM]       list the people in your room (or ROOM)
    /msg NICK TEXT    a private message
    /me ACTION        an action (* nick waves)
    /help             this list
    /quit [REASON]    disconnect

A line starting with C{//} is a message starting with C{/}. Before the
client has a nickname, a line that is not a command is taken as one.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from netd.chat.hub import (
    ACTION,
    JOIN,
    MESSAGE,
    NICK,
    PART,
    PRIVATE,
    ChatEvent,
    EventBatch,
    IChatHub,
    IChatMember,
    LocalHub,
)
from netd.chat.text import checkName, decode, nameKey, sanitise

#: Lines a session holds while a command waits for a (remote) hub.
MAX_QUEUED_LINES = 64

HELP = (
    "commands:",
    "  /nick NAME        pick or change your nickname",
    "  /join ROOM        join ROOM (created on demand), leaving your room",
    "  /part             leave your room",
    "  /rooms            list the rooms",
    "  /who [ROOM]       list the people in your room (or ROOM)",
    "  /msg NICK TEXT    send a private message",
    "  /me ACTION        say what you do (* nick waves)",
    "  /help             this list",
    "  /quit [REASON]    disconnect",
    "anything else goes to your room; start a line with // to send one starting with /",
)


@frozen
class ChatSettings:
    """
    The settings of a chat service (see L{netd.services.chat} for the keys).

    @ivar greeting: The first line a client gets.
    @ivar defaultRoom: The room a client joins once it has a nickname
        (C{""}: none).
    @ivar historyLines: Lines of a room replayed on join (0: none).
    @ivar maxRooms: Most rooms kept at once.
    @ivar maxLineLength: Longest line accepted, in bytes, without its line
        ending.
    @ivar maxNickLength: Longest nickname, in characters.
    @ivar maxRoomLength: Longest room name, in characters.
    @ivar floodLinesPerSecond: Sustained lines per second from one client.
    @ivar floodLinesBurst: Lines one client may send back to back.
    @ivar floodBytesPerSecond: Sustained bytes per second from one client.
    @ivar floodBytesBurst: Bytes one client may send back to back (never
        less than one longest line).
    @ivar maxRefusals: Refused lines in a row (too long, or over the flood
        limits) before a client is disconnected.
    @ivar maxPendingOutput: Bytes that may wait for a client that does not
        read, beyond the transport's own buffer, before it is disconnected.
    @ivar udpMemberTimeout: Seconds of silence after which a UDP member
        leaves.
    @ivar udpCreditLimit: Most bytes a UDP source may have banked (sent to
        netd and not yet had back).
    @ivar logMessages: Whether message text is logged.
    @ivar webCheckOrigin: Whether a browser's WebSocket must come from a
        page of the same origin.
    @ivar hub: Where the rooms are: C{""} in this process, or a Redis URL
        (L{netd.chat.redishub}).
    @ivar hubPrefix: The first part of every Redis key.
    @ivar hubPasswordFile: The file holding the Redis password (C{""}: none).
    @ivar hubCaFile: For C{rediss://}: the certificate authorities to trust.
    @ivar hubLease: Seconds a node's nicknames and membership outlive it.
    @ivar hubTimeout: Seconds Redis may leave a command unanswered before the
        connection is dropped and made again.
    @ivar hubMaxDelay: Longest a message waits for Redis before local members
        get it anyway.
    @ivar hubBuffer: Most events kept for Redis while it is slow or down.
    @ivar hubStreamLength: Entries kept per room stream (about).
    @ivar hubRetryMax: Longest pause between reconnection attempts.
    """

    greeting: str = "Welcome to netd chat."
    defaultRoom: str = "lobby"
    historyLines: int = 20
    maxRooms: int = 256
    maxLineLength: int = 4096
    maxNickLength: int = 20
    maxRoomLength: int = 32
    floodLinesPerSecond: float = 5.0
    floodLinesBurst: int = 10
    floodBytesPerSecond: float = 4096.0
    floodBytesBurst: int = 16384
    maxRefusals: int = 10
    maxPendingOutput: int = 262144
    udpMemberTimeout: float = 600.0
    udpCreditLimit: int = 65536
    logMessages: bool = False
    webCheckOrigin: bool = True
    hub: str = ""
    hubPrefix: str = "netd"
    hubPasswordFile: str = ""
    hubCaFile: str = ""
    hubLease: float = 15.0
    hubTimeout: float = 5.0
    hubMaxDelay: float = 0.25
    hubBuffer: int = 10000
    hubStreamLength: int = 1000
    hubRetryMax: float = 10.0

    @classmethod
    def fromMapping(cls, values: Mapping[str, Any]) -> ChatSettings:
        """
        Build settings from converted TOML values (snake_case keys).

        @param values: The service's settings; absent keys take defaults.
        @return: The settings.
        """
        fields = {}
        for key, value in values.items():
            head, *rest = key.split("_")
            name = head + "".join(part.capitalize() for part in rest)
            fields[name] = value
        return cls(**fields)


_DROP_REASONS = (
    ("too slow", "slow_consumer"),
    ("flooding", "flood"),
    ("too many over-long lines", "too_long"),
    ("message too long", "too_long"),
    ("idle timeout", "idle_timeout"),
)


def dropReason(reason: str) -> str:
    """
    The short, fixed name of why a client was disconnected or a line
    refused, for metrics.

    @param reason: The reason as logged (e.g. C{"too slow: more than 65536
        bytes of output pending"}).
    @return: e.g. C{"slow_consumer"}, C{"flood"}, C{"too_long"},
        C{"idle_timeout"}, or C{"other"}.
    """
    for prefix, name in _DROP_REASONS:
        if reason.startswith(prefix):
            return name
    return "other"


class IChatFrontEnd(Interface):
    """
    What a L{ChatSession} needs from the transport that carries its client.
    """

    def writeBatch(batch: EventBatch) -> None:
        """
        Show events to the client (L{EventBatch.data}, or each event's
        L{ChatEvent.line}).

        @param batch: The events.
        """

    def writeNotice(text: str) -> None:
        """
        Show one line from the server to the client.

        @param text: The line, without a line ending.
        """

    def disconnect(abort: bool) -> None:
        """
        Close the client's connection (or forget a UDP source).

        @param abort: Drop pending output and close now (for a client that
            does not read), rather than after pending output is written.
        """


class ChatServer:
    """
    What one chat service instance shares between its clients.

    @ivar name: The service instance name (for log events).
    @ivar settings: Its settings.
    @ivar hub: The rooms.
    @ivar clock: An L{IReactorTime} provider.
    @ivar policy: The service's L{SessionPolicy<netd.policy.SessionPolicy>},
        for front ends that admit clients themselves (UDP, WebSocket); or
        L{None} to admit everyone.
    @ivar idleTimeout: Seconds of silence after which a front end that keeps
        its own timer (WebSocket) disconnects a client; 0 never.
    @ivar linesRefused: Lines refused since start, by L{dropReason}
        (C{"flood"}, C{"too_long"}).
    @ivar kicks: Clients disconnected by netd since start, by L{dropReason}
        (C{"slow_consumer"}, C{"flood"}, ...).
    """

    _log = Logger(namespace="netd.chat")

    def __init__(
        self,
        name: str,
        settings: ChatSettings,
        clock: Any,
        hub: IChatHub | None = None,
        policy: Any = None,
        idleTimeout: float = 0.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self.hub: IChatHub = (
            hub
            if hub is not None
            else LocalHub(clock, settings.historyLines, settings.maxRooms)
        )
        self.policy = policy
        self.idleTimeout = idleTimeout
        self.linesRefused: Counter[str] = Counter()
        self.kicks: Counter[str] = Counter()
        self._ids = itertools.count(1)
        # Random, not the object's address: processes on two hosts (or in two
        # containers) can have the same pid and the same addresses, and a
        # member id that clashed with a remote one would hide that member's
        # lines from the local one (EventBatch.without).
        self._prefix = f"{os.getpid()}.{os.urandom(6).hex()}."
        self._toFlush: list[Any] = []
        self._flushCall: Any = None

    def scheduleFlush(self, frontEnd: Any) -> None:
        """
        Have a front end's C{flush} called once the current reactor
        iteration's input has been handled.

        Stream front ends queue what they are sent and write it in one go
        per iteration: when many messages arrive at once (a busy room), each
        client costs one write per iteration instead of one per message.

        @param frontEnd: An object with a C{flush()} method; it asks again
            after each flush.
        """
        self._toFlush.append(frontEnd)
        if self._flushCall is None:
            self._flushCall = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Flush every front end that asked (including those that ask while
        this runs).
        """
        self._flushCall = None
        while self._toFlush:
            batch, self._toFlush = self._toFlush, []
            for frontEnd in batch:
                frontEnd.flush()

    def newMemberId(self) -> str:
        """
        @return: A member id unique across processes sharing a hub.
        """
        return self._prefix + str(next(self._ids))

    def log(self, level: str, format: str, **fields: Any) -> None:
        """
        Emit one structured chat event.

        @param level: C{"info"} or C{"warn"}.
        @param format: A PEP 3101 template over C{fields}.
        @param fields: The event's fields; C{service} is added.
        """
        getattr(self._log, level)(format, service=self.name, **fields)


@implementer(IChatMember)
class ChatSession:
    """
    One chat client.

    @ivar server: The chat service.
    @ivar frontEnd: Its transport, as an L{IChatFrontEnd}.
    @ivar peer: Its address, for logs.
    @ivar via: C{"tcp"}, C{"ssl"}, C{"udp"}, C{"ws"}..., for logs.
    @ivar echo: Whether it sees its own messages and actions (a terminal
        already shows what was typed; a web page wants them back).
    @ivar memberId: Its id in the hub.
    @ivar nick: Its nickname (display form), or L{None}.
    @ivar nickKey: Its nickname's key, or L{None}.
    @ivar room: The key of the room it is in, or L{None}.
    @ivar closed: Whether it has ended.
    @ivar refusals: Lines refused in a row.
    """

    def __init__(
        self,
        server: ChatServer,
        frontEnd: IChatFrontEnd,
        peer: str,
        via: str,
        echo: bool = False,
    ) -> None:
        self.server = server
        self.frontEnd = frontEnd
        self.peer = peer
        self.via = via
        self.echo = echo
        self.memberId = server.newMemberId()
        self.nick: str | None = None
        self.nickKey: str | None = None
        self.room: str | None = None
        self.closed = False
        self.refusals = 0
        settings = server.settings
        self._writeBatch: Callable[[EventBatch], None] = frontEnd.writeBatch
        self._clock = server.clock.seconds
        self._lineRate = settings.floodLinesPerSecond
        self._lineBurst = float(settings.floodLinesBurst)
        self._byteRate = settings.floodBytesPerSecond
        self._byteBurst = float(
            max(settings.floodBytesBurst, settings.maxLineLength + 2)
        )
        self._lineTokens = self._lineBurst
        self._byteTokens = self._byteBurst
        self._stamp = self._clock()
        self._busy: Deferred[Any] | None = None
        self._queue: deque[str] = deque()
        self._idle: list[Deferred[None]] = []

    # IChatMember

    def deliver(self, batch: EventBatch) -> None:
        """
        Show events, unless the session is over; without the client's own
        messages if it does not want those back.

        @param batch: The events.
        """
        if self.closed:
            return
        if not self.echo and self.memberId in batch.authors:
            batch = batch.without(self.memberId)
            if not batch.events:
                return
        self._writeBatch(batch)

    # Called by the front end

    def start(self) -> None:
        """
        Greet the client.
        """
        self.notice(self.server.settings.greeting)
        self.notice(
            "type a nickname (or /nick NAME) to start; /help lists the commands"
        )

    def notice(self, text: str) -> None:
        """
        Tell the client something, as C{*** text}.

        @param text: One line.
        """
        self.say("*** " + text)

    def say(self, line: str) -> None:
        """
        Write one line from the server to the client, after the room events
        published before it.

        @param line: The line.
        """
        if not self.closed:
            self.server.hub.settle()
            self.frontEnd.writeNotice(line)

    def lineTooLong(self) -> None:
        """
        The client sent a line longer than C{max_line_length}: refuse it.
        """
        if not self.closed:
            self._refuse(
                f"line refused: longer than {self.server.settings.maxLineLength} bytes",
                "too many over-long lines",
            )

    def lineReceived(self, line: bytes) -> None:
        """
        Handle one line from the client: flood control, then a command, a
        nickname or a message.

        @param line: The line, without its line ending, at most
            C{max_line_length} bytes (the front end refuses longer ones).
        """
        if self.closed:
            return
        now = self._clock()
        elapsed = now - self._stamp
        self._stamp = now
        lines = self._lineTokens + elapsed * self._lineRate
        if lines > self._lineBurst:
            lines = self._lineBurst
        size = len(line) + 1
        data = self._byteTokens + elapsed * self._byteRate
        if data > self._byteBurst:
            data = self._byteBurst
        if lines < 1.0 or data < size:
            self._lineTokens = lines
            self._byteTokens = data
            settings = self.server.settings
            self._refuse(
                f"line refused: flood limit ({settings.floodLinesPerSecond:g} lines "
                f"and {settings.floodBytesPerSecond:g} bytes a second)",
                "flooding",
            )
            return
        self._lineTokens = lines - 1.0
        self._byteTokens = data - size
        self.refusals = 0
        text = sanitise(decode(line)).rstrip()
        if not text:
            return
        if self._busy is not None:
            if len(self._queue) >= MAX_QUEUED_LINES:
                self.notice("line refused: too many lines waiting")
            else:
                self._queue.append(text)
            return
        self._run(text)

    def linesReceived(self, lines: list[bytes]) -> None:
        """
        Handle lines that arrived together, as L{lineReceived} would one by
        one, with flood control charged once for all of them.

        When the buckets hold enough tokens for every line, taking them at
        once is what taking them line by line would do (no time passes in
        between); then plain messages are published directly, and anything
        else (a command, a nickname, a line while the hub is busy) takes
        L{lineReceived}'s path after the flood check. Otherwise each line
        goes through L{lineReceived}, so that refusals are exactly the same.

        @param lines: The lines, each without its line ending and at most
            C{max_line_length} bytes.
        """
        if self.closed or not lines:
            return
        now = self._clock()
        elapsed = now - self._stamp
        tokens = self._lineTokens + elapsed * self._lineRate
        if tokens > self._lineBurst:
            tokens = self._lineBurst
        data = self._byteTokens + elapsed * self._byteRate
        if data > self._byteBurst:
            data = self._byteBurst
        count = len(lines)
        size = sum(map(len, lines)) + count
        if tokens < count or data < size:
            for line in lines:
                self.lineReceived(line)
                if self.closed:
                    return
            return
        self._stamp = now
        self._lineTokens = tokens - count
        self._byteTokens = data - size
        self.refusals = 0
        server = self.server
        hub = server.hub
        logMessages = server.settings.logMessages
        # Plain messages are gathered and published together; anything
        # else publishes what was gathered first, to keep the order.
        events: list[ChatEvent] = []
        for line in lines:
            # decode() and sanitise(), written out: this loop runs per line.
            text = line.decode("utf-8", "replace")
            if not text.isprintable():
                text = sanitise(text)
            text = text.rstrip()
            if not text:
                continue
            if (
                text[0] != "/"
                and self._busy is None
                and self.nick is not None
                and self.room is not None
            ):
                nick = self.nick
                event = ChatEvent(
                    MESSAGE,
                    "#" + self.room,
                    nick,
                    text,
                    self.memberId,
                    now,
                    f"<{nick}> {text}",
                )
                if logMessages:
                    self._logMessage(event)
                events.append(event)
                continue
            if events:
                assert self.room is not None
                hub.publishAll(self.room, events)
                events = []
            if self._busy is not None:
                if len(self._queue) >= MAX_QUEUED_LINES:
                    self.notice("line refused: too many lines waiting")
                else:
                    self._queue.append(text)
                continue
            self._run(text)
            if self.closed:
                return
        if events:
            assert self.room is not None
            hub.publishAll(self.room, events)

    def _run(self, text: str) -> None:
        """
        Handle a line now; if it waits for the hub, hold the following ones.

        @param text: The sanitised line.
        """
        try:
            d = self._handle(text)
        except Exception:
            self.server._log.failure("chat command {line!r} failed", line=text)
            return
        if d is not None and not d.called:
            self._busy = d
            d.addBoth(self._done)

    def _done(self, result: Any) -> None:
        """
        A command that waited for the hub completed: run the held lines.

        @param result: Its result, or a L{Failure}.
        """
        self._busy = None
        if isinstance(result, Failure):
            self.server._log.failure("chat command failed", failure=result)
        while self._queue and self._busy is None and not self.closed:
            self._run(self._queue.popleft())
        if self._busy is None:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires once no line is waiting for the hub
            (at once with L{LocalHub}).
        """
        if self._busy is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def end(self, reason: str) -> None:
        """
        The client is gone: leave the room, give the nickname up.

        @param reason: Why, for the part notice and the log.
        """
        if self.closed:
            return
        self.closed = True
        hub = self.server.hub
        if self.room is not None:
            self._part(reason)
        if self.nickKey is not None:
            hub.releaseNick(self, self.nickKey)
        self._queue.clear()

    def kick(self, reason: str, abort: bool = False) -> None:
        """
        Disconnect the client for misbehaving, and log why.

        @param reason: Why (e.g. C{"flooding"}).
        @param abort: Whether to drop pending output (for a client that does
            not read); otherwise the client is told why first.
        """
        if self.closed:
            return
        self.server.kicks[dropReason(reason)] += 1
        self.server.log(
            "warn",
            "{service}: disconnected {nick} ({peer}, {via}): {reason}",
            chatEvent="kick",
            nick=self.nick or "(no nickname)",
            peer=self.peer,
            via=self.via,
            reason=reason,
        )
        if not abort:
            self.notice(f"disconnected: {reason}")
        self.end(f"kicked: {reason}")
        self.frontEnd.disconnect(abort)

    # Internals

    def _refuse(self, notice: str, kickReason: str) -> None:
        """
        Refuse a line; tell the client the first time in a row; disconnect a
        client that keeps going.

        @param notice: What to tell the client.
        @param kickReason: Why it is disconnected if it keeps going.
        """
        self.refusals += 1
        self.server.linesRefused[dropReason(kickReason)] += 1
        if self.refusals > self.server.settings.maxRefusals:
            self.kick(kickReason)
        elif self.refusals == 1:
            self.notice(notice)

    def _handle(self, text: str) -> Deferred[Any] | None:
        """
        Handle a sanitised, non-empty line.

        @param text: The line.
        @return: A L{Deferred} if the command waits for the hub.
        """
        if text[0] == "/":
            if text[:2] != "//":
                return self._command(text)
            text = text[1:]
        if self.nick is None:
            return self._setNick(text.strip())
        if self.room is None:
            self.notice("you are in no room: /join ROOM")
            return None
        event = ChatEvent(
            MESSAGE, "#" + self.room, self.nick, text, self.memberId, self._clock()
        )
        if self.server.settings.logMessages:
            self._logMessage(event)
        self.server.hub.publish(self.room, event)
        return None

    def _command(self, text: str) -> Deferred[Any] | None:
        """
        Run a command line.

        @param text: The line, starting with C{/}.
        @return: A L{Deferred} if it waits for the hub.
        """
        name, _, rest = text[1:].partition(" ")
        name = name.lower()
        rest = rest.strip()
        method = _COMMANDS.get(name)
        if method is None:
            self.notice(f"unknown command /{name[:32]} (try /help)")
            return None
        if name in _NEED_NICK and self.nick is None:
            self.notice("pick a nickname first: /nick NAME")
            return None
        return method(self, rest)

    def _cmdNick(self, rest: str) -> Deferred[Any] | None:
        if not rest:
            self.notice(f"you are {self.nick}" if self.nick else "usage: /nick NAME")
            return None
        return self._setNick(rest)

    def _setNick(self, wanted: str) -> Deferred[Any] | None:
        """
        Validate and claim a nickname.

        @param wanted: The nickname as typed.
        @return: A L{Deferred} if it waits for the hub.
        """
        try:
            nick = checkName(wanted, self.server.settings.maxNickLength)
        except ValueError as e:
            self.notice(f"nickname refused: {e}")
            return None
        key = nameKey(nick)
        if key == self.nickKey:
            if nick != self.nick:
                self._renamed(nick, key)
            else:
                self.notice(f"you are already {nick}")
            return None
        return self.server.hub.claimNick(self, key).addCallback(
            self._claimed, nick, key
        )

    def _claimed(self, granted: bool, nick: str, key: str) -> Deferred[Any] | None:
        if self.closed:
            if granted:
                self.server.hub.releaseNick(self, key)
            return None
        if not granted:
            self.notice(f"nickname {nick} is taken")
            return None
        first = self.nick is None
        if not first:
            assert self.nickKey is not None
            self.server.hub.releaseNick(self, self.nickKey)
        self._renamed(nick, key)
        if first and self.server.settings.defaultRoom:
            return self._join(nameKey(self.server.settings.defaultRoom))
        return None

    def _renamed(self, nick: str, key: str) -> None:
        """
        Take a new nickname (already claimed) and tell everyone concerned.

        @param nick: The display form.
        @param key: Its key.
        """
        old = self.nick
        self.nick = nick
        self.nickKey = key
        self.notice(f"you are now known as {nick}")
        if old is None:
            self.server.log(
                "info",
                "{service}: {peer} ({via}) is now known as {nick}",
                chatEvent="nick",
                nick=nick,
                oldNick=None,
                peer=self.peer,
                via=self.via,
            )
            return
        self.server.log(
            "info",
            "{service}: {oldNick} is now known as {nick} ({peer}, {via})",
            chatEvent="nick",
            nick=nick,
            oldNick=old,
            peer=self.peer,
            via=self.via,
        )
        if self.room is not None:
            self.server.hub.publish(
                self.room,
                ChatEvent(
                    NICK, "#" + self.room, old, nick, self.memberId, self._clock()
                ),
            )

    def _cmdJoin(self, rest: str) -> Deferred[Any] | None:
        if not rest:
            self.notice("usage: /join ROOM")
            return None
        try:
            name = checkName(
                rest.removeprefix("#"), self.server.settings.maxRoomLength, "room name"
            )
        except ValueError as e:
            self.notice(f"cannot join: {e}")
            return None
        key = nameKey(name)
        if key == self.room:
            self.notice(f"you are already in #{key}")
            return None
        return self._join(key)

    def _join(self, room: str) -> Deferred[Any]:
        """
        Join a room (leaving the current one once in): replay its history,
        announce the client.

        @param room: The room's key.
        @return: A L{Deferred} that fires when it is done.
        """
        return self.server.hub.join(room, self).addCallback(self._joined, room)

    def _joined(self, history: Any, room: str) -> None:
        hub = self.server.hub
        if self.closed:
            hub.leave(room, self)
            return
        if history is None:
            self.notice(f"cannot join #{room}: too many rooms")
            return
        if self.room is not None:
            self._part("")
        self.room = room
        if history:
            self.notice(f"last {len(history)} messages in #{room}:")
            self._writeBatch(EventBatch(list(history)))
            self.notice("end of history")
        self.server.log(
            "info",
            "{service}: {nick} joined #{room} ({peer}, {via})",
            chatEvent="join",
            nick=self.nick,
            room=room,
            peer=self.peer,
            via=self.via,
        )
        hub.publish(
            room,
            ChatEvent(
                JOIN, "#" + room, self.nick or "", "", self.memberId, self._clock()
            ),
        )

    def _part(self, reason: str) -> None:
        """
        Leave the current room, announcing it there.

        @param reason: Why (C{""} for a plain /part).
        """
        room = self.room
        assert room is not None
        self.room = None
        hub = self.server.hub
        hub.publish(
            room,
            ChatEvent(
                PART, "#" + room, self.nick or "", reason, self.memberId, self._clock()
            ),
        )
        hub.leave(room, self)
        self.server.log(
            "info",
            "{service}: {nick} left #{room} ({peer}, {via}){why}",
            chatEvent="part",
            nick=self.nick,
            room=room,
            peer=self.peer,
            via=self.via,
            reason=reason or "part",
            why=f": {reason}" if reason else "",
        )

    def _cmdPart(self, rest: str) -> None:
        if self.room is None:
            self.notice("you are in no room")
            return
        room = self.room
        self._part("")
        self.notice(f"you left #{room}")

    def _cmdRooms(self, rest: str) -> Deferred[Any]:
        def show(rooms: Any) -> None:
            if not rooms:
                self.notice("no rooms yet: /join ROOM creates one")
                return
            listing = ", ".join(f"#{name} ({count})" for name, count in rooms)
            self.notice(f"rooms: {listing}")

        return self.server.hub.rooms().addCallback(show)

    def _cmdWho(self, rest: str) -> Deferred[Any] | None:
        if rest:
            try:
                room = nameKey(
                    checkName(
                        rest.removeprefix("#"),
                        self.server.settings.maxRoomLength,
                        "room name",
                    )
                )
            except ValueError as e:
                self.notice(f"/who: {e}")
                return None
        elif self.room is None:
            self.notice("you are in no room: /who ROOM")
            return None
        else:
            room = self.room

        def show(nicks: Any) -> None:
            if not nicks:
                self.notice(f"nobody is in #{room}")
                return
            self.notice(f"#{room} ({len(nicks)}): {', '.join(sorted(nicks))}")

        return self.server.hub.members(room).addCallback(show)

    def _cmdMsg(self, rest: str) -> Deferred[Any] | None:
        target, _, text = rest.partition(" ")
        text = text.strip()
        if not target or not text:
            self.notice("usage: /msg NICK TEXT")
            return None
        try:
            key = nameKey(checkName(target, self.server.settings.maxNickLength))
        except ValueError:
            self.notice(f"no such nickname: {target[:64]}")
            return None
        event = ChatEvent(
            PRIVATE, "", self.nick or "", text, self.memberId, self._clock()
        )

        def sent(found: bool) -> None:
            if not found:
                self.notice(f"no such nickname: {target}")
                return
            if self.server.settings.logMessages:
                self.server.log(
                    "info",
                    "{service}: {nick} -> {target}: {text}",
                    chatEvent="private",
                    nick=self.nick,
                    target=target,
                    text=text,
                    peer=self.peer,
                )
            if key != self.nickKey:
                self.say(f"-> *{target}* {text}")

        return self.server.hub.sendPrivate(key, event).addCallback(sent)

    def _cmdMe(self, rest: str) -> None:
        if not rest:
            self.notice("usage: /me ACTION")
            return
        if self.room is None:
            self.notice("you are in no room: /join ROOM")
            return
        event = ChatEvent(
            ACTION, "#" + self.room, self.nick or "", rest, self.memberId, self._clock()
        )
        if self.server.settings.logMessages:
            self._logMessage(event)
        self.server.hub.publish(self.room, event)

    def _cmdHelp(self, rest: str) -> None:
        for line in HELP:
            self.notice(line)

    def _cmdQuit(self, rest: str) -> None:
        self.notice("bye")
        self.end(f"quit: {rest}" if rest else "quit")
        self.frontEnd.disconnect(False)

    def _logMessage(self, event: ChatEvent) -> None:
        """
        Log a message or an action (only when C{log_messages} is set).

        @param event: The event.
        """
        self.server.log(
            "info",
            "{service}: {room} {line}",
            chatEvent=event.kind,
            room=event.room,
            nick=event.nick,
            text=event.text,
            line=event.line,
            peer=self.peer,
        )


_COMMANDS: dict[str, Callable[[ChatSession, str], Any]] = {
    "nick": ChatSession._cmdNick,
    "join": ChatSession._cmdJoin,
    "part": ChatSession._cmdPart,
    "leave": ChatSession._cmdPart,
    "rooms": ChatSession._cmdRooms,
    "list": ChatSession._cmdRooms,
    "who": ChatSession._cmdWho,
    "names": ChatSession._cmdWho,
    "msg": ChatSession._cmdMsg,
    "me": ChatSession._cmdMe,
    "help": ChatSession._cmdHelp,
    "quit": ChatSession._cmdQuit,
}

_NEED_NICK = frozenset({"join", "msg", "me"})
