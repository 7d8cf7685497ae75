# -*- test-case-name: tests.test_http -*-
"""
netd's static-file server: HTTP/1.1, and HTTP/2 over TLS (ALPN) or with
prior knowledge; one request model and one answer, two framings.

The modules, from the wire inwards:

    - L{netd.http.protocol}: L{HTTPConnection<netd.http.protocol.HTTPConnection>},
      a Twisted protocol around the C{httptools} (llhttp) parser: framing,
      limits, timeouts, keep-alive, pipelining, flow control; it hands the
      connection to HTTP/2 when ALPN chose C{h2} (or an h2c preface came).
    - L{netd.http.h2}: L{HTTP2Connection<netd.http.h2.HTTP2Connection>},
      HTTP/2 framing on the sans-I/O C{h2} library: streams, flow-control
      windows, the HTTP/2 attack limits.
    - L{netd.http.request}: the request model both framings fill, and the
      header-field limits.
    - L{netd.http.answer}: what to answer, whatever the framing (status
      endpoint, lookup, preconditions, ranges, opening the file).
    - L{netd.http.server}: L{HTTPFactory<netd.http.server.HTTPFactory>},
      the state the connections share (clock, date header, access log,
      status page).
    - L{netd.http.files}: the document root: safe path resolution, cached
      file metadata and small-file bodies, MIME types, directory listings.
    - L{netd.http.responses}: status lines, pre-built error responses,
      HTTP dates, conditional requests and byte ranges.
    - L{netd.http.paths}: request targets to path segments, refusing
      everything that could name something outside the root.
    - L{netd.http.accesslog}: Combined Log Format lines and structured events.
    - L{netd.http.mount}: handing a connection over to C{twisted.web} for a
      mounted resource (the chat service's browser front end).

L{netd.services.http} turns a C{type = "http"} configuration into all of this.
"""
