# -*- test-case-name: tests.test_h2frames -*-
"""
Tests for L{netd.http.h2frames}: HTTP/2 frames, windows, request header
validation, and HPACK (the decoder's cache, the stateless encoder), checked
against C{hpack} and C{hyperframe} as independent implementations.
"""

from __future__ import annotations

from hpack import Decoder, Encoder
from twisted.trial.unittest import SynchronousTestCase

from netd.http import h2frames
from netd.http.h2frames import (
    CHANGES_TABLE,
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    STATIC_ONLY,
    STREAM_CLOSED,
    USES_DYNAMIC,
    ConnectionError,
    HeaderDecoder,
    Stream,
    StreamError,
    classifyBlock,
    encodeHeaders,
    encodeInteger,
    headerFragment,
    goawayFrame,
    headersFrames,
    parseSettings,
    pingAck,
    rstStreamFrame,
    settingsFrame,
    splitFrames,
    stripPadding,
    validateRequest,
    windowUpdateFrame,
)
from tests.httpsupport import frames

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"localhost"),
    (b":path", b"/small.html"),
    (b"user-agent", b"test"),
]


class SerialiseTests(SynchronousTestCase):
    """
    The frames netd sends, as another implementation reads them.
    """

    def test_control(self) -> None:
        """
        C{SETTINGS}, C{PING ACK}, C{GOAWAY}, C{RST_STREAM} and
        C{WINDOW_UPDATE} carry what they were made with.
        """
        settings, ping, goaway, rst, window = frames(
            settingsFrame({0x3: 100, 0x6: 9000})
            + pingAck(b"12345678")
            + goawayFrame(7, PROTOCOL_ERROR)
            + rstStreamFrame(5, STREAM_CLOSED)
            + windowUpdateFrame(3, 2**31 - 1)
        )
        self.assertEqual(settings.settings, {0x3: 100, 0x6: 9000})
        self.assertEqual((ping.opaque_data, "ACK" in ping.flags), (b"12345678", True))
        self.assertEqual((goaway.last_stream_id, goaway.error_code), (7, 1))
        self.assertEqual((rst.stream_id, rst.error_code), (5, STREAM_CLOSED))
        self.assertEqual((window.stream_id, window.window_increment), (3, 2**31 - 1))

    def test_longHeaderBlock(self) -> None:
        """
        A header block larger than the peer's maximum frame size goes as
        C{HEADERS} and C{CONTINUATION} frames, C{END_HEADERS} on the last
        only, C{END_STREAM} on the first only.
        """
        block = bytes(range(256)) * 150
        sent = frames(b"".join(headersFrames(1, block, True, 16384)))
        self.assertEqual([f.type for f in sent], [0x1, 0x9, 0x9])
        self.assertEqual(b"".join(f.data for f in sent), block)
        self.assertEqual(
            [sorted(f.flags) for f in sent],
            [["END_STREAM"], [], ["END_HEADERS"]],
        )
        [single] = frames(b"".join(headersFrames(3, b"abc", False, 16384)))
        self.assertEqual(sorted(single.flags), ["END_HEADERS"])


