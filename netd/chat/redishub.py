# -*- test-case-name: tests.test_redishub -*-
"""
Chat rooms shared through Redis, across worker processes and hosts.

L{RedisHub} implements L{IChatHub<netd.chat.hub.IChatHub>} on a Redis
server (C{hub = "redis://..."} in a chat service). Each netd process is a
I{node}; the rooms are in Redis:

  - one stream per room (C{XADD ... MAXLEN ~ hub_stream_length}): what is
    published to a room during one reactor iteration is one entry (the
    events as JSON, the node and a per-room sequence number), so a busy
    room costs one Redis command per iteration, not per message. Every
    node, the publishing one included, delivers a room's entries to its
    local members in stream order: one order per room for everyone.
  - a dedicated connection reads every stream with local members
    (C{XREAD BLOCK}); after a reconnect it resumes from the last entry it
    saw, so nothing Redis still holds is lost.
  - what a node published stays in its I{outbox} until it has read it
    back, and is sent again after a reconnect (readers drop duplicates by
    sequence number). If Redis does not give it back within
    C{hub_max_delay}, the node delivers it to its local members anyway:
    Redis being slow, stopped or down never holds local delivery up for
    longer than that. The outbox is bounded (C{hub_buffer} events); what
    overflows is delivered locally and counted, in a log line, as not
    shared. A reader that finds a gap in a node's sequence numbers (Redis
    restarted or trimmed the stream before it read) counts and logs it.
  - nicknames are keys set with C{NX} and a lease (C{hub_lease}) that the
    live node renews; a crashed node's nicknames come free when the lease
    runs out. After Redis restarts empty, each node claims its nicknames
    again.
  - membership: per room, a hash from node to that node's members'
    nicknames; a node's lease key says it is alive, and every node reaps
    the rooms of nodes whose lease ran out. C{/rooms} and C{/who} read it.
  - history: a list per room, appended in the same script as the stream
    entry (atomic), read with the stream position when a node first
    subscribes to a room, then kept locally as entries are delivered.

Client-sent names never become key syntax: a room or nickname key is
hex-encoded into its Redis key, and every value is passed as an argument.
"""

from __future__ import annotations

import json
import os
import socket
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.chat.hub import (
    HISTORY_KINDS,
    NICK,
    ChatEvent,
    EventBatch,
    IChatHub,
    IChatMember,
)
from netd.chat.redisclient import (
    HubAddress,
    RedisConnection,
    RedisProtocol,
    ReplyError,
)

#: Entries read from one stream per XREAD.
READ_COUNT = 1000

#: Seconds an idle XREAD blocks for.
READ_BLOCK = 1.0

#: Entries kept in a node's private-message inbox stream.
INBOX_LENGTH = 1000

_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'n', ARGV[3], 'q', ARGV[4], 'e', ARGV[5])
local h = tonumber(ARGV[2])
if h > 0 and #ARGV > 5 then
  for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  redis.call('LTRIM', KEYS[2], -h, -1)
end
return id
"""

_SUBSCRIBE = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
local h = {}
local n = tonumber(ARGV[1])
if n > 0 then h = redis.call('LRANGE', KEYS[2], -n, -1) end
return {id, h}
"""

_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# ARGV: prefix, node, lease (ms), then nickname key / value pairs. Returns
# the nickname keys someone else holds.
_LEASE = """
local p, node, lease = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', p .. 'node:' .. node, '1', 'PX', lease)
redis.call('SADD', p .. 'nodes', node)
local taken = {}
for i = 4, #ARGV, 2 do
  local cur = redis.call('GET', ARGV[i])
  if cur == ARGV[i + 1] then redis.call('PEXPIRE', ARGV[i], lease)
  elseif not cur then redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', lease)
  else table.insert(taken, ARGV[i]) end
end
for _, n in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if redis.call('EXISTS', p .. 'node:' .. n) == 0 then
    for _, r in ipairs(redis.call('SMEMBERS', p .. 'nr:' .. n)) do
      redis.call('HDEL', p .. 'm:' .. r, n)
      if redis.call('HLEN', p .. 'm:' .. r) == 0 then
        redis.call('SREM', p .. 'rooms', r)
      end
    end
    redis.call('DEL', p .. 'nr:' .. n)
    redis.call('SREM', p .. 'nodes', n)
  end
end
return taken
"""

