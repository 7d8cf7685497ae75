# -*- test-case-name: tests.test_debian -*-
"""
The Debian package built from the tree by C{packaging/build-deb}: its
contents, and netd run from them. (C{.ci/run} also installs it with
C{dpkg -i}, starts netd from it and removes it.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.test_endtoend import REPO, freePorts


class DebianPackageTests(SynchronousTestCase):
    """
    C{packaging/build-deb}.
    """

    def setUp(self) -> None:
        for program in ("dpkg-deb", "dpkg", "gzip"):
            if shutil.which(program) is None:
                raise self.skipTest(f"{program} is missing (Debian package dpkg)")
        system = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if system != str(tuple(sys.version_info[:2])):
            raise self.skipTest(
                f"the system's python3 {system} is not this Python: the bundled "
                "wheels would not match"
            )
        self.directory = tempfile.mkdtemp(prefix="netd-deb-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def test_buildAndRun(self) -> None:
        """
        The package holds the command, the bundled libraries, the units
        (pointing at the bundled twistd), the configuration as a conffile
        and the man pages; netd from its files checks the shipped
        configuration and runs: C{netd status} answers, C{netd stop} stops.
        """
        build = subprocess.run(
            [os.path.join(REPO, "packaging", "build-deb"), self.directory],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, PIP=f"{sys.executable} -m pip"),
        )
        self.assertEqual(build.returncode, 0, build.stderr[-3000:])
        deb = build.stdout.strip().splitlines()[-1]
        contents = subprocess.run(
            ["dpkg-deb", "--contents", deb], capture_output=True, text=True
        ).stdout
        for path in (
            "./usr/bin/netd",
            "./usr/lib/netd/bin/twistd",
            "./usr/lib/netd/netd/cli.py",
            "./usr/lib/netd/twisted/plugins/netd_plugin.py",
            "./lib/systemd/system/netd.service",
            "./etc/netd/netd.toml",
            "./usr/share/man/man8/netd.8.gz",
            "./usr/share/man/man5/netd.toml.5.gz",
        ):
            self.assertIn(path, contents)
        conffiles = subprocess.run(
            ["dpkg-deb", "--info", deb, "conffiles"], capture_output=True, text=True
        ).stdout
        self.assertEqual(conffiles.strip(), "/etc/netd/netd.toml")
        tree = os.path.join(self.directory, "tree")
        subprocess.run(["dpkg-deb", "-x", deb, tree], check=True)
        with open(os.path.join(tree, "lib/systemd/system/netd.service")) as f:
            self.assertIn("ExecStart=/usr/lib/netd/bin/twistd -n", f.read())
        env = dict(os.environ, PYTHONPATH=os.path.join(tree, "usr/lib/netd"))
        netd = ["/usr/bin/python3", "-m", "netd.cli"]
        check = subprocess.run(
            netd + ["check", "--config", os.path.join(tree, "etc/netd/netd.toml")],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.directory,
        )
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn("configuration is valid", check.stdout)
        (port,) = freePorts(1)
        config = os.path.join(self.directory, "netd.toml")
        with open(config, "w") as f:
            f.write(
                f'[services.echo]\ntype = "echo"\n'
                f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            )
        control = os.path.join(self.directory, "c.sock")
        args = ["run", "--config", config, "--control", control]
        if os.geteuid() == 0:
            args.append("--allow-root")
        daemon = subprocess.Popen(
            netd + args,
            env=env,
            cwd=self.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(daemon.kill)
        assert daemon.stdout is not None
        for _ in range(200):
            line = daemon.stdout.readline()
            if not line or "control socket on" in line:
                break
        status = subprocess.run(
            netd + ["status", "--control", control],
            capture_output=True,
            text=True,
            env=env,
        )
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn(f"(port {port})", status.stdout)
        stop = subprocess.run(
            netd + ["stop", "--control", control], capture_output=True, env=env
        )
        self.assertEqual(stop.returncode, 0)
        self.assertEqual(daemon.wait(30), 0)
        daemon.stdout.close()