class ParseTests(SynchronousTestCase):
    """
    Checks on what the peer sends.
    """

    def test_settings(self) -> None:
        """
        A C{SETTINGS} payload is read as pairs in order; a length that is
        not a multiple of 6 is C{FRAME_SIZE_ERROR}.
        """
        self.assertEqual(
            parseSettings(settingsFrame({0x4: 1000, 0x1: 0})[9:]),
            [(0x4, 1000), (0x1, 0)],
        )
        with self.assertRaises(ConnectionError) as e:
            parseSettings(b"\x00" * 7)
        self.assertEqual(e.exception.code, FRAME_SIZE_ERROR)

    def test_splitFrames(self) -> None:
        """
        Bytes are cut into whole frames (the stream's reserved bit dropped);
        an incomplete last frame is left over.
        """
        data = pingAck(b"12345678") + b"\x00\x00\x04\x08\x00\x80\x00\x00\x03abcd"
        found, rest = splitFrames(data + windowUpdateFrame(1, 5)[:7])
        self.assertEqual(found, [(0x6, 0x1, 0, b"12345678"), (0x8, 0x0, 3, b"abcd")])
        self.assertEqual(rest, windowUpdateFrame(1, 5)[:7])

    def test_headerFragment(self) -> None:
        """
        A C{HEADERS} frame's fragment is its payload without padding and
        priority; a C{CONTINUATION}'s is all of it.
        """
        self.assertEqual(headerFragment(0x1, 0x8 | 0x20, b"\x02PPPPPblockXX"), b"block")
        self.assertEqual(headerFragment(0x9, 0x8, b"\x02abc"), b"\x02abc")
        with self.assertRaises(ConnectionError) as e:
            headerFragment(0x1, 0x20, b"abc")
        self.assertEqual(e.exception.code, FRAME_SIZE_ERROR)

    def test_padding(self) -> None:
        """
        Padding is removed when C{PADDED} is set; padding as long as the
        frame or longer is C{PROTOCOL_ERROR}, as is a padded frame without
        its pad length.
        """
        self.assertEqual(stripPadding(b"\x03dataPPP", 0x8), b"data")
        self.assertEqual(stripPadding(b"\x00data", 0x8), b"data")
        self.assertEqual(stripPadding(b"\x03data", 0x0), b"\x03data")
        for bad in (b"\x04abc", b"\x09ab", b""):
            with self.assertRaises(ConnectionError) as e:
                stripPadding(bad, 0x8)
            self.assertEqual(e.exception.code, PROTOCOL_ERROR)


class StreamTests(SynchronousTestCase):
    """
    L{Stream}: one stream's windows and request body accounting.
    """

    def test_windowOverflow(self) -> None:
        """
        A send window may reach 2^31-1 but not pass it.
        """
        stream = Stream(1, 65535, 65535, False, None)
        stream.windowUpdate(2**31 - 1 - 65535)
        self.assertEqual(stream.sendWindow, 2**31 - 1)
        with self.assertRaises(StreamError) as e:
            stream.windowUpdate(1)
        self.assertEqual(e.exception.code, FLOW_CONTROL_ERROR)

    def test_receiveWindow(self) -> None:
        """
        DATA beyond the stream's receive window is C{FLOW_CONTROL_ERROR}.
        """
        stream = Stream(1, 65535, 100, False, None)
        stream.receiveData(100, 100, False)
        with self.assertRaises(StreamError) as e:
            stream.receiveData(1, 1, False)
        self.assertEqual(e.exception.code, FLOW_CONTROL_ERROR)

    def test_afterEnd(self) -> None:
        """
        DATA after C{END_STREAM} is C{STREAM_CLOSED}.
        """
        stream = Stream(1, 65535, 65535, False, None)
        stream.receiveData(5, 5, True)
        self.assertTrue(stream.remoteClosed)
        with self.assertRaises(StreamError) as e:
            stream.receiveData(1, 1, False)
        self.assertEqual(e.exception.code, STREAM_CLOSED)

    def test_contentLength(self) -> None:
        """
        DATA longer than C{content-length}, or ending short of it, is
        C{PROTOCOL_ERROR}; padding is not body.
        """
        exact = Stream(1, 65535, 65535, False, 10)
        exact.receiveData(20, 10, True)
        long = Stream(3, 65535, 65535, False, 10)
        with self.assertRaises(StreamError) as e:
            long.receiveData(11, 11, False)
        self.assertEqual(e.exception.code, PROTOCOL_ERROR)
        short = Stream(5, 65535, 65535, False, 10)
        with self.assertRaises(StreamError):
            short.receiveData(9, 9, True)