# ARGV: prefix, node, room (hex), nicknames as JSON ("" to leave).
_MEMBERS = """
local p, node, r = ARGV[1], ARGV[2], ARGV[3]
if ARGV[4] == '' then
  redis.call('HDEL', p .. 'm:' .. r, node)
  redis.call('SREM', p .. 'nr:' .. node, r)
  if redis.call('HLEN', p .. 'm:' .. r) == 0 then redis.call('SREM', p .. 'rooms', r) end
else
  redis.call('HSET', p .. 'm:' .. r, node, ARGV[4])
  redis.call('SADD', p .. 'nr:' .. node, r)
  redis.call('SADD', p .. 'rooms', r)
end
return 0
"""

# ARGV: prefix, this node (left out: it counts its own), room (hex) or ''
# for every room. Returns room, nicknames-as-JSON pairs of live nodes.
_WHO = """
local p, self, only = ARGV[1], ARGV[2], ARGV[3]
local rooms
if only == '' then rooms = redis.call('SMEMBERS', p .. 'rooms') else rooms = {only} end
local out = {}
for _, r in ipairs(rooms) do
  local fields = redis.call('HGETALL', p .. 'm:' .. r)
  for i = 1, #fields, 2 do
    local n = fields[i]
    if n ~= self and redis.call('EXISTS', p .. 'node:' .. n) == 1 then
      table.insert(out, r)
      table.insert(out, fields[i + 1])
    end
  end
end
return out
"""

# KEYS: the nickname's key. ARGV: prefix, inbox length, nickname key (hex),
# event JSON. Returns 1 if someone holds the nickname.
_PRIVATE = """
local holder = redis.call('GET', KEYS[1])
if not holder then return 0 end
local node = string.match(holder, '^(%S+) ')
if not node then return 0 end
redis.call('XADD', ARGV[1] .. 'in:' .. node, 'MAXLEN', '~', ARGV[2], '*',
  'k', ARGV[3], 'e', ARGV[4])
return 1
"""


@frozen
class HubState:
    """
    A snapshot of a L{RedisHub}, for metrics.

    @ivar connected: Whether both connections to Redis are up.
    @ivar reconnects: Times the command connection came back after the first.
    @ivar published: Stream entries written (one per room per reactor turn).
    @ivar notShared: Events delivered locally only (outbox overflow).
    @ivar lostEntries: Entries of other nodes known missed (sequence gaps).
    @ivar outboxEvents: Events waiting to be read back from Redis.
    @ivar rooms: Rooms with local members.
    """

    connected: bool
    reconnects: int
    published: int
    notShared: int
    lostEntries: int
    outboxEvents: int
    rooms: int


def hexName(name: str) -> str:
    """
    @param name: A client-chosen name (a room's or a nickname's key).
    @return: A form that is plain hex digits, whatever the name holds, so
        that it can never be key syntax.
    """
    return name.encode("utf-8").hex()


