# -*- test-case-name: tests.test_reactor -*-
"""
netd's reactor as a Twisted reactor plugin: C{twistd --reactor=netd}.

A dropin: every twistd run imports it, so it imports nothing from netd.
"""

from twisted.application.reactors import Reactor

netd = Reactor(
    "netd",
    "netd.reactor",
    "netd's epoll reactor: Twisted's, with a shorter path for read events.",
)
