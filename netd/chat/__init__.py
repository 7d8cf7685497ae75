# -*- test-case-name: tests.test_chat -*-
"""
The chat service: rooms shared by TCP, TLS, UDP and WebSocket clients.

  - L{netd.chat.text}: sanitising user text, normalising nicknames and room
    names;
  - L{netd.chat.hub}: the rooms, behind the L{IChatHub<netd.chat.hub.IChatHub>}
    interface, and the in-process default;
  - L{netd.chat.commands}: what one client may say and do, whatever carries
    its lines (the commands, flood control, notices, log events);
  - L{netd.chat.tcp}, L{netd.chat.udp} and L{netd.chat.web}: the front ends
    (line protocol, datagrams, browser page and WebSocket).

The front ends talk to the rooms only through the hub, so that a shared
backend can replace the in-process one without touching them.
"""