class ValidateTests(SynchronousTestCase):
    """
    L{validateRequest}: RFC 9113 sections 8.2 and 8.3.
    """

    def assertMalformed(self, headers: list[tuple[bytes, bytes]]) -> None:
        """
        @param headers: A request's fields that must be refused.
        """
        with self.assertRaises(StreamError) as e:
            validateRequest(headers)
        self.assertEqual(e.exception.code, PROTOCOL_ERROR, headers)

    def test_valid(self) -> None:
        """
        A well-formed request passes, with its C{content-length}.
        """
        self.assertEqual(validateRequest(REQUEST), (tuple(REQUEST), None))
        fields = REQUEST + [(b"content-length", b"12"), (b"te", b"trailers")]
        self.assertEqual(validateRequest(fields)[1], 12)
        self.assertEqual(validateRequest(REQUEST + [(b"host", b"localhost")])[1], None)

    def test_names(self) -> None:
        """
        Uppercase, empty, whitespace, control bytes, bytes above 0x7e and a
        colon inside a regular name are malformed.
        """
        for name in (b"User-Agent", b"", b"x y", b"x\x01", b"x\xff", b"a:b"):
            self.assertMalformed(REQUEST + [(name, b"v")])

    def test_values(self) -> None:
        """
        NUL, CR and LF in a value, or whitespace at either end, are
        malformed; inside, whitespace is fine.
        """
        for value in (b"a\x00b", b"a\rb", b"a\nb", b" a", b"a\t"):
            self.assertMalformed(REQUEST + [(b"x-v", value)])
        validateRequest(REQUEST + [(b"x-v", b"a b\tc")])

    def test_pseudoHeaders(self) -> None:
        """
        A pseudo-header field after a regular one, repeated, unknown or a
        response's, a missing C{:method}, C{:scheme} or C{:path}, and an
        empty C{:path} are malformed.
        """
        self.assertMalformed(REQUEST[:3] + [(b"x", b"1"), REQUEST[3]])
        self.assertMalformed(REQUEST + [(b":path", b"/again")][:1] + REQUEST[3:4])
        self.assertMalformed([(b":status", b"200")] + REQUEST)
        self.assertMalformed([(b":protocol", b"websocket")] + REQUEST)
        for missing in range(4):
            if missing == 2:
                continue  # :authority is optional
            self.assertMalformed(REQUEST[:missing] + REQUEST[missing + 1 :])
        self.assertMalformed(REQUEST[:3] + [(b":path", b"")])

    def test_connect(self) -> None:
        """
        C{CONNECT} has C{:method} and C{:authority} only.
        """
        connect = [(b":method", b"CONNECT"), (b":authority", b"example:443")]
        validateRequest(connect)
        self.assertMalformed(connect + [(b":path", b"/")])
        self.assertMalformed(connect[:1])

    def test_connectionSpecific(self) -> None:
        """
        Connection-specific fields, and C{te} other than C{trailers}, are
        malformed.
        """
        for name in (
            b"connection",
            b"keep-alive",
            b"proxy-connection",
            b"transfer-encoding",
            b"upgrade",
        ):
            self.assertMalformed(REQUEST + [(name, b"x")])
        self.assertMalformed(REQUEST + [(b"te", b"gzip")])

    def test_hostAuthority(self) -> None:
        """
        A C{host} that differs from C{:authority} is malformed.
        """
        self.assertMalformed(REQUEST + [(b"host", b"elsewhere")])


class ClassifyTests(SynchronousTestCase):
    """
    L{classifyBlock}: whether a block can change the dynamic table.
    """

    def test_kinds(self) -> None:
        """
        A block of static indices is L{STATIC_ONLY}; a fully indexed block
        naming dynamic entries L{USES_DYNAMIC}; the first block of an
        encoder that indexes, or one with a size update, L{CHANGES_TABLE};
        so is a truncated block.
        """
        encoder = Encoder()
        first = encoder.encode(REQUEST)
        again = encoder.encode(REQUEST)
        self.assertEqual(classifyBlock(first), CHANGES_TABLE)
        self.assertEqual(classifyBlock(again), USES_DYNAMIC)
        self.assertEqual(classifyBlock(b"\x82\x87\x84"), STATIC_ONLY)
        self.assertEqual(classifyBlock(b"\x20\x82"), CHANGES_TABLE)
        self.assertEqual(classifyBlock(first[:-1]), CHANGES_TABLE)
        # Literals without indexing and never indexed do not change it.
        self.assertEqual(
            classifyBlock(b"\x82\x04\x01/" + b"\x10\x01x\x01y"), STATIC_ONLY
        )


