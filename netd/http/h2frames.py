# -*- test-case-name: tests.test_h2frames -*-
"""
HTTP/2's wire format for netd's own server core (RFC 9113, RFC 7541):
frames parsed and serialised with C{struct}, the per-stream state and
flow-control windows, HPACK decoding with a cache of validated header lists,
and stateless HPACK encoding.

netd goes around the C{h2} library for speed: driving C{h2} cost about 78 µs
of Python per 1 KiB request (95% inside C{h2}/C{hpack}) and reached 0.19x
nginx's requests/s (bench/RESULTS.md); this core does the same work in a
fraction of that.

B{HPACK decoding} is C{hpack}'s own L{Decoder} (Huffman, the dynamic table,
the header list size limit), with a cache in front: a header block that
cannot change the dynamic table (only indexed fields and literals without
indexing, as every request after the first from h2load or a browser) is
decoded and validated once, and its result kept under its raw bytes. A
block that refers only to the static table stays valid for the whole
connection; one that refers to the dynamic table stays valid until the
table changes (a literal with incremental indexing or a size update, which
go through the decoder and empty that part of the cache only).

B{HPACK encoding} never uses the dynamic table: every field is a static
table index or a literal without indexing (valid HPACK, RFC 7541 section
6.2.2), so an encoded field does not depend on the connection, and the
blocks are cached per distinct tuple of fields, for every connection at
once. The only state an encoder must keep is the table size the peer
allows: after the peer's C{SETTINGS_HEADER_TABLE_SIZE} the next block starts
with a size update to 0 (L{TABLE_SIZE_ZERO}), which is within any size.
"""

from __future__ import annotations

import struct

from hpack import Decoder, HPACKError, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 section 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

# Settings (RFC 9113 section 6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
DEFAULT_FRAME_SIZE = 16384
MAX_FRAME_SIZE_LIMIT = 2**24 - 1
#: CONTINUATION frames one header block may take (CVE-2024-27316 class).
MAX_CONTINUATIONS = 64

#: A dynamic table size update to 0 (RFC 7541 section 6.3).
TABLE_SIZE_ZERO = b"\x20"

# Length (24 bits, as a byte and a short), type, flags, stream.
_HEADER = struct.Struct(">BHBBL")
FRAME_HEADER = _HEADER
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")


class ConnectionError(Exception):
    """
    The peer broke the protocol: the connection ends with C{GOAWAY}.

    @ivar code: The error code to send.
    """

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class StreamError(Exception):
    """
    The peer broke the protocol on one stream: it is reset.

    @ivar code: The error code to send in C{RST_STREAM}.
    """

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


# Serialising.


def frameHeader(length: int, kind: int, flags: int, streamId: int) -> bytes:
    """
    @return: The 9-byte header of a frame.
    """
    return _HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, streamId)


def settingsFrame(settings: dict[int, int]) -> bytes:
    """
    @param settings: Identifier to value.
    @return: A C{SETTINGS} frame.
    """
    body = b"".join(_SETTING.pack(k, v) for k, v in settings.items())
    return frameHeader(len(body), SETTINGS, 0, 0) + body


SETTINGS_ACK = frameHeader(0, SETTINGS, ACK, 0)


def pingAck(opaque: bytes) -> bytes:
    """
    @param opaque: The 8 bytes of the peer's C{PING}.
    @return: Its C{PING ACK}.
    """
    return frameHeader(8, PING, ACK, 0) + opaque


def goawayFrame(lastStream: int, code: int) -> bytes:
    """
    @return: A C{GOAWAY} frame.
    """
    return frameHeader(8, GOAWAY, 0, 0) + _GOAWAY.pack(lastStream, code)


def rstStreamFrame(streamId: int, code: int) -> bytes:
    """
    @return: A C{RST_STREAM} frame.
    """
    return frameHeader(4, RST_STREAM, 0, streamId) + _U32.pack(code)


def windowUpdateFrame(streamId: int, increment: int) -> bytes:
    """
    @return: A C{WINDOW_UPDATE} frame.
    """
    return frameHeader(4, WINDOW_UPDATE, 0, streamId) + _U32.pack(increment)


