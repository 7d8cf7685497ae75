# -*- test-case-name: tests -*-
"""
netd: a multi-service network daemon built on Twisted.

Run it as C{twistd netd}; see L{netd.tap} for the command line and
L{netd.config} for the configuration file.
"""

__version__ = "0.1.0"
