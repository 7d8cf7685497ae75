# -*- test-case-name: tests.test_logsetup -*-
"""
Tests for L{netd.logsetup}: log destinations from the configuration.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from netd import logsetup
from netd.config import parseConfig
from netd.services import serviceTypes
from netd.logsetup import LogDestinations, isJournal, journalLine

SERVICE = '[services.e]\ntype = "echo"\nlisten = ["tcp:0"]\n'


class LogSetupTestCase(SynchronousTestCase):
    """
    Destinations on a private publisher.
    """

    def destinations(self, netd: str, primary: bool = False) -> LogDestinations:
        """
        @param netd: Lines of the C{[netd]} table.
        @param primary: Whether they are twistd's observer.
        @return: Opened destinations, closed after the test.
        """
        self.publisher = LogPublisher()
        self.stdout = io.StringIO()
        destinations = LogDestinations(self.publisher, self.stdout)
        destinations.primary = primary
        destinations.configure(
            parseConfig(serviceTypes(), f"[netd]\n{netd}\n{SERVICE}", "<test>")
        )
        destinations.open()
        self.addCleanup(destinations.close)
        self.log = Logger(
            namespace="netd.test",
            observer=destinations if primary else self.publisher,
        )
        return destinations


class FileTests(LogSetupTestCase):
    """
    C{log_file}, C{log_format} and rotation.
    """

    def test_jsonFile(self) -> None:
        """
        C{log_file} with C{log_format = "json"} writes one JSON object per
        event, with the event's fields as keys.
        """
        path = os.path.abspath(self.mktemp())
        destinations = self.destinations(f'log_file = "{path}"\nlog_format = "json"')
        self.assertEqual(destinations.paths(), [path])
        self.log.info("{service} session ended", service="echo", bytesIn=5)
        with open(path) as f:
            records = [json.loads(line) for line in f]
        self.assertEqual(len(records), 1)
        self.assertEqual(records[0]["text"], "echo session ended")
        self.assertEqual((records[0]["service"], records[0]["bytesIn"]), ("echo", 5))

    def test_rotation(self) -> None:
        """
        The file is rotated past C{log_rotate_size} bytes, keeping
        C{log_rotate_keep} old files.
        """
        path = os.path.abspath(self.mktemp())
        self.destinations(
            f'log_file = "{path}"\nlog_rotate_size = 300\nlog_rotate_keep = 2'
        )
        for i in range(40):
            self.log.info("line {i} with some padding to fill the file", i=i)
        self.assertTrue(os.path.exists(path + ".1"))
        self.assertTrue(os.path.exists(path + ".2"))
        self.assertFalse(os.path.exists(path + ".3"))
        with open(path) as f:
            self.assertIn("line 39", f.read())

    def test_reopen(self) -> None:
        """
        After logrotate moved the file away, L{LogDestinations.reopen} (on
        SIGHUP) starts a new one at the configured path.
        """
        path = os.path.abspath(self.mktemp())
        destinations = self.destinations(f'log_file = "{path}"')
        self.log.info("before")
        os.rename(path, path + ".moved")
        destinations.reopen()
        self.log.info("after")
        with open(path) as f:
            text = f.read()
        self.assertIn("after", text)
        self.assertNotIn("before", text)

    def test_secondaryAddsToPublisher(self) -> None:
        """
        Outside the primary role, the destinations are added beside twistd's
        (to the global publisher) and removed when closed; with nothing
        configured, nothing is added.
        """
        path = os.path.abspath(self.mktemp())
        destinations = self.destinations(f'log_file = "{path}"')
        self.assertEqual(len(self.publisher._observers), 1)
        destinations.close()
        self.assertEqual(self.publisher._observers, [])
        self.destinations("")
        self.assertEqual(self.publisher._observers, [])

    def test_reconfigure(self) -> None:
        """
        A reload with another C{log_file} switches files.
        """
        first, second = (os.path.abspath(self.mktemp()) for _ in range(2))
        destinations = self.destinations(f'log_file = "{first}"')
        self.assertTrue(
            destinations.reconfigure(
                parseConfig(
                    serviceTypes(),
                    f'[netd]\nlog_file = "{second}"\n{SERVICE}',
                    "<test>",
                )
            )
        )
        self.log.info("to the second")
        with open(second) as f:
            self.assertIn("to the second", f.read())
        self.assertFalse(
            destinations.reconfigure(
                parseConfig(
                    serviceTypes(),
                    f'[netd]\nlog_file = "{second}"\n{SERVICE}',
                    "<test>",
                )
            )
        )

    def test_syslog(self) -> None:
        """
        C{log_syslog = true} adds a syslog observer.
        """
        emitted: list[dict[str, Any]] = []

        class FakeSyslogObserver:
            def __init__(self, prefix: str) -> None:
                self.prefix = prefix

            def emit(self, event: dict[str, Any]) -> None:
                emitted.append(event)

        from twisted.python import syslog

        self.patch(syslog, "SyslogObserver", FakeSyslogObserver)
        self.destinations("log_syslog = true")
        self.log.info("to syslog")
        self.assertEqual(len(emitted), 1)


class OpenFailureTests(SynchronousTestCase):
    """
    A log file that cannot be opened.
    """

    def test_startupStops(self) -> None:
        """
        netd stops start-up with status 78 and one line naming the key and
        the file.
        """
        from netd.daemon import NetdService

        path = os.path.join(os.path.abspath(self.mktemp()), "missing", "netd.log")
        stderr = io.StringIO()
        root = NetdService(
            parseConfig(
                serviceTypes(), f'[netd]\nlog_file = "{path}"\n{SERVICE}', "netd.toml"
            ),
            stderr=stderr,
            logs=LogDestinations(LogPublisher()),
        )
        self.addCleanup(root.stopService)
        exit = self.assertRaises(SystemExit, root.startService)
        self.assertEqual(exit.code, 78)
        self.assertEqual(
            stderr.getvalue(),
            f"netd: netd.toml: netd.log_file: cannot open {path}: "
            "No such file or directory\n",
        )


class PrimaryTests(LogSetupTestCase):
    """
    C{twistd --logger netd.logsetup.observer}.
    """

    def test_stdoutText(self) -> None:
        """
        As twistd's observer with no file, events go to standard output as
        classic text lines.
        """
        self.destinations("", primary=True)
        self.log.info("hello {who}", who="world")
        self.assertRegex(self.stdout.getvalue(), r"\[netd\.test#info\] hello world\n$")

    def test_stdoutJSON(self) -> None:
        """
        With C{log_format = "json"}, standard output gets JSON lines.
        """
        self.destinations('log_format = "json"', primary=True)
        self.log.warn("careful")
        record = json.loads(self.stdout.getvalue())
        self.assertEqual((record["text"], record["level"]), ("careful", "warn"))

    def test_fileOnly(self) -> None:
        """
        With C{log_file}, the primary observer writes only there.
        """
        path = os.path.abspath(self.mktemp())
        self.destinations(f'log_file = "{path}"', primary=True)
        self.log.info("filed")
        self.assertEqual(self.stdout.getvalue(), "")
        with open(path) as f:
            self.assertIn("filed", f.read())

    def test_factory(self) -> None:
        """
        L{logsetup.observer} makes the process's destinations primary and
        opens them.
        """
        destinations = LogDestinations(LogPublisher(), io.StringIO())
        self.patch(logsetup, "destinations", destinations)
        self.addCleanup(destinations.close)
        self.assertIs(logsetup.observer(), destinations)
        self.assertTrue(destinations.primary and destinations.isOpen)


class JournalTests(SynchronousTestCase):
    """
    Plain lines for journald.
    """

    def test_journalLine(self) -> None:
        """
        A journal line is the message with a C{<N>} syslog priority and no
        timestamp, every line of a multi-line message prefixed.
        """
        event = {"log_format": "a {x}", "x": "b", "log_level": LogLevel.error}
        self.assertEqual(journalLine(event), "<3>a b\n")
        event = {"log_format": "one\ntwo", "log_level": LogLevel.info}
        self.assertEqual(journalLine(event), "<6>one\n<6>two\n")

    def test_isJournal(self) -> None:
        """
        A stream is the journal when C{JOURNAL_STREAM} names its device and
        inode.
        """
        path = self.mktemp()
        with open(path, "w") as stream:
            info = os.fstat(stream.fileno())
            self.assertTrue(
                isJournal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
            )
            self.assertFalse(isJournal(stream, {"JOURNAL_STREAM": "1:2"}))
            self.assertFalse(isJournal(stream, {}))
        self.assertFalse(isJournal(io.StringIO(), {"JOURNAL_STREAM": "1:2"}))