def headersFrames(
    streamId: int, block: bytes, endStream: bool, maxFrame: int
) -> list[bytes]:
    """
    A header block as C{HEADERS}, then C{CONTINUATION} frames if it is
    larger than the peer's maximum frame size.

    @param streamId: The stream.
    @param block: The encoded header block.
    @param endStream: Whether the stream ends with it.
    @param maxFrame: The peer's C{SETTINGS_MAX_FRAME_SIZE}.
    @return: The frames' bytes, in order.
    """
    flags = END_STREAM if endStream else 0
    if len(block) <= maxFrame:
        return [frameHeader(len(block), HEADERS, flags | END_HEADERS, streamId), block]
    out = []
    kind = HEADERS
    for start in range(0, len(block), maxFrame):
        piece = block[start : start + maxFrame]
        last = start + maxFrame >= len(block)
        out.append(
            frameHeader(
                len(piece), kind, flags | (END_HEADERS if last else 0), streamId
            )
        )
        out.append(piece)
        kind = CONTINUATION
        flags = 0
    return out


def splitFrames(data: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    """
    Cut bytes into whole frames (for a client such as the probe; the
    server's own loop is inlined in L{netd.http.h2}).

    @param data: Bytes received, starting at a frame.
    @return: The whole frames as C{(type, flags, stream, payload)}, and the
        bytes of an incomplete last frame.
    """
    found = []
    pos = 0
    while len(data) - pos >= 9:
        high, low, kind, flags, streamId = _HEADER.unpack_from(data, pos)
        stop = pos + 9 + ((high << 16) | low)
        if stop > len(data):
            break
        found.append((kind, flags, streamId & 0x7FFFFFFF, data[pos + 9 : stop]))
        pos = stop
    return found, data[pos:]


def headerFragment(kind: int, flags: int, payload: bytes) -> bytes:
    """
    @param kind: L{HEADERS} or L{CONTINUATION}.
    @param flags: The frame's flags.
    @param payload: Its payload.
    @return: The header block fragment it carries (without padding and
        priority).
    @raise ConnectionError: For bad padding, or a priority that is cut.
    """
    if kind != HEADERS:
        return payload
    payload = stripPadding(payload, flags)
    if flags & PRIORITY_FLAG:
        if len(payload) < 5:
            raise ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short")
        payload = payload[5:]
    return payload


def parseSettings(payload: bytes) -> list[tuple[int, int]]:
    """
    @param payload: A C{SETTINGS} frame's payload (not an C{ACK}).
    @return: Its C{(identifier, value)} pairs, in order.
    @raise ConnectionError: C{FRAME_SIZE_ERROR} if its length is not a
        multiple of 6.
    """
    if len(payload) % 6:
        raise ConnectionError(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    return [_SETTING.unpack_from(payload, start) for start in range(0, len(payload), 6)]


def unpackU32(payload: bytes, offset: int = 0) -> int:
    """
    @return: The 32-bit big-endian integer at C{offset}.
    """
    value: int = _U32.unpack_from(payload, offset)[0]
    return value


def stripPadding(payload: bytes, flags: int) -> bytes:
    """
    @param payload: A C{DATA} or C{HEADERS} frame's payload.
    @param flags: Its flags.
    @return: The payload without its pad length byte and padding.
    @raise ConnectionError: C{PROTOCOL_ERROR} if the padding is as long as
        the frame or longer (RFC 9113 sections 6.1, 6.2).
    """
    if not flags & PADDED:
        return payload
    if not payload:
        raise ConnectionError(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]


# Streams and their windows.


class Stream:
    """
    One stream's protocol state, from its C{HEADERS} until both sides are
    closed.

    @ivar streamId: Its identifier.
    @ivar sendWindow: Bytes of C{DATA} the peer allows on it.
    @ivar recvWindow: Bytes of C{DATA} the peer may still send on it.
    @ivar remoteClosed: Whether the peer has ended it (C{END_STREAM}).
    @ivar localClosed: Whether the response is complete.
    @ivar contentLength: The request's C{content-length}, or L{None}.
    @ivar received: Request body bytes received.
    """

    __slots__ = (
        "streamId",
        "sendWindow",
        "recvWindow",
        "remoteClosed",
        "localClosed",
        "contentLength",
        "received",
    )

    def __init__(
        self,
        streamId: int,
        sendWindow: int,
        recvWindow: int,
        remoteClosed: bool,
        contentLength: int | None,
    ) -> None:
        self.streamId = streamId
        self.sendWindow = sendWindow
        self.recvWindow = recvWindow
        self.remoteClosed = remoteClosed
        self.localClosed = False
        self.contentLength = contentLength
        self.received = 0

    def receiveData(self, size: int, payload: int, endStream: bool) -> None:
        """
        Account for a C{DATA} frame on this stream.

        @param size: Its flow-controlled length (padding included).
        @param payload: Its data bytes.
        @param endStream: Whether it ends the stream.
        @raise StreamError: C{STREAM_CLOSED} if the peer had ended the stream,
            C{FLOW_CONTROL_ERROR} past the stream's window, C{PROTOCOL_ERROR}
            if the data disagree with C{content-length} (RFC 9113 section
            8.1.1).
        """
        if self.remoteClosed:
            raise StreamError(STREAM_CLOSED, "DATA after END_STREAM")
        self.recvWindow -= size
        if self.recvWindow < 0:
            raise StreamError(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        self.received += payload
        length = self.contentLength
        if length is not None and (
            self.received > length or (endStream and self.received != length)
        ):
            raise StreamError(PROTOCOL_ERROR, "DATA disagrees with content-length")
        if endStream:
            self.remoteClosed = True

    def windowUpdate(self, increment: int) -> None:
        """
        The peer opened this stream's send window.

        @param increment: By how much (not 0).
        @raise StreamError: C{FLOW_CONTROL_ERROR} beyond 2^31-1.
        """
        self.sendWindow += increment
        if self.sendWindow > MAX_WINDOW:
            raise StreamError(FLOW_CONTROL_ERROR, "stream window beyond 2^31-1")


# HPACK decoding and request header validation.

# RFC 9113 section 8.2.1: a field name has no bytes 0x00-0x20, 0x41-0x5a
# (uppercase) or 0x7f-0xff; a value no NUL, CR or LF.
_BAD_NAME = bytes(range(0x21)) + bytes(range(0x41, 0x5B)) + bytes(range(0x7F, 0x100))
_BAD_VALUE = b"\x00\r\n"
_EDGE = b" \t"
_PSEUDO = {b":method", b":scheme", b":authority", b":path"}
# RFC 9113 section 8.2.2.
_CONNECTION_SPECIFIC = {
    b"connection",
    b"proxy-connection",
    b"keep-alive",
    b"transfer-encoding",
    b"upgrade",
}
_CONNECT = b"CONNECT"
#: Decoded header lists kept per cache (of the two), the longest block
#: kept, and the bytes (blocks and their decoded fields) a cache may hold:
#: a connection's caches never hold more than 2 x 16 KiB, whatever its
#: client sends.
CACHE_ENTRIES = 64
CACHE_BLOCK = 2048
CACHE_BYTES = 16384

Headers = tuple[tuple[bytes, bytes], ...]


def validateRequest(headers: list[tuple[bytes, bytes]]) -> tuple[Headers, int | None]:
    """
    Check a request's decoded header list (RFC 9113 sections 8.2, 8.3).

    @param headers: The fields, pseudo-header fields first.
    @return: The fields, and the C{content-length} if there is one (as an
        integer, or L{None}; one that is not a number is left to the
        request model, which answers C{400}).
    @raise StreamError: C{PROTOCOL_ERROR} for a malformed request: a name
        that is empty, uppercase or has bytes no field name may have; a value
        with NUL, CR or LF or that starts or ends with whitespace; a
        pseudo-header field after a regular one, repeated, unknown or
        missing; an empty C{:path}; a connection-specific field; C{te} other
        than C{trailers}; a C{host} that differs from C{:authority}.
    """
    regular = False
    seen: set[bytes] = set()
    authority = host = None
    length = None
    method = b""
    for name, value in headers:
        if not name or name.translate(None, _BAD_NAME) != name:
            raise StreamError(PROTOCOL_ERROR, "invalid field name %r" % name)
        if value.translate(None, _BAD_VALUE) != value or (
            value and (value[:1] in _EDGE or value[-1:] in _EDGE)
        ):
            raise StreamError(PROTOCOL_ERROR, "invalid field value for %r" % name)
        if name[:1] == b":":
            if regular:
                raise StreamError(PROTOCOL_ERROR, "pseudo-header after a field")
            if name not in _PSEUDO:
                raise StreamError(PROTOCOL_ERROR, "unknown pseudo-header %r" % name)
            if name in seen:
                raise StreamError(PROTOCOL_ERROR, "repeated pseudo-header %r" % name)
            seen.add(name)
            if name == b":authority":
                authority = value
            elif name == b":path" and not value:
                raise StreamError(PROTOCOL_ERROR, "empty :path")
            elif name == b":method":
                method = value
            continue
        regular = True
        if b":" in name:
            raise StreamError(PROTOCOL_ERROR, "colon in field name %r" % name)
        if name in _CONNECTION_SPECIFIC:
            raise StreamError(PROTOCOL_ERROR, "connection-specific field %r" % name)
        if name == b"te" and value != b"trailers":
            raise StreamError(PROTOCOL_ERROR, "te other than trailers")
        if name == b"host":
            host = value
        elif name == b"content-length" and value.isdigit():
            length = int(value)
    if b":method" not in seen:
        raise StreamError(PROTOCOL_ERROR, "no :method")
    if method == _CONNECT:
        if b":authority" not in seen or b":scheme" in seen or b":path" in seen:
            raise StreamError(PROTOCOL_ERROR, "malformed CONNECT")
    elif b":scheme" not in seen or b":path" not in seen:
        raise StreamError(PROTOCOL_ERROR, "no :scheme or :path")
    if host is not None and authority is not None and host != authority:
        raise StreamError(PROTOCOL_ERROR, "host differs from :authority")
    return tuple(headers), length


def validateTrailers(headers: list[tuple[bytes, bytes]]) -> None:
    """
    Check a trailer section: regular fields only.

    @param headers: The decoded fields.
    @raise StreamError: C{PROTOCOL_ERROR} for a pseudo-header field.
    """
    for name, _ in headers:
        if name[:1] == b":":
            raise StreamError(PROTOCOL_ERROR, "pseudo-header in trailers")


def _integer(block: bytes, pos: int, bits: int) -> tuple[int, int]:
    """
    Read an HPACK integer (RFC 7541 section 5.1).

    @return: Its value and the position after it.
    @raise IndexError: If the block ends inside it.
    """
    mask = (1 << bits) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:
            raise IndexError("integer too long")


_STATIC_ENTRIES = len(HeaderTable.STATIC_TABLE)
# What a block can do to the cache.
CHANGES_TABLE = 0
STATIC_ONLY = 1
USES_DYNAMIC = 2


def classifyBlock(block: bytes) -> int:
    """
    Scan a header block's representations without decoding its strings.

    @param block: An HPACK header block.
    @return: L{CHANGES_TABLE} if it has a literal with incremental indexing
        or a table size update (or cannot be scanned: the decoder then says
        what is wrong), L{USES_DYNAMIC} if it refers to a dynamic table
        entry, else L{STATIC_ONLY}.
    """
    pos = 0
    end = len(block)
    kind = STATIC_ONLY
    try:
        while pos < end:
            byte = block[pos]
            if byte & 0x80:
                index, pos = _integer(block, pos, 7)
                if index > _STATIC_ENTRIES:
                    kind = USES_DYNAMIC
                continue
            if byte & 0xC0 == 0x40 or byte & 0xE0 == 0x20:
                return CHANGES_TABLE
            index, pos = _integer(block, pos, 4)
            if index > _STATIC_ENTRIES:
                kind = USES_DYNAMIC
            if index == 0:
                size, pos = _integer(block, pos, 7)
                pos += size
            size, pos = _integer(block, pos, 7)
            pos += size
    except IndexError:
        return CHANGES_TABLE
    if pos != end:
        return CHANGES_TABLE
    return kind


class HeaderDecoder:
    """
    One connection's HPACK decoder, with the validated header lists of the
    blocks that cannot change its dynamic table cached by their raw bytes.

    @ivar decoder: C{hpack}'s decoder (the dynamic table).
    @ivar static: Blocks that refer to the static table only.
    @ivar dynamic: Blocks that refer to the dynamic table as it is now.
    """

    def __init__(self, maxHeaderList: int) -> None:
        """
        @param maxHeaderList: The largest decoded header list allowed (HPACK
            counting, 32 bytes a field on top of its name and value).
        """
        self.decoder = Decoder(max_header_list_size=maxHeaderList)
        self.static: dict[bytes, tuple[Headers, int | None]] = {}
        self.dynamic: dict[bytes, tuple[Headers, int | None]] = {}
        self._staticBytes = 0
        self._dynamicBytes = 0

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """
        Decode a block with the real decoder (the dynamic table changes as
        it says).

        @param block: The block.
        @return: Its fields.
        @raise ConnectionError: C{ENHANCE_YOUR_CALM} past the header list
            size (an HPACK bomb), C{COMPRESSION_ERROR} for a block that
            cannot be decoded.
        """
        try:
            return list(self.decoder.decode(block, raw=True))
        except OversizedHeaderListError:
            raise ConnectionError(
                ENHANCE_YOUR_CALM, "header list larger than allowed"
            ) from None
        except (HPACKError, ValueError, IndexError) as e:
            raise ConnectionError(COMPRESSION_ERROR, f"HPACK: {e}") from None

    def request(self, block: bytes) -> tuple[Headers, int | None]:
        """
        A request's header block, decoded and validated (or found in the
        cache).

        @param block: The block.
        @return: What L{validateRequest} returns.
        @raise ConnectionError: See L{decode}.
        @raise StreamError: See L{validateRequest}.
        """
        found = self.static.get(block) or self.dynamic.get(block)
        if found is not None:
            return found
        kind = classifyBlock(block) if len(block) <= CACHE_BLOCK else CHANGES_TABLE
        headers = self.decode(block)
        if kind == CHANGES_TABLE:
            # Every dynamic index may now mean another field.
            self._forgetDynamic()
        result = validateRequest(headers)
        if kind != CHANGES_TABLE:
            cost = len(block) + sum(len(n) + len(v) + 32 for n, v in headers)
            if kind == STATIC_ONLY:
                if len(self.static) >= CACHE_ENTRIES or (
                    self._staticBytes + cost > CACHE_BYTES
                ):
                    self.static.clear()
                    self._staticBytes = 0
                if cost <= CACHE_BYTES:
                    self.static[block] = result
                    self._staticBytes += cost
            else:
                if len(self.dynamic) >= CACHE_ENTRIES or (
                    self._dynamicBytes + cost > CACHE_BYTES
                ):
                    self._forgetDynamic()
                if cost <= CACHE_BYTES:
                    self.dynamic[block] = result
                    self._dynamicBytes += cost
        return result

    def _forgetDynamic(self) -> None:
        """
        Empty the cache of blocks that refer to the dynamic table.
        """
        self.dynamic.clear()
        self._dynamicBytes = 0

    def other(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """
        Any other header block (trailers, a refused stream's): decoded only
        to keep the dynamic table in step.

        @param block: The block.
        @return: Its fields.
        @raise ConnectionError: See L{decode}.
        """
        if classifyBlock(block) == CHANGES_TABLE:
            self._forgetDynamic()
        return self.decode(block)


# HPACK encoding: static table and literals without indexing only.

_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_FULL.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)
_FIELDS: dict[tuple[bytes, bytes], bytes] = {}
_BLOCKS: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
#: Encoded fields and blocks kept (for every connection).
ENCODED_FIELDS = 4096
ENCODED_BLOCKS = 1024


def encodeInteger(value: int, bits: int, first: int = 0) -> bytes:
    """
    @param value: A non-negative integer.
    @param bits: The prefix's width.
    @param first: The bits above the prefix in the first byte.
    @return: The HPACK integer (RFC 7541 section 5.1).
    """
    mask = (1 << bits) - 1
    if value < mask:
        return bytes([first | value])
    out = [first | mask]
    value -= mask
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encodeString(value: bytes) -> bytes:
    """
    @return: An HPACK string literal, Huffman-coded when that is shorter.
    """
    coded = _HUFFMAN.encode(value)
    if len(coded) < len(value):
        return encodeInteger(len(coded), 7, 0x80) + coded
    return encodeInteger(len(value), 7) + value


def encodeField(name: bytes, value: bytes) -> bytes:
    """
    @return: One field: its static index, or a literal without indexing
        (with the static index of its name where there is one).
    """
    field = (name, value)
    encoded = _FIELDS.get(field)
    if encoded is None:
        index = _STATIC_FULL.get(field)
        if index is not None:
            encoded = encodeInteger(index, 7, 0x80)
        else:
            index = _STATIC_NAMES.get(name, 0)
            encoded = encodeInteger(index, 4)
            if not index:
                encoded += encodeString(name)
            encoded += encodeString(value)
        if len(_FIELDS) >= ENCODED_FIELDS:
            _FIELDS.clear()
        _FIELDS[field] = encoded
    return encoded


def encodeHeaders(fields: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """
    @param fields: Header fields, lowercase names.
    @return: Their header block, the same for every connection.
    """
    block = _BLOCKS.get(fields)
    if block is None:
        block = b"".join([encodeField(name, value) for name, value in fields])
        if len(_BLOCKS) >= ENCODED_BLOCKS:
            _BLOCKS.clear()
        _BLOCKS[fields] = block
    return block
