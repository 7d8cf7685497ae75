# -*- test-case-name: tests.test_chat -*-
"""
The rooms of a chat service, behind a small interface.

L{IChatHub} is everything the front ends (TCP, UDP, WebSocket, through
L{netd.chat.commands}) may ask of the rooms: claim a nickname, join and
leave a room, publish to it, read its history, list rooms and members, and
send a private message. L{LocalHub} is the in-process default. A shared
backend (Redis pub/sub, say) implements the same interface to carry rooms
across worker processes and hosts; the front ends do not change.

The operations that would need a round trip to a shared backend return a
L{Deferred}; L{LocalHub}'s have already fired. L{IChatHub.publish} and
L{IChatHub.leave} are fire-and-forget.

A message travels as a L{ChatEvent}: plain fields that serialise as they
are, plus the rendered line, computed once. Members are handed
L{EventBatch}es: L{LocalHub} collects what is published to a room during
one reactor iteration and hands each member the whole batch at once, with
the lines already joined. Fan-out is the hot path of a chat server; this
way a busy room costs a few Python calls per member per iteration, not per
member per message.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import Attribute, Interface, implementer

#: Event kinds.
MESSAGE = "message"
ACTION = "action"
JOIN = "join"
PART = "part"
NICK = "nick"
PRIVATE = "private"

#: Kinds kept in a room's history.
HISTORY_KINDS = frozenset({MESSAGE, ACTION})


class ChatEvent:
    """
    Something that happened in a room, or a private message.

    @ivar kind: One of L{MESSAGE}, L{ACTION}, L{JOIN}, L{PART}, L{NICK},
        L{PRIVATE}.
    @ivar room: The room's display name (C{"#lobby"}), or C{""}.
    @ivar nick: Who did it.
    @ivar text: The message, the action, the new nickname or the reason
        (already sanitised).
    @ivar origin: The L{IChatMember.memberId} of the member it came from.
    @ivar time: When, in seconds since the epoch (the reactor's clock).
    @ivar line: How it reads, e.g. C{"<bob> hi"} (L{render}ed, unless the
        caller already did).
    @ivar data: C{line} as UTF-8 with C{"\\r\\n"}: what a line client gets.
    """

    __slots__ = ("kind", "room", "nick", "text", "origin", "time", "line", "data")

    def __init__(
        self,
        kind: str,
        room: str,
        nick: str,
        text: str,
        origin: str = "",
        time: float = 0.0,
        line: str | None = None,
    ) -> None:
        self.kind = kind
        self.room = room
        self.nick = nick
        self.text = text
        self.origin = origin
        self.time = time
        if line is None:
            line = render(kind, room, nick, text)
        self.line = line
        self.data = line.encode("utf-8") + b"\r\n"

    def __repr__(self) -> str:
        return f"<ChatEvent {self.kind} {self.room} {self.line!r}>"


class EventBatch:
    """
    Events handed to a member at once.

    @ivar events: The events, in order.
    @ivar authors: The L{IChatMember.memberId}s of the members whose own
        messages or actions are among them (a front end that does not show a
        client its own lines asks for L{without} them).
    """

    __slots__ = ("events", "authors", "_data")

    def __init__(self, events: Sequence[ChatEvent]) -> None:
        self.events = events
        self.authors = frozenset(
            event.origin for event in events if event.kind in HISTORY_KINDS
        )
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        """
        The events' lines, joined, each ending in C{\\r\\n} (computed once,
        shared by every member that gets the same batch).
        """
        data = self._data
        if data is None:
            events = self.events
            data = self._data = (
                events[0].data
                if len(events) == 1
                else b"".join(event.data for event in events)
            )
        return data

    def without(self, memberId: str) -> EventBatch:
        """
        @param memberId: A member.
        @return: The batch without that member's own messages and actions.
        """
        return EventBatch(
            [
                event
                for event in self.events
                if event.origin != memberId or event.kind not in HISTORY_KINDS
            ]
        )


def render(kind: str, room: str, nick: str, text: str) -> str:
    """
    The line a client sees for an event.

    @param kind: The event kind.
    @param room: The room.
    @param nick: Who.
    @param text: What.
    @return: One line, without a line ending.
    """
    if kind == MESSAGE:
        return f"<{nick}> {text}"
    if kind == ACTION:
        return f"* {nick} {text}"
    if kind == JOIN:
        return f"*** {nick} joined {room}"
    if kind == PART:
        return f"*** {nick} left {room}" + (f" ({text})" if text else "")
    if kind == NICK:
        return f"*** {nick} is now known as {text}"
    if kind == PRIVATE:
        return f"*{nick}* {text}"
    raise ValueError(f"unknown event kind {kind!r}")


class IChatMember(Interface):
    """
    A client, as the hub sees it.
    """

    memberId = Attribute("A string unique among the hub's members.")
    nick = Attribute("The member's nickname (display form), or None.")

    def deliver(batch: EventBatch) -> None:
        """
        Show events to the member. Never raises; a member that cannot keep
        up disconnects itself.

        @param batch: The events.
        """


class IChatHub(Interface):
    """
    The rooms of one chat service.
    """

    def claimNick(member: IChatMember, key: str) -> Deferred[bool]:
        """
        Reserve a nickname for a member.

        @param member: Who wants it.
        @param key: The nickname's comparison key (L{netd.chat.text.nameKey}).
        @return: A L{Deferred} firing with C{True} if it is now the member's
            (or already was), C{False} if someone else holds it.
        """

    def releaseNick(member: IChatMember, key: str) -> None:
        """
        Give a nickname up (if the member holds it).

        @param member: Its holder.
        @param key: Its key.
        """

    def join(room: str, member: IChatMember) -> Deferred[Sequence[ChatEvent] | None]:
        """
        Add a member to a room, creating the room if needed.

        @param room: The room's key (also its display name, without C{#}).
        @param member: Who joins.
        @return: A L{Deferred} firing with the room's recent history (oldest
            first), or with L{None} if the room cannot be created (too many
            rooms).
        """

    def leave(room: str, member: IChatMember) -> None:
        """
        Remove a member from a room.

        @param room: The room's key.
        @param member: Who leaves.
        """

    def publish(room: str, event: ChatEvent) -> None:
        """
        Deliver an event to every member of a room (the front ends decide
        whether its author sees it) and, for messages and actions, add it to
        the room's history. Delivery may be later (L{LocalHub}: at the end
        of the reactor iteration), in order, to whoever is a member then.

        @param room: The room's key.
        @param event: The event.
        """

    def publishAll(room: str, events: list[ChatEvent]) -> None:
        """
        L{publish} each of C{events}, in order (what a client sent in one
        chunk).

        @param room: The room's key.
        @param events: The events.
        """

    def settle() -> None:
        """
        Deliver now what this process has published and not yet delivered,
        if that is possible, so that a notice a front end is about to write
        comes after the events that caused it (a shared backend may do
        nothing). Does nothing while a delivery is under way.
        """

    def history(room: str) -> Deferred[Sequence[ChatEvent]]:
        """
        @param room: The room's key.
        @return: A L{Deferred} firing with its recent history, oldest first.
        """

    def rooms() -> Deferred[Sequence[tuple[str, int]]]:
        """
        @return: A L{Deferred} firing with C{(room, members)} pairs, for rooms
            that have members, by name.
        """

    def members(room: str) -> Deferred[Sequence[str]]:
        """
        @param room: The room's key.
        @return: A L{Deferred} firing with its members' nicknames.
        """

    def sendPrivate(key: str, event: ChatEvent) -> Deferred[bool]:
        """
        Deliver a private message to the holder of a nickname.

        @param key: The nickname's key.
        @param event: The L{PRIVATE} event.
        @return: A L{Deferred} firing with whether someone holds it.
        """


class _Room:
    """
    One room of a L{LocalHub}.

    @ivar members: Its members, in joining order.
    @ivar delivers: Their C{deliver} methods, as a tuple (rebuilt on join and
        leave, so that delivering neither copies nor trips over a member
        that leaves while being delivered to).
    @ivar history: Recent messages.
    @ivar pending: Events published since the last delivery, or L{None}.
    """

    __slots__ = ("members", "delivers", "history", "pending")

    def __init__(self, historyLines: int) -> None:
        self.members: dict[IChatMember, None] = {}
        self.delivers: tuple[Callable[[EventBatch], None], ...] = ()
        self.history: deque[ChatEvent] = deque(maxlen=historyLines)
        self.pending: list[ChatEvent] | None = None

    def changed(self) -> None:
        """
        Rebuild L{delivers} after a join or a leave.
        """
        self.delivers = tuple(member.deliver for member in self.members)


@implementer(IChatHub)
class LocalHub:
    """
    Rooms in this process's memory.

    Rooms are created on demand. A room nobody is in keeps its history
    until room L{maxRooms} is needed: then the empty room unused for the
    longest is forgotten; if every room has members, a new one cannot be
    created.

    What is published to a room is delivered once the current reactor
    iteration is done (a C{callLater(0)}), as one L{EventBatch} per room,
    and added to the room's history then.

    @ivar historyLines: Lines of history kept per room (0: none).
    @ivar maxRooms: Most rooms kept at once.
    @ivar clock: An L{IReactorTime} provider.
    @ivar published: Events delivered to rooms (messages, joins, parts,
        private messages) since start, counted once per event.
    @ivar delivered: Events handed to members since start, counted once per
        event and member (counted per batch, not per event).
    """

    published = 0
    delivered = 0

    def __init__(self, clock: Any, historyLines: int = 20, maxRooms: int = 256) -> None:
        self.clock = clock
        self.historyLines = historyLines
        self.maxRooms = maxRooms
        self._rooms: OrderedDict[str, _Room] = OrderedDict()
        self._nicks: dict[str, IChatMember] = {}
        self._busy: list[_Room] = []
        self._call: Any = None
        self._flushing = False

    def claimNick(self, member: IChatMember, key: str) -> Deferred[bool]:
        """
        See L{IChatHub.claimNick}.
        """
        holder = self._nicks.setdefault(key, member)
        return succeed(holder is member)

    def releaseNick(self, member: IChatMember, key: str) -> None:
        """
        See L{IChatHub.releaseNick}.
        """
        if self._nicks.get(key) is member:
            del self._nicks[key]

    def join(self, room: str, member: IChatMember) -> Deferred[Any]:
        """
        See L{IChatHub.join}.
        """
        # Membership changes are barriers: what was published before is
        # delivered to the members of before.
        self.settle()
        state = self._rooms.get(room)
        if state is None:
            if len(self._rooms) >= self.maxRooms and not self._evict():
                return succeed(None)
            state = self._rooms[room] = _Room(self.historyLines)
        else:
            self._rooms.move_to_end(room)
        history = list(state.history)
        state.members[member] = None
        state.changed()
        return succeed(history)

    def _evict(self) -> bool:
        """
        Forget the empty room unused for the longest.

        @return: Whether there was one.
        """
        for name, state in self._rooms.items():
            if not state.members:
                del self._rooms[name]
                return True
        return False

    def leave(self, room: str, member: IChatMember) -> None:
        """
        See L{IChatHub.leave}.
        """
        self.settle()
        state = self._rooms.get(room)
        if state is not None and member in state.members:
            del state.members[member]
            state.changed()
            self._rooms.move_to_end(room)

    def publish(self, room: str, event: ChatEvent) -> None:
        """
        See L{IChatHub.publish}.
        """
        self.publishAll(room, [event])

    def publishAll(self, room: str, events: list[ChatEvent]) -> None:
        """
        See L{IChatHub.publishAll}.
        """
        state = self._rooms.get(room)
        if state is None:
            return
        pending = state.pending
        if pending is None:
            state.pending = list(events)
            self._busy.append(state)
            if self._call is None:
                self._call = self.clock.callLater(0, self.flush)
        else:
            pending.extend(events)

    def flush(self) -> None:
        """
        Deliver what was published to each room since the last flush (and
        what is published meanwhile).
        """
        self._call = None
        historyLines = self.historyLines
        self._flushing = True
        try:
            while self._busy:
                rooms, self._busy = self._busy, []
                for state in rooms:
                    events, state.pending = state.pending, None
                    if not events:
                        continue
                    if historyLines:
                        state.history.extend(
                            event for event in events if event.kind in HISTORY_KINDS
                        )
                    batch = EventBatch(events)
                    delivers = state.delivers
                    self.published += len(events)
                    self.delivered += len(events) * len(delivers)
                    for deliver in delivers:
                        deliver(batch)
        finally:
            self._flushing = False

    def settle(self) -> None:
        """
        See L{IChatHub.settle}.
        """
        if self._flushing or not self._busy:
            return
        if self._call is not None:
            self._call.cancel()
        self.flush()

    def history(self, room: str) -> Deferred[Sequence[ChatEvent]]:
        """
        See L{IChatHub.history}.
        """
        state = self._rooms.get(room)
        return succeed(list(state.history) if state is not None else [])

    def rooms(self) -> Deferred[Sequence[tuple[str, int]]]:
        """
        See L{IChatHub.rooms}.
        """
        return succeed(
            sorted(
                (name, len(state.members))
                for name, state in self._rooms.items()
                if state.members
            )
        )

    def members(self, room: str) -> Deferred[Sequence[str]]:
        """
        See L{IChatHub.members}.
        """
        state = self._rooms.get(room)
        if state is None:
            return succeed([])
        return succeed([member.nick for member in state.members])

    def sendPrivate(self, key: str, event: ChatEvent) -> Deferred[bool]:
        """
        See L{IChatHub.sendPrivate}.
        """
        member = self._nicks.get(key)
        if member is None:
            return succeed(False)
        # After what was published before it, like any notice.
        self.settle()
        self.published += 1
        self.delivered += 1
        member.deliver(EventBatch([event]))
        return succeed(True)

    def roomCount(self) -> int:
        """
        @return: How many rooms are kept (with members or history).
        """
        return len(self._rooms)

    def memberCount(self) -> int:
        """
        @return: How many room memberships there are (a client is in one
            room at a time).
        """
        return sum(len(state.members) for state in self._rooms.values())
