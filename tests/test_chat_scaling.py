# -*- test-case-name: tests.test_chat_scaling -*-
"""
Tests for how a chat service's hub decides where it runs: with the
in-process hub, in worker 0 only; with a Redis hub, in every worker; and
what C{--check} says; the C{hub*} settings' checks; the hub a service
builds.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from netd.chat.commands import ChatServer, ChatSettings
from netd.chat.redishub import RedisHub
from netd.config import parseConfig
from netd.services import serviceTypes
from netd.services.chat import buildHub
from netd.workers.plan import perProcessServices, workerSockets
from tests.test_tap import OptionsTestCase

CONFIG = """
[netd]
workers = 2
[services.chat]
type = "chat"
listen = ["tcp:10023:interface=127.0.0.1"]
{hub}
[services.web]
type = "http"
listen = ["tcp:8080:interface=127.0.0.1"]
chat = "chat"
"""


class PlacementTests(OptionsTestCase):
    """
    Where a chat service runs with workers.
    """

    def test_localHubPinned(self) -> None:
        """
        Without C{hub}, the chat service and the http service mounting it
        run in worker 0 only, and C{--check} says so.
        """
        config = parseConfig(serviceTypes(), CONFIG.format(hub=""), "x")
        self.assertEqual(perProcessServices(config), {"chat", "web"})
        self.assertEqual(workerSockets(config, 2)[1], [])
        path = self.writeConfig(CONFIG.format(hub=""))
        code, options = self.exit("--check", "--allow-root", "--config", path)
        self.assertEqual(code, 0)
        self.assertIn(
            "  chat (chat): tcp:10023:interface=127.0.0.1 "
            "[worker 0 only: its state lives in one process]\n",
            options.stdout.getvalue(),
        )

    def test_redisHubEveryWorker(self) -> None:
        """
        With a Redis C{hub}, both run in every worker, and C{--check} says
        so.
        """
        text = CONFIG.format(hub='hub = "redis://127.0.0.1:6379/0"')
        config = parseConfig(serviceTypes(), text, "x")
        self.assertEqual(perProcessServices(config), frozenset())
        self.assertEqual(
            [name for name, _, _ in workerSockets(config, 2)[1]], ["chat", "web"]
        )
        code, options = self.exit(
            "--check", "--allow-root", "--config", self.writeConfig(text)
        )
        self.assertEqual(code, 0)
        self.assertIn(
            "  chat (chat): tcp:10023:interface=127.0.0.1 [every worker]\n",
            options.stdout.getvalue(),
        )


class SettingsTests(OptionsTestCase):
    """
    The C{hub*} keys.
    """

    def problems(self, lines: str) -> str:
        path = self.writeConfig(CONFIG.format(hub=lines))
        code, options = self.exit("--check", "--allow-root", "--config", path)
        self.assertEqual(code, 78)
        return options.stderr.getvalue()

    def test_passwordInUrl(self) -> None:
        """
        A password in the URL is refused, pointing at C{hub_password_file}.
        """
        text = self.problems('hub = "redis://:secret@127.0.0.1/0"')
        self.assertIn("services.chat.hub", text)
        self.assertIn("hub_password_file", text)
        self.assertNotIn("secret", text)

    def test_badUrl(self) -> None:
        """
        Another scheme is refused, naming the key.
        """
        self.assertIn("services.chat.hub", self.problems('hub = "http://x"'))

    def test_passwordFileMissing(self) -> None:
        """
        An unreadable C{hub_password_file} is refused, naming the key.
        """
        text = self.problems(
            'hub = "redis://127.0.0.1/0"\nhub_password_file = "/nonexistent/pw"'
        )
        self.assertIn("services.chat.hub_password_file", text)

    def test_prefix(self) -> None:
        """
        A prefix with key syntax in it is refused.
        """
        self.assertIn("services.chat.hub_prefix", self.problems('hub_prefix = "a*b"'))


class BuildHubTests(OptionsTestCase):
    """
    L{buildHub}.
    """

    def test_local(self) -> None:
        """
        Without C{hub}: none (the in-process default).
        """
        self.assertIsNone(buildHub("chat", ChatSettings(), MemoryReactor()))

    def test_redis(self) -> None:
        """
        With C{hub}: a L{RedisHub} with the password read from its file,
        started when the reactor runs and stopped before it shuts down
        (nothing connects while the service is built).
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("pw\n")
        os.chmod(path, 0o600)
        reactor = MemoryReactor()
        hub = buildHub(
            "chat",
            ChatSettings(hub="redis://127.0.0.1:6390/1", hubPasswordFile=path),
            reactor,
        )
        assert isinstance(hub, RedisHub)
        self.assertEqual(hub.commands.password, "pw")
        self.assertEqual(hub.address.db, 1)
        self.assertEqual(reactor.tcpClients, [])
        self.assertFalse(hub.started)
        self.assertEqual(
            [c for c, _, _ in reactor.triggers["before"]["shutdown"]], [hub.stop]
        )
        self.assertEqual([c for c, _, _ in reactor.whenRunningHooks], [hub.start])


class MemberIdTests(SynchronousTestCase):
    """
    Member ids stay unique across processes sharing a hub.
    """

    def test_samePidDifferentIds(self) -> None:
        """
        Two chat servers in processes with the same pid (two hosts, two
        containers) hand out different member ids.
        """
        self.patch(os, "getpid", lambda: 7)
        first = ChatServer("chat", ChatSettings(), Clock())
        second = ChatServer("chat", ChatSettings(), Clock())
        self.assertTrue(first.newMemberId().startswith("7."))
        self.assertNotEqual(
            first.newMemberId().split(".")[1], second.newMemberId().split(".")[1]
        )
