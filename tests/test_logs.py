# -*- test-case-name: tests.test_logs -*-
"""
Tests for L{netd.logs}.
"""

from __future__ import annotations

import io
import json

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netd import logs


class JSONObserverTests(SynchronousTestCase):
    """
    Tests for the JSON-lines observer.
    """

    def test_oneObjectPerEventWithItsFields(self) -> None:
        """
        Each event becomes one line holding one JSON object whose keys are
        the event's fields, plus time, level, namespace and the text.
        """
        stream = io.StringIO()
        log = Logger(namespace="netd.test", observer=logs.jsonObserver(stream))
        log.info(
            "{service} session from {peer} ended after {duration:.3f}s",
            service="echo",
            peer="127.0.0.1:4000",
            duration=1.5,
            bytesIn=10,
        )
        log.warn("second {n}", n=2)
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        record = json.loads(lines[0])
        self.assertEqual(record["service"], "echo")
        self.assertEqual(record["peer"], "127.0.0.1:4000")
        self.assertEqual(record["duration"], 1.5)
        self.assertEqual(record["bytesIn"], 10)
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "netd.test")
        self.assertEqual(
            record["text"], "echo session from 127.0.0.1:4000 ended after 1.500s"
        )
        self.assertTrue(record["time"].endswith("+00:00"))
        self.assertEqual(json.loads(lines[1])["level"], "warn")
        self.assertNotIn("log_format", record)

    def test_unserialisableFieldsBecomeText(self) -> None:
        """
        A field JSON cannot hold is written as its C{str}, never dropping
        the event.
        """
        stream = io.StringIO()
        log = Logger(observer=logs.jsonObserver(stream))
        log.info("x", thing=object, nested={"a": (1, {2})})
        record = json.loads(stream.getvalue())
        self.assertEqual(record["thing"], str(object))
        self.assertEqual(record["nested"], {"a": [1, str({2})]})

    def test_failureHasTraceback(self) -> None:
        """
        An event logged with C{log.failure} carries its traceback.
        """
        stream = io.StringIO()
        log = Logger(observer=logs.jsonObserver(stream))
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("boom")
        record = json.loads(stream.getvalue())
        self.assertEqual(record["level"], "critical")
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_factory(self) -> None:
        """
        C{netd.logs.json}, the name given to twistd's C{--logger}, is a
        callable returning an observer.
        """
        self.assertTrue(callable(logs.json()))
