# -*- test-case-name: tests.test_http -*-
"""
netd's HTTP/1.1 static-file server.

The modules, from the wire inwards:

    - L{netd.http.protocol}: L{HTTPConnection<netd.http.protocol.HTTPConnection>},
      a Twisted protocol around the C{httptools} (llhttp) parser: framing,
      limits, timeouts, keep-alive, pipelining, flow control; and
      L{HTTPFactory<netd.http.protocol.HTTPFactory>}, the state its
      connections share (clock, date header, access log, status page).
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