class HeaderDecoderTests(SynchronousTestCase):
    """
    L{HeaderDecoder}: C{hpack}'s decoder with a cache of validated header
    lists, which must never give a stale answer.
    """

    def test_cached(self) -> None:
        """
        A block that cannot change the table is decoded once: the second
        time it is answered from the cache, without the decoder.
        """
        encoder = Encoder()
        decoder = HeaderDecoder(65536)
        decoder.request(encoder.encode(REQUEST))
        again = encoder.encode(REQUEST)
        first = decoder.request(again)
        self.assertEqual(first, (tuple(REQUEST), None))
        self.patch(decoder.decoder, "decode", None)
        self.assertIs(decoder.request(again), first)

    def test_tableChangeInvalidates(self) -> None:
        """
        Once a block inserts into the dynamic table, the same bytes as a
        cached block that named dynamic entries mean other fields: they
        are decoded again, and the answer is the new one; a block of static
        indices stays cached.
        """
        encoder = Encoder()
        decoder = HeaderDecoder(65536)
        decoder.request(encoder.encode(REQUEST))
        indexed = encoder.encode(REQUEST)
        static = b"\x82\x87\x84\x41\x09localhost"[:3] + b"\x01\x09localhost"
        self.assertEqual(decoder.request(indexed)[0][4], (b"user-agent", b"test"))
        self.assertEqual(decoder.request(static)[0][3], (b":authority", b"localhost"))
        # A new field inserted at index 62 shifts every dynamic index by one.
        other = REQUEST[:4] + [(b"user-agent", b"other")]
        decoder.request(encoder.encode(other))
        self.assertEqual(decoder.dynamic, {})
        self.assertIn(static, decoder.static)
        # The old bytes now name what the table holds now.
        reference = Decoder()
        reference.decode(Encoder().encode(REQUEST))
        replay = Encoder()
        replay.encode(REQUEST)
        reference.decode(replay.encode(other))
        now = list(decoder.request(indexed)[0])
        self.assertEqual(now, [tuple(f) for f in reference.decode(indexed, raw=True)])
        self.assertIn((b"user-agent", b"other"), now)

    def test_resizeInvalidates(self) -> None:
        """
        A dynamic table size update empties the dynamic part of the cache:
        a block naming evicted entries is then an error, not a stale hit.
        """
        encoder = Encoder()
        decoder = HeaderDecoder(65536)
        decoder.request(encoder.encode(REQUEST))
        indexed = encoder.encode(REQUEST)
        decoder.request(indexed)
        self.assertIn(indexed, decoder.dynamic)
        # Size 0 evicts everything, then the request again in static form.
        decoder.request(b"\x20" + b"\x82\x87\x84\x01\x09localhost")
        self.assertEqual(decoder.dynamic, {})
        with self.assertRaises(ConnectionError) as e:
            decoder.request(indexed)
        self.assertEqual(e.exception.code, COMPRESSION_ERROR)

    def test_invalidNotCached(self) -> None:
        """
        A malformed request is refused each time, never cached.
        """
        block = Encoder().encode(REQUEST[:3], huffman=False)
        decoder = HeaderDecoder(65536)
        for _ in range(2):
            with self.assertRaises(StreamError):
                decoder.request(block)
        self.assertEqual((decoder.static, decoder.dynamic), ({}, {}))

    def test_bounded(self) -> None:
        """
        Each cache holds at most L{h2frames.CACHE_ENTRIES} blocks, and at
        most L{h2frames.CACHE_BYTES} bytes of blocks and fields, however
        large the blocks a client sends.
        """
        decoder = HeaderDecoder(65536)
        for i in range(h2frames.CACHE_ENTRIES * 2 + 3):
            path = b"/%d" % i
            block = b"\x82\x87\x04" + encodeInteger(len(path), 7) + path
            decoder.request(block)
            self.assertLessEqual(len(decoder.static), h2frames.CACHE_ENTRIES)
        decoder = HeaderDecoder(65536)
        for i in range(50):
            path = b"/%04d" % i + b"x" * 1000
            block = b"\x82\x87\x04" + encodeInteger(len(path), 7) + path
            decoder.request(block)
            held = sum(
                len(b) + sum(len(n) + len(v) + 32 for n, v in fields)
                for b, (fields, _) in decoder.static.items()
            )
            self.assertLessEqual(held, h2frames.CACHE_BYTES)
            self.assertIn(block, decoder.static)

    def test_errors(self) -> None:
        """
        A header list past the limit is C{ENHANCE_YOUR_CALM}; bytes that are
        not HPACK are C{COMPRESSION_ERROR}.
        """
        bomb = Encoder().encode(REQUEST + [(b"x-big", b"a" * 2000)])
        with self.assertRaises(ConnectionError) as e:
            HeaderDecoder(1000).request(bomb)
        self.assertEqual(e.exception.code, ENHANCE_YOUR_CALM)
        for junk in (b"\xff\xff\xff\xff\xff\xff", b"\xbf"):
            with self.assertRaises(ConnectionError) as e:
                HeaderDecoder(1000).request(junk)
            self.assertEqual(e.exception.code, COMPRESSION_ERROR)


