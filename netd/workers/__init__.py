# -*- test-case-name: tests.test_workers,tests.test_worker,tests.test_workers_e2e -*-
"""
Worker processes, for C{workers = N} (N > 1, or C{"auto"}) in C{[netd]}.

The main process binds every listener exactly as a single netd does (as
root if needed, or adopting the sockets systemd passed), but does not serve
them: it holds them. twistd then drops privileges, and the main process
starts N worker processes that inherit the sockets, so they start
unprivileged (and with C{PR_SET_NO_NEW_PRIVS}); each serves the
configuration the main process validated on the sockets it was given.

The modules, by the side of the fork they run on:

    - L{netd.workers.plan} (main process): which worker serves which
      listener, on which socket;
    - L{netd.workers.control} (both): the pipes and the messages on them;
    - L{netd.workers.supervisor} (main process): starting, watching,
      restarting and reloading the workers (L{Supervisor}), and the sockets
      held for them (L{HeldSockets});
    - L{netd.workers.child} (a worker, C{python -P -m netd.workers.child}):
      adopting the sockets, serving, reloading and stopping on the main
      process's word.
"""
