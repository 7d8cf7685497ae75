# -*- test-case-name: tests.test_spawn -*-
"""
Starting programs for C{exec} services.

netd never forks its own (large, reactor-running) process per connection.
Each C{exec} service has a small spawner: a process forked from netd
before it drops root (L{netd.spawn.client.Spawner}), which switches at once
to the service's own user (so nothing stays root unless the service's user
is root, C{allow_root = true}), and then does only this, in
L{netd.spawn.helper}: receive a connection's socket and a stderr socket
over a C{SOCK_SEQPACKET} socketpair (C{SCM_RIGHTS}), fork, set the
resource limits, priority, working directory, clean environment and
descriptors, C{execve} the one program its configuration names, and report
the child's pid and, later, its exit status. netd asks it to signal its
children (max duration, drain). It takes no program, user or environment
from netd at run time: they are fixed when it is forked.
"""