def encodeEvents(events: Sequence[ChatEvent]) -> str:
    """
    @param events: Events.
    @return: Them as JSON (the line is rendered again on arrival).
    """
    return json.dumps(
        [[e.kind, e.room, e.nick, e.text, e.origin, e.time] for e in events],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decodeEvents(data: bytes | str) -> list[ChatEvent]:
    """
    @param data: What L{encodeEvents} made.
    @return: The events.
    @raise ValueError: If it is not that.
    """
    return [ChatEvent(k, r, n, t, o, float(w)) for k, r, n, t, o, w in json.loads(data)]


class _Room:
    """
    A room with local members.

    @ivar name: Its key.
    @ivar stream: Its stream's Redis key.
    @ivar members: Local members, in joining order.
    @ivar delivers: Their C{deliver} methods.
    @ivar history: Recent messages, as delivered.
    @ivar pending: Events published this iteration, or L{None}.
    @ivar lastId: The last stream entry read, or L{None} before the node
        knows where the stream is.
    @ivar subscribing: While the stream's position and history are being
        fetched: the L{Deferred}s of the joins waiting for them.
    @ivar dirty: Whether Redis must be told its membership.
    """

    __slots__ = (
        "name",
        "hexName",
        "stream",
        "historyKey",
        "members",
        "delivers",
        "history",
        "pending",
        "lastId",
        "subscribing",
        "dirty",
    )

    def __init__(self, name: str, keys: str, historyLines: int) -> None:
        self.name = name
        self.hexName = hexName(name)
        self.stream = keys + "s:" + self.hexName
        self.historyKey = keys + "h:" + self.hexName
        self.members: dict[IChatMember, None] = {}
        self.delivers: tuple[Any, ...] = ()
        self.history: deque[ChatEvent] = deque(maxlen=historyLines)
        self.pending: list[ChatEvent] | None = None
        self.lastId: str | None = None
        self.subscribing: list[Deferred[Any]] | None = None
        self.dirty = True

    def changed(self) -> None:
        self.delivers = tuple(member.deliver for member in self.members)
        self.dirty = True


class _Entry:
    """
    What a node published to a room in one iteration, until it has read it
    back from the stream.
    """

    __slots__ = ("room", "seq", "events", "born", "local", "acked")

    def __init__(self, room: str, seq: int, events: list[ChatEvent], born: float):
        self.room = room
        self.seq = seq
        self.events = events
        self.born = born
        self.local = False
        self.acked = False


@implementer(IChatHub)
class RedisHub:
    """
    Rooms in Redis (see the module docstring).

    @ivar node: This process's node id.
    @ivar connected: Whether both connections are ready.
    @ivar notShared: Events that could not be shared through Redis (outbox
        overflow).
    @ivar lostEntries: Entries of other nodes this one knows it missed
        (sequence gaps).
    @ivar published: Entries written to Redis.
    """

    _log = Logger(namespace="netd.chat.redis")

    def __init__(
        self,
        clock: Any,
        address: HubAddress,
        service: str,
        prefix: str = "netd",
        password: str = "",
        caFile: str = "",
        historyLines: int = 20,
        maxRooms: int = 256,
        lease: float = 15.0,
        timeout: float = 5.0,
        maxDelay: float = 0.25,
        bufferEvents: int = 10000,
        streamLength: int = 1000,
        retryMax: float = 10.0,
        node: str | None = None,
    ) -> None:
        self.clock = clock
        self.address = address
        self.service = service
        self.historyLines = historyLines
        self.maxRooms = maxRooms
        self.lease = lease
        self.maxDelay = maxDelay
        self.bufferEvents = bufferEvents
        self.streamLength = streamLength
        self.keys = f"{prefix}:{hexName(service)}:"
        host = "".join(c for c in socket.gethostname() if c.isalnum() or c in ".-")
        self.node = node or f"{host or 'host'}-{os.getpid()}-{os.urandom(4).hex()}"
        self.inbox = self.keys + "in:" + self.node
        self._rooms: dict[str, _Room] = {}
        self._streams: dict[bytes, _Room] = {}
        self._nicks: dict[str, IChatMember] = {}
        self._nickValues: dict[IChatMember, str] = {}
        self._outbox: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._outboxEvents = 0
        self._seqs: dict[str, int] = {}
        self._seen: dict[tuple[str, str], int] = {}
        self._busy: list[_Room] = []
        self._call: Any = None
        self._overdueCall: Any = None
        self._leaseCall: Any = None
        self._inboxId = "0-0"
        self._readerId: int | None = None
        self._reading = False
        self._readStreams: tuple[bytes, ...] = ()
        self._readerDirty = False
        self._reportCall: Any = None
        self._unreportedNotShared = 0
        self._unreportedLost = 0
        self.notShared = 0
        self.lostEntries = 0
        self.published = 0
        self.started = False
        common = dict(
            password=password,
            caFile=caFile,
            timeout=timeout,
            retryMax=retryMax,
        )
        self.commands = RedisConnection(
            clock,
            address,
            service,
            "commands",
            self._commandsReady,
            self._commandsLost,
            **common,  # type: ignore[arg-type]
        )
        self.reader = RedisConnection(
            clock,
            address,
            service,
            "reader",
            self._readerReady,
            self._readerLost,
            blockAllowance=READ_BLOCK,
            quiet=True,
            **common,  # type: ignore[arg-type]
        )

    # Life cycle

    def start(self) -> None:
        """
        Connect to Redis (and keep reconnecting).
        """
        if self.started:
            return
        self.started = True
        self.commands.start()
        self.reader.start()
        self._leaseCall = self.clock.callLater(self.lease / 3, self._renew)

    def stop(self) -> Deferred[None]:
        """
        Say goodbye to Redis (membership, nicknames, lease), then close.

        @return: A L{Deferred} that fires once that is done (at most a
            second).
        """
        self.started = False
        for name in ("_leaseCall", "_overdueCall", "_call", "_reportCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        self._report()
        protocol = self.commands.protocol
        done: Deferred[None] = Deferred()

        def close(_: object = None) -> None:
            if timer.active():
                timer.cancel()
            self.reader.stop()
            self.commands.stop()
            if not done.called:
                done.callback(None)

        timer = self.clock.callLater(1.0, close)
        if protocol is None:
            close()
            return done
        commands: list[Any] = []
        for room in self._rooms.values():
            commands.append(self._membersCommand(room, leaving=True))
        for key, member in self._nicks.items():
            commands.append(
                ("EVAL", _RELEASE, 1, self._nickKey(key), self._nickValues[member])
            )
        commands.append(("DEL", self.keys + "node:" + self.node))
        commands.append(("SREM", self.keys + "nodes", self.node))
        commands.append(("DEL", self.inbox))
        protocol.pipeline(commands).addBoth(close)
        return done

    @property
    def connected(self) -> bool:
        """
        Whether both connections are up.
        """
        return self.commands.protocol is not None and self.reader.protocol is not None

    # IChatHub

    def claimNick(self, member: IChatMember, key: str) -> Deferred[bool]:
        """
        See L{IChatHub.claimNick}: atomic across the cluster (C{SET NX} with
        a lease); while Redis is unavailable, unique among local members
        (asserted once Redis is back; a clash is logged).
        """
        holder = self._nicks.get(key)
        if holder is not None:
            return succeed(holder is member)
        value = f"{self.node} {member.memberId}"
        self._nicks[key] = member
        self._nickValues[member] = value
        protocol = self.commands.protocol
        if protocol is None:
            return succeed(True)

        def granted(result: Any) -> bool:
            if result == 1:
                return True
            if self._nicks.get(key) is member:
                del self._nicks[key]
            return False

        def failed(failure: Failure) -> bool:
            # Redis went away meanwhile: local uniqueness, checked again
            # when the leases are renewed.
            return self._nicks.get(key) is member

        return protocol.execute(
            "EVAL", _CLAIM, 1, self._nickKey(key), value, int(self.lease * 1000)
        ).addCallbacks(granted, failed)

    def releaseNick(self, member: IChatMember, key: str) -> None:
        """
        See L{IChatHub.releaseNick}.
        """
        if self._nicks.get(key) is not member:
            return
        del self._nicks[key]
        value = self._nickValues.get(member)
        if value is None:
            return
        if member not in self._nicks.values():
            del self._nickValues[member]
        protocol = self.commands.protocol
        if protocol is not None:
            protocol.execute("EVAL", _RELEASE, 1, self._nickKey(key), value).addErrback(
                lambda f: None
            )

    def join(self, room: str, member: IChatMember) -> Deferred[Any]:
        """
        See L{IChatHub.join}.
        """
        state = self._rooms.get(room)
        if state is None:
            if len(self._rooms) >= self.maxRooms:
                return succeed(None)
            state = self._rooms[room] = _Room(room, self.keys, self.historyLines)
            self._streams[state.stream.encode()] = state
        state.members[member] = None
        state.changed()
        self._schedule()
        if state.subscribing is not None:
            d: Deferred[Any] = Deferred()
            state.subscribing.append(d)
            return d
        if state.lastId is not None or self.commands.protocol is None:
            return succeed(list(state.history))
        d = Deferred()
        state.subscribing = [d]
        self._subscribe(state)
        return d

    def leave(self, room: str, member: IChatMember) -> None:
        """
        See L{IChatHub.leave}.
        """
        state = self._rooms.get(room)
        if state is None or member not in state.members:
            return
        del state.members[member]
        state.changed()
        if not state.members:
            # Publish what is pending (the member's part) before the room
            # goes; its entries need not come back to anyone here.
            self.flush()
            del self._rooms[room]
            del self._streams[state.stream.encode()]
            for entry in list(self._outbox.values()):
                if entry.room == room:
                    entry.local = True
                    if entry.acked:
                        self._forget(entry)
            self._sendMembers([state])
            self._readerDirty = True
            self._wakeReader()
        self._schedule()

    def publish(self, room: str, event: ChatEvent) -> None:
        """
        See L{IChatHub.publish}.
        """
        self.publishAll(room, [event])

    def publishAll(self, room: str, events: list[ChatEvent]) -> None:
        """
        See L{IChatHub.publishAll}: sent at the end of the iteration, one
        stream entry per room.
        """
        state = self._rooms.get(room)
        if state is None:
            return
        if state.pending is None:
            state.pending = list(events)
            self._busy.append(state)
        else:
            state.pending.extend(events)
        if not state.dirty:
            for event in events:
                if event.kind == NICK:
                    state.dirty = True
        self._schedule()

    def settle(self) -> None:
        """
        See L{IChatHub.settle}: nothing to do; events reach local members
        through Redis (or after C{hub_max_delay}).
        """

    def history(self, room: str) -> Deferred[Sequence[ChatEvent]]:
        """
        See L{IChatHub.history}.
        """
        state = self._rooms.get(room)
        if state is not None and state.lastId is not None:
            return succeed(list(state.history))
        protocol = self.commands.protocol
        if protocol is None or not self.historyLines:
            return succeed(list(state.history) if state is not None else [])
        stream = self.keys + "s:" + hexName(room)
        return (
            protocol.execute(
                "EVAL",
                _SUBSCRIBE,
                2,
                stream,
                self.keys + "h:" + hexName(room),
                self.historyLines,
            )
            .addCallback(lambda reply: self._decodeHistory(reply[1]))
            .addErrback(lambda f: list(state.history) if state is not None else [])
        )

    def rooms(self) -> Deferred[Sequence[tuple[str, int]]]:
        """
        See L{IChatHub.rooms}: every node's rooms (this node's only, while
        Redis is unavailable).
        """

        def count(pairs: list[tuple[str, list[str]]]) -> list[tuple[str, int]]:
            counts = {name: len(state.members) for name, state in self._rooms.items()}
            for name, nicks in pairs:
                counts[name] = counts.get(name, 0) + len(nicks)
            return sorted((name, n) for name, n in counts.items() if n)

        return self._who("").addCallback(count)

    def members(self, room: str) -> Deferred[Sequence[str]]:
        """
        See L{IChatHub.members}: on every node.
        """

        def collect(pairs: list[tuple[str, list[str]]]) -> list[str]:
            state = self._rooms.get(room)
            nicks = [m.nick for m in state.members] if state is not None else []
            for _, more in pairs:
                nicks.extend(more)
            return nicks

        return self._who(hexName(room)).addCallback(collect)

    def sendPrivate(self, key: str, event: ChatEvent) -> Deferred[bool]:
        """
        See L{IChatHub.sendPrivate}: at once to a local holder, through the
        holder's node's inbox stream otherwise.
        """
        member = self._nicks.get(key)
        if member is not None:
            member.deliver(EventBatch([event]))
            return succeed(True)
        protocol = self.commands.protocol
        if protocol is None:
            return succeed(False)
        return protocol.execute(
            "EVAL",
            _PRIVATE,
            1,
            self._nickKey(key),
            self.keys,
            INBOX_LENGTH,
            hexName(key),
            encodeEvents([event]),
        ).addCallbacks(lambda reply: reply == 1, lambda f: False)

    def roomCount(self) -> int:
        """
        @return: How many rooms have local members.
        """
        return len(self._rooms)

    def memberCount(self) -> int:
        """
        @return: How many local room memberships there are.
        """
        return sum(len(room.members) for room in self._rooms.values())

    @property
    def reconnects(self) -> int:
        """
        Times the command connection came back after the first (for
        L{netd.metrics}).
        """
        return max(0, self.commands.connects - 1)

    @property
    def lostMessages(self) -> int:
        """
        Events not shared through Redis (outbox overflow, delivered locally
        only) plus other nodes' entries known missed (for L{netd.metrics}).
        """
        return self.notShared + self.lostEntries

    def state(self) -> HubState:
        """
        @return: What a metrics endpoint reports about the hub.
        """
        return HubState(
            connected=self.connected,
            reconnects=self.reconnects,
            published=self.published,
            notShared=self.notShared,
            lostEntries=self.lostEntries,
            outboxEvents=self._outboxEvents,
            rooms=len(self._rooms),
        )

    # Publishing

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Send what was published this iteration (one stream entry per room,
        all in one write) and membership changes.
        """
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        now = self.clock.seconds()
        protocol = self.commands.protocol
        entries: list[_Entry] = []
        rooms, self._busy = self._busy, []
        for state in rooms:
            events, state.pending = state.pending, None
            if not events:
                continue
            seq = self._seqs.get(state.name, 0) + 1
            self._seqs[state.name] = seq
            entry = _Entry(state.name, seq, events, now)
            self._outbox[(state.name, seq)] = entry
            self._outboxEvents += len(events)
            entries.append(entry)
            if protocol is None or self.reader.protocol is None:
                # Redis is unavailable: local members get it now; it is
                # shared once Redis is back.
                self._deliverLocal(entry)
        self._trimOutbox()
        if protocol is not None and entries:
            self._send(protocol, entries)
        dirty = [state for state in self._rooms.values() if state.dirty]
        if dirty:
            self._sendMembers(dirty)
        if self._outbox and self._overdueCall is None:
            self._overdueCall = self.clock.callLater(self.maxDelay, self._overdue)

    def _send(self, protocol: RedisProtocol, entries: Sequence[_Entry]) -> None:
        commands = []
        for entry in entries:
            historic = (
                [
                    encodeEvents([event])
                    for event in entry.events
                    if event.kind in HISTORY_KINDS
                ]
                if self.historyLines
                else []
            )
            room = self.keys + "s:" + hexName(entry.room)
            commands.append(
                (
                    "EVAL",
                    _PUBLISH,
                    2,
                    room,
                    self.keys + "h:" + hexName(entry.room),
                    self.streamLength,
                    self.historyLines,
                    self.node,
                    entry.seq,
                    encodeEvents(entry.events),
                    *historic,
                )
            )

        def sent(replies: list[Any]) -> None:
            for entry, reply in zip(entries, replies):
                if isinstance(reply, ReplyError):
                    self._log.error(
                        "{service}: Redis hub refused a message: {error}",
                        service=self.service,
                        error=str(reply),
                    )
                    continue
                entry.acked = True
                self.published += 1
                if entry.local and (entry.room, entry.seq) in self._outbox:
                    self._forget(entry)

        protocol.pipeline(commands).addCallbacks(sent, lambda f: None)

    def _forget(self, entry: _Entry) -> None:
        if self._outbox.pop((entry.room, entry.seq), None) is not None:
            self._outboxEvents -= len(entry.events)

    def _deliverLocal(self, entry: _Entry) -> None:
        if entry.local:
            return
        entry.local = True
        state = self._rooms.get(entry.room)
        if state is not None:
            self._deliver(state, entry.events)

    def _deliver(self, state: _Room, events: list[ChatEvent]) -> None:
        if self.historyLines:
            state.history.extend(e for e in events if e.kind in HISTORY_KINDS)
        batch = EventBatch(events)
        for deliver in state.delivers:
            deliver(batch)

    def _trimOutbox(self) -> None:
        while self._outboxEvents > self.bufferEvents and self._outbox:
            _, entry = self._outbox.popitem(last=False)
            self._outboxEvents -= len(entry.events)
            self._deliverLocal(entry)
            if not entry.acked:
                self.notShared += len(entry.events)
                self._unreportedNotShared += len(entry.events)
                self._scheduleReport()

    def _overdue(self) -> None:
        """
        Deliver locally what Redis has not given back within C{hub_max_delay}.
        """
        self._overdueCall = None
        limit = self.clock.seconds() - self.maxDelay
        waiting = False
        for entry in list(self._outbox.values()):
            if entry.local:
                continue
            if entry.born > limit:
                waiting = True
                break
            self._deliverLocal(entry)
            if entry.acked:
                self._forget(entry)
        if (waiting or self._outbox) and self.started:
            self._overdueCall = self.clock.callLater(self.maxDelay, self._overdue)

    # Membership and leases

    def _nickKey(self, key: str) -> str:
        return self.keys + "n:" + hexName(key)

    def _membersCommand(self, state: _Room, leaving: bool = False) -> tuple[Any, ...]:
        nicks = (
            ""
            if leaving or not state.members
            else json.dumps([m.nick for m in state.members], ensure_ascii=False)
        )
        return ("EVAL", _MEMBERS, 0, self.keys, self.node, state.hexName, nicks)

    def _sendMembers(self, rooms: Sequence[_Room]) -> None:
        protocol = self.commands.protocol
        if protocol is None:
            return
        for state in rooms:
            state.dirty = False
        protocol.pipeline([self._membersCommand(state) for state in rooms]).addErrback(
            self._membersFailed, rooms
        )

    def _membersFailed(self, failure: Failure, rooms: Sequence[_Room]) -> None:
        for state in rooms:
            state.dirty = True

    def _renew(self) -> Deferred[Any] | None:
        """
        Renew this node's lease and its nicknames' (claiming them again if
        Redis lost them), and reap the membership of dead nodes.
        """
        if self._leaseCall is not None and self._leaseCall.active():
            self._leaseCall.cancel()
        self._leaseCall = None
        if self.started:
            self._leaseCall = self.clock.callLater(self.lease / 3, self._renew)
        protocol = self.commands.protocol
        if protocol is None:
            return None
        args: list[Any] = [self.keys, self.node, int(self.lease * 1000)]
        for key, member in self._nicks.items():
            args.append(self._nickKey(key))
            args.append(self._nickValues[member])
        return protocol.execute("EVAL", _LEASE, 0, *args).addCallbacks(
            self._renewed, lambda f: None
        )

    def _renewed(self, taken: list[bytes]) -> None:
        for redisKey in taken:
            self._log.warn(
                "{service}: nickname key {key} is held by another node too (claimed "
                "while Redis was unavailable); both keep it until one lets go",
                service=self.service,
                key=redisKey.decode("utf-8", "replace"),
                hubEvent="nickClash",
            )

    def _who(self, room: str) -> Deferred[list[tuple[str, list[str]]]]:
        protocol = self.commands.protocol
        if protocol is None:
            return succeed([])

        def decode(reply: list[bytes]) -> list[tuple[str, list[str]]]:
            pairs = []
            for i in range(0, len(reply) - 1, 2):
                try:
                    name = bytes.fromhex(reply[i].decode()).decode("utf-8")
                    nicks = [str(n) for n in json.loads(reply[i + 1])]
                except ValueError:
                    continue
                pairs.append((name, nicks))
            return pairs

        return (
            protocol.execute("EVAL", _WHO, 0, self.keys, self.node, room)
            .addCallback(decode)
            .addErrback(lambda f: [])
        )

    # Connections

    def _commandsReady(self, protocol: RedisProtocol) -> Deferred[Any]:
        """
        A (new) command connection: renew the lease and claim the nicknames,
        tell Redis the membership, find the streams' positions, send the
        outbox again.
        """
        for state in self._rooms.values():
            state.dirty = True
        self.clock.callLater(0, self._resume)
        return succeed(None)

    def _resume(self) -> None:
        protocol = self.commands.protocol
        if protocol is None:
            return
        self._renew()
        for state in self._rooms.values():
            if state.lastId is None and state.subscribing is None:
                state.subscribing = []
                self._subscribe(state)
        if self._outbox:
            for entry in self._outbox.values():
                entry.acked = False
            self._send(protocol, list(self._outbox.values()))
        self._schedule()

    def _commandsLost(self) -> None:
        """
        The command connection is gone: nothing to undo here. What was
        published stays in the outbox and is sent again once it is back
        (L{_commandsReady}); local members keep getting their messages
        after C{hub_max_delay} meanwhile.
        """

    def _subscribe(self, state: _Room) -> None:
        protocol = self.commands.protocol
        assert protocol is not None
        protocol.execute(
            "EVAL", _SUBSCRIBE, 2, state.stream, state.historyKey, self.historyLines
        ).addCallbacks(
            self._subscribed,
            self._subscribeFailed,
            callbackArgs=(state,),
            errbackArgs=(state,),
        )

    def _subscribed(self, reply: list[Any], state: _Room) -> None:
        waiting, state.subscribing = state.subscribing or [], None
        if state.lastId is None:
            state.lastId = reply[0].decode()
            history = self._decodeHistory(reply[1])
            if history:
                state.history.clear()
                state.history.extend(history)
        self._readerDirty = True
        self._wakeReader()
        for d in waiting:
            d.callback(list(state.history))

    def _subscribeFailed(self, failure: Failure, state: _Room) -> None:
        waiting, state.subscribing = state.subscribing or [], None
        for d in waiting:
            d.callback(list(state.history))

    def _decodeHistory(self, items: list[bytes]) -> list[ChatEvent]:
        history = []
        for item in items:
            try:
                history.extend(decodeEvents(item))
            except (ValueError, TypeError):
                continue
        return history

    def _readerReady(self, protocol: RedisProtocol) -> Deferred[Any]:
        def gotId(clientId: int) -> None:
            self._readerId = clientId
            self._reading = False
            self.clock.callLater(0, self._read)

        return protocol.execute("CLIENT", "ID").addCallback(gotId)

    def _readerLost(self) -> None:
        self._readerId = None
        self._reading = False

    def _wakeReader(self) -> None:
        """
        Have the blocked C{XREAD} return, to read a changed set of streams.
        """
        if not self._reading:
            if self.reader.protocol is not None:
                self.clock.callLater(0, self._read)
            return
        protocol = self.commands.protocol
        if protocol is not None and self._readerId is not None:
            protocol.execute("CLIENT", "UNBLOCK", self._readerId).addErrback(
                lambda f: None
            )

    def _read(self) -> None:
        protocol = self.reader.protocol
        if protocol is None or self._reading:
            return
        keys: list[Any] = [self.inbox]
        ids: list[Any] = [self._inboxId]
        for state in self._rooms.values():
            if state.lastId is not None:
                keys.append(state.stream)
                ids.append(state.lastId)
        self._readerDirty = False
        self._reading = True
        protocol.execute(
            "XREAD",
            "COUNT",
            READ_COUNT,
            "BLOCK",
            int(READ_BLOCK * 1000),
            "STREAMS",
            *keys,
            *ids,
        ).addCallbacks(self._gotEntries, self._readFailed)

    def _readFailed(self, failure: Failure) -> None:
        self._reading = False
        if not failure.check(ReplyError):
            return
        self._log.error(
            "{service}: Redis hub XREAD failed: {error}",
            service=self.service,
            error=str(failure.value),
        )
        self.clock.callLater(READ_BLOCK, self._read)

    def _gotEntries(self, reply: Any) -> None:
        self._reading = False
        if reply:
            for stream, entries in reply:
                if stream == self.inbox.encode():
                    self._gotPrivate(entries)
                    continue
                state = self._streams.get(stream)
                if state is not None:
                    self._gotRoomEntries(state, entries)
        if self.reader.protocol is not None and self.started:
            self._read()

    def _gotRoomEntries(self, state: _Room, entries: list[Any]) -> None:
        events: list[ChatEvent] = []
        node = self.node.encode()
        outbox = self._outbox
        for entryId, fields in entries:
            state.lastId = entryId.decode()
            values = dict(zip(fields[::2], fields[1::2]))
            try:
                origin = values[b"n"]
                seq = int(values[b"q"])
            except (KeyError, ValueError):
                continue
            if origin == node:
                entry = outbox.pop((state.name, seq), None)
                if entry is not None:
                    self._outboxEvents -= len(entry.events)
                    if not entry.local:
                        entry.local = True
                        events.extend(entry.events)
                continue
            mark = (origin.decode(), state.name)
            last = self._seen.get(mark)
            if last is not None:
                if seq <= last:
                    continue
                if seq > last + 1:
                    self.lostEntries += seq - last - 1
                    self._unreportedLost += seq - last - 1
                    self._scheduleReport()
            self._seen[mark] = seq
            try:
                events.extend(decodeEvents(values[b"e"]))
            except (KeyError, ValueError, TypeError):
                continue
        if events:
            self._deliver(state, events)

    def _gotPrivate(self, entries: list[Any]) -> None:
        for entryId, fields in entries:
            self._inboxId = entryId.decode()
            values = dict(zip(fields[::2], fields[1::2]))
            try:
                key = bytes.fromhex(values[b"k"].decode()).decode("utf-8")
                events = decodeEvents(values[b"e"])
            except (KeyError, ValueError, TypeError):
                continue
            member = self._nicks.get(key)
            if member is not None:
                member.deliver(EventBatch(events))

    # Reporting losses

    def _scheduleReport(self) -> None:
        if self._reportCall is None and self.started:
            self._reportCall = self.clock.callLater(1.0, self._report)

    def _report(self) -> None:
        self._reportCall = None
        if self._unreportedNotShared:
            self._log.warn(
                "{service}: {count} messages could not be shared through Redis "
                "(outbox of {limit} events full while Redis was unavailable); "
                "local members got them ({total} so far)",
                service=self.service,
                count=self._unreportedNotShared,
                limit=self.bufferEvents,
                total=self.notShared,
                hubEvent="notShared",
            )
            self._unreportedNotShared = 0
        if self._unreportedLost:
            self._log.warn(
                "{service}: missed {count} message batches of other nodes (Redis "
                "restarted or trimmed a stream before they were read; "
                "{total} so far)",
                service=self.service,
                count=self._unreportedLost,
                total=self.lostEntries,
                hubEvent="lost",
            )
            self._unreportedLost = 0