class EncoderTests(SynchronousTestCase):
    """
    L{encodeHeaders}: static indices and literals without indexing.
    """

    FIELDS = (
        (b":status", b"200"),
        (b"date", b"Mon, 07 Dec 2026 12:00:00 GMT"),
        (b"server", b"netd"),
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"1000"),
        (b"x-custom", b"value"),
        (b":status", b"418"),
    )

    def test_decodes(self) -> None:
        """
        C{hpack}'s decoder reads the fields back, and its dynamic table
        stays empty: the block does not depend on the connection.
        """
        decoder = Decoder()
        block = encodeHeaders(self.FIELDS)
        self.assertEqual(
            [tuple(f) for f in decoder.decode(block, raw=True)], list(self.FIELDS)
        )
        self.assertEqual(len(decoder.header_table.dynamic_entries), 0)
        self.assertEqual(block[:1], b"\x88")  # :status 200 is static index 8

    def test_cachedPerTuple(self) -> None:
        """
        The same fields give the same bytes object (cached for every
        connection); other fields other bytes.
        """
        self.assertIs(encodeHeaders(self.FIELDS), encodeHeaders(self.FIELDS))
        self.assertNotEqual(encodeHeaders(self.FIELDS), encodeHeaders(self.FIELDS[:-1]))

    def test_integers(self) -> None:
        """
        Integers past their prefix continue in 7-bit groups (RFC 7541
        appendix C.1).
        """
        self.assertEqual(encodeInteger(10, 5), b"\x0a")
        self.assertEqual(encodeInteger(1337, 5), b"\x1f\x9a\x0a")
        self.assertEqual(encodeInteger(42, 8), b"\x2a")


class RuntimeDependencyTests(SynchronousTestCase):
    """
    netd's HTTP/2 needs C{hpack} only: C{h2} is a test dependency.
    """

    def test_noH2Import(self) -> None:
        """
        With C{h2} and C{hyperframe} unimportable (a Debian package or a
        fresh install has neither), the http service, its HTTP/2
        connection and the probe import, and the HTTP/2 core encodes and
        decodes a request. (Twisted's own C{twisted.web.http} imports C{h2}
        when it is there, and goes on without it.)
        """
        import subprocess
        import sys

        code = (
            "import sys\n"
            "sys.modules['h2'] = sys.modules['hyperframe'] = None\n"
            "import netd.services.http, netd.http.h2, netd.http.protocol\n"
            "from netd.http.h2frames import HeaderDecoder, encodeHeaders\n"
            "fields = ((b':method', b'GET'), (b':scheme', b'https'),"
            " (b':path', b'/'))\n"
            "print(HeaderDecoder(4096).request(encodeHeaders(fields))[0] == fields)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((done.returncode, done.stdout), (0, "True\n"), done.stderr)
