# -*- test-case-name: tests.test_workers,tests.test_worker -*-
"""
The channel between the main process and its workers: both sides of the
fork use this module (L{netd.workers.supervisor} in the main process,
L{netd.workers.child} in a worker).

Pipes between the main process and worker I{i}::

    worker fd 0  <- main   control: one JSON line with the configuration,
                           then commands (C{"command": "reload"}); EOF: the
                           main process is gone, drain and exit
    worker fd 1  -> main   standard output, logged by the main process
    worker fd 2  -> main   standard error (a crash's traceback), logged
    worker fd 3  -> main   log events as JSON lines (L{eventAsJSON}), and
                           the worker's messages: C{{"netdWorker": "ready"}}
                           once its ports are adopted, C{{"netdWorker":
                           "reloaded", "applied": ..., "summary": ...}}
                           after each reload command
    worker fd 4+           the listening sockets, then the descriptors held for
                           its services (an exec service's spawner door)

JSON lines, not AMP (as C{twisted.trial._dist} uses): the configuration
travels as its TOML text, which can exceed AMP's 64 KiB value limit, and
the event pipe is written synchronously, so that a worker that crashes
still delivers its last log events; both would need framing of their own
on top of AMP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

CONTROL_FD = 0
EVENTS_FD = 3
FIRST_SOCKET_FD = 4

# Lines longer than this are cut (a worker that writes without newlines).
MAX_LINE = 16 * 1024 * 1024

_MESSAGE_PREFIX = b'{"netdWorker"'


def encodeMessage(record: Mapping[str, Any]) -> bytes:
    """
    @param record: A message: the configuration, a command, or a worker's
        report.
    @return: It, as one JSON line.
    """
    return json.dumps(record).encode("utf-8") + b"\n"


def readyMessage(index: int, pid: int) -> dict[str, Any]:
    """
    @param index: The worker's index.
    @param pid: Its process id.
    @return: The message a worker sends once it serves its sockets.
    """
    return {"netdWorker": "ready", "index": index, "pid": pid}


def reloadedMessage(applied: bool, summary: str) -> dict[str, Any]:
    """
    @param applied: Whether the worker now serves the new configuration.
    @param summary: What changed, or why it failed.
    @return: The message a worker sends after a reload command.
    """
    return {"netdWorker": "reloaded", "applied": applied, "summary": summary}


def workerMessage(line: bytes) -> dict[str, Any] | None:
    """
    Tell a worker's own message from a log event on the event pipe.

    @param line: One line from the pipe, without its newline.
    @return: The message (its C{netdWorker} key says which), or L{None} if
        the line is not one.
    """
    if not line.startswith(_MESSAGE_PREFIX):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def readHeader(fd: int) -> tuple[dict[str, Any] | None, bytes]:
    """
    Read the first line of the control pipe (blocking, in a worker before
    its reactor runs): the worker's configuration.

    @param fd: The pipe.
    @return: The decoded line (L{None} if the pipe closed first), and the
        bytes read after it.
    """
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return None, b""
        data += chunk
    line, rest = data.split(b"\n", 1)
    header = json.loads(line)
    return (header if isinstance(header, dict) else None), rest
