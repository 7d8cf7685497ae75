# -*- test-case-name: tests.test_readme -*-
"""
The README's quick start and its "in another terminal" commands, run as
written (parsed out of C{README.md}, so they cannot drift) on a fresh
virtualenv in a copy of the tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from netd.control import answers, defaultControlPath
from tests.test_endtoend import REPO, isFree

IGNORED = shutil.ignore_patterns(
    ".venv",
    ".git",
    "_trial_temp*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".hypothesis",
    "dropin.cache",
)


def shellBlocks(markdown: str) -> dict[str, list[str]]:
    """
    @param markdown: The README.
    @return: The commands of each C{```sh} block, by the text just before
        it (its introducing paragraph's last line), without comments.
    """
    blocks: dict[str, list[str]] = {}
    for match in re.finditer(r"([^\n]*)\n\n```sh\n(.*?)```", markdown, re.S):
        commands = []
        for line in match.group(2).splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
        blocks[match.group(1)] = commands
    return blocks


def readmeBlocks() -> tuple[list[str], list[str], list[str]]:
    """
    @return: The quick start, the test command and the commands "in
        another terminal".
    """
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = shellBlocks(f.read())
    quick = next(v for k, v in blocks.items() if "with only Python" in k)
    tests = next(v for k, v in blocks.items() if "test suite" in k)
    other = next(v for k, v in blocks.items() if "`curl`" in k or "terminal" in k)
    return quick, tests, other


class ParseTests(SynchronousTestCase):
    """
    The README has the blocks the end-to-end test runs.
    """

    def test_blocks(self) -> None:
        """
        One quick start command using C{netd run}, the test command, and
        the other terminal's commands, using C{netd}, not bare C{twistd}.
        """
        quick, tests, other = readmeBlocks()
        self.assertEqual(len(quick), 1)
        self.assertTrue(quick[0].endswith(".venv/bin/netd run"), quick)
        self.assertIn("twisted.trial tests", tests[0])
        self.assertIn(".venv/bin/netd stop", other)
        self.assertFalse([c for c in other if c.startswith("twistd")], other)


class ReadmeTests(SynchronousTestCase):
    """
    The commands, run.
    """

    def test_quickStartAndOtherTerminal(self) -> None:
        """
        The quick start installs and runs netd on a fresh virtualenv; every
        command of the other terminal exits 0 (echo answers, the page is
        served, chat takes a nickname, status, check, reload), and the last
        one, C{netd stop}, ends the quick start's netd with status 0.
        """
        quick, _, other = readmeBlocks()
        for program in ("nc", "curl"):
            if shutil.which(program) is None:
                raise self.skipTest(
                    f"{program} is missing (Debian packages: netcat-openbsd, curl)"
                )
        help = subprocess.run(["nc", "-h"], capture_output=True, text=True)
        if "-N" not in help.stdout + help.stderr:
            raise self.skipTest(
                "nc is not OpenBSD netcat (Debian package netcat-openbsd)"
            )
        for _ in range(100):
            busy = [p for p in (10007, 10009, 8080, 10023) if not isFree(p)]
            if not busy:
                break
            time.sleep(0.1)
        else:
            raise self.skipTest(f"ports {busy} are busy")
        if answers(defaultControlPath()):
            raise self.skipTest(f"another netd answers on {defaultControlPath()}")
        tree = os.path.join(tempfile.mkdtemp(prefix="netd-readme-"), "netd")
        self.addCleanup(shutil.rmtree, os.path.dirname(tree), True)
        # As root, netd runs as nobody after binding, and a reload re-reads
        # the embedded default from the virtualenv: like a clone in a home
        # directory, the tree must be readable by others (mkdtemp's is not).
        os.chmod(os.path.dirname(tree), 0o755)
        shutil.copytree(REPO, tree, ignore=IGNORED)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        log = open(os.path.join(tree, "quickstart.log"), "w+")
        self.addCleanup(log.close)
        daemon = subprocess.Popen(
            ["bash", "-c", quick[0]],
            cwd=tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(lambda: daemon.poll() is None and daemon.kill())
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and daemon.poll() is None:
            log.seek(0)
            if "control socket on" in log.read():
                break
            time.sleep(0.2)
        log.seek(0)
        started = log.read()
        self.assertIn("control socket on", started, started[-3000:])
        results = []
        for command in other:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=tree,
                env=env,
                input="alice\n/quit\n",
                capture_output=True,
                text=True,
                timeout=60,
            )
            results.append((command, done.returncode, done.stdout, done.stderr))
            self.assertEqual(done.returncode, 0, results[-1])
        outputs = {command: out for command, _, out, _ in results}
        self.assertEqual(outputs["echo hello | nc -N 127.0.0.1 10007"], "hello\n")
        self.assertEqual(outputs["echo hello | nc -u -w1 127.0.0.1 10007"], "hello\n")
        self.assertIn("HTTP/1.1 200", outputs["curl -i http://127.0.0.1:8080/"])
        self.assertIn("serving 4 services", outputs[".venv/bin/netd status"])
        self.assertEqual(daemon.wait(60), 0)
        log.seek(0)
        self.assertNotIn("Traceback", log.read())
