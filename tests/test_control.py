# -*- test-case-name: tests.test_control -*-
"""
Tests for L{netd.control}: the control socket and its client.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.cli import formatStatus
from netd.config import loadConfig, parseConfig
from netd.control import (
    DEFAULT_SYSTEM_PATH,
    ControlError,
    ControlFactory,
    ControlService,
    defaultControlPath,
    request,
)
from netd.daemon import NetdService
from netd.listeners import ListenError
from netd.served import ReloadResult
from netd.workers.supervisor import HeldSockets, Supervisor
from netd.services import serviceTypes


class FakeRoot:
    """
    A root service whose C{reload} applies or fails as told.

    @ivar reloads: How many times C{reload} was called.
    """

    _log = Logger()

    def __init__(self, applied: bool) -> None:
        self.applied = applied
        self.reloads = 0
        self.config = loadConfig(serviceTypes(), None)
        self.configPath = None

    def reload(self) -> defer.Deferred[ReloadResult]:
        """
        @return: A L{Deferred} of the result, failed with an error logged if
            told so.
        """
        self.reloads += 1
        if not self.applied:
            self._log.error("reload failed: services.echo.listen: bad")
            return defer.succeed(
                ReloadResult(False, "services.echo.listen: bad", self.config)
            )
        return defer.succeed(ReloadResult(True, "changed: echo", self.config))

    def status(self) -> str:
        """
        @return: A status line.
        """
        return "serving 0 services on 0 listeners"


def converse(service: ControlService, *requests: dict[str, Any]) -> list[Any]:
    """
    Send requests to a control protocol over a L{StringTransport}.

    @return: The decoded responses.
    """
    protocol = ControlFactory(service).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    for item in requests:
        protocol.dataReceived(json.dumps(item).encode() + b"\n")
    return [json.loads(line) for line in transport.value().splitlines()]


class ProtocolTests(SynchronousTestCase):
    """
    The JSON-lines protocol, in memory.
    """

    def test_reload(self) -> None:
        """
        C{reload} answers whether the reload applied and what changed, with
        the errors logged while reloading.
        """
        for ok in (True, False):
            root = FakeRoot(ok)
            (answer,) = converse(ControlService("/x", root), {"command": "reload"})
            self.assertEqual(answer["ok"], ok, answer)
            self.assertEqual(root.reloads, 1)
            if ok:
                self.assertEqual(answer["summary"], "changed: echo")
            else:
                self.assertIn("services.echo.listen: bad", answer["error"])

    def test_badRequests(self) -> None:
        """
        Unknown commands and malformed lines get an error, not a dropped
        connection.
        """
        service = ControlService("/x", FakeRoot(True))
        protocol = ControlFactory(service).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b'{"command": "explode"}\nnot json\n')
        answers = [json.loads(line) for line in transport.value().splitlines()]
        self.assertEqual(
            answers,
            [
                {"ok": False, "error": "unknown command 'explode'"},
                {"ok": False, "error": 'expected {"command": NAME}'},
            ],
        )

    def test_status(self) -> None:
        """
        C{status} of a real (unstarted) root service lists every service
        with its listeners and sessions.
        """
        root = NetdService(loadConfig(serviceTypes(), None), reactor)
        (answer,) = converse(ControlService("/x", root), {"command": "status"})
        self.assertTrue(answer["ok"])
        self.assertEqual(answer["status"], "serving 4 services on 7 listeners")
        self.assertEqual(answer["workers"], 1)
        self.assertEqual(answer["pid"], os.getpid())
        names = [s["name"] for s in answer["services"]]
        self.assertEqual(names, ["echo", "discard", "http", "chat"])
        self.assertEqual(
            answer["services"][0]["listeners"][0],
            {"listener": "tcp:10007:interface=127.0.0.1", "port": None},
        )

    def test_defaultPath(self) -> None:
        """
        Root's socket is in /run/netd; another user's in its runtime
        directory.
        """
        self.assertEqual(defaultControlPath(0, {}), DEFAULT_SYSTEM_PATH)
        self.assertEqual(
            defaultControlPath(1000, {"XDG_RUNTIME_DIR": "/run/user/1000"}),
            "/run/user/1000/netd-1000.sock",
        )


class SocketTests(TestCase):
    """
    The real UNIX socket, and the blocking client.
    """

    def setUp(self) -> None:
        # A short directory: socket paths are limited to 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="netd-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "control.sock")

    async def test_statusWithWorkers(self) -> None:
        """
        With workers, C{status} lists each worker process (index, pid,
        whether it serves) beside the services; sessions are the workers'
        own (not counted in the main process).
        """
        from tests.test_workers import ProcessReactor

        processes = ProcessReactor()
        config = parseConfig(
            serviceTypes(),
            '[netd]\nworkers = 2\n[services.e]\ntype = "echo"\n'
            'listen = ["tcp:0:interface=127.0.0.1"]\n',
            "netd.toml",
        )
        supervisor = Supervisor(processes, ["python"], {}, lambda event: None)
        served = HeldSockets(config, reactor, workers=2, supervisor=supervisor)
        root = NetdService(config, reactor, served=served)
        root.startService()
        served.serving()
        processes.spawned[0].ready()
        (answer,) = converse(ControlService("/x", root), {"command": "status"})
        self.assertEqual(answer["workers"], 2)
        self.assertIsNone(answer["sessions"])
        self.assertEqual(
            [(p["index"], p["ready"]) for p in answer["workerProcesses"]],
            [(0, True), (1, False)],
        )
        self.assertEqual(
            [p["pid"] for p in answer["workerProcesses"]],
            [spawned.transport.pid for spawned in processes.spawned],
        )
        self.assertEqual([s["name"] for s in answer["services"]], ["e"])
        self.assertIn("worker 0: pid", formatStatus(answer))
        stopped = root.stopService()
        for spawned in processes.spawned:
            spawned.end(0)
        await stopped

    async def test_roundTrip(self) -> None:
        """
        L{request} reaches a bound L{ControlService}; the socket is mode
        0600 and removed when the service stops.
        """
        service = ControlService(self.path, FakeRoot(True), reactor)
        service.startService()
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        answer = await deferToThread(request, self.path, "reload")
        self.assertEqual(answer["ok"], True)
        await service.stopService()
        self.assertFalse(os.path.exists(self.path))

    def test_staleSocketReplaced(self) -> None:
        """
        A socket file nobody answers on is replaced; one a process answers
        on is a L{ListenError} naming the path.
        """
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(self.path)
        stale.close()
        service = ControlService(self.path, FakeRoot(True), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        other = ControlService(self.path, FakeRoot(True), reactor)
        e = self.assertRaises(ListenError, other.startService)
        self.assertIn("another netd answers there", str(e))
        self.assertIn(self.path, str(e))

    def test_noDaemon(self) -> None:
        """
        With no netd, L{request} says so in words.
        """
        e = self.assertRaises(ControlError, request, self.path, "status")
        self.assertIn("no such socket (is netd running, with --control?)", str(e))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(self.path)
        stale.close()
        e = self.assertRaises(ControlError, request, self.path, "status")
        self.assertIn("nothing answers", str(e))
