# -*- test-case-name: tests.test_before_after -*-
"""
Run one of netd's benchmarks in two checkouts, alternately, and print netd's
ratios to its peer side by side.

    python bench/before_after.py BEFORE AFTER BENCH [--pairs N] [--save DIR] [-- ARGS...]

C{BENCH} is one of C{run}, C{http}, C{chat}, C{forward}. Each checkout runs
its own C{bench/<script>.py} with its own C{.venv/bin/python} (so its own
netd), from its own root: before, after, before, after, ... C{--pairs}
times, so that whatever else loads the machine falls on both alike. Every run's
standard output, and the load average before and after it, go to
C{--save DIR} if given. The table gives, for each row, the median over the
runs of netd's ratio to the peer in each checkout, and after / before.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence

SCRIPTS = {
    "run": "run.py",
    "http": "http_bench.py",
    "chat": "chat.py",
    "forward": "forward_bench.py",
}

_NUMBER = re.compile(r"\s*([0-9][0-9,]*(?:\.[0-9]+)?)")


def number(cell: str) -> float:
    """
    @param cell: a table cell such as C{"48,025 msg/s"}, C{"2.22 (1.9-2.4)"}
        or C{"5.63x"}.
    @return: the first number in it.
    @raise ValueError: if it does not start with a number.
    """
    match = _NUMBER.match(cell)
    if match is None:
        raise ValueError(f"no number in table cell {cell!r}")
    return float(match.group(1).replace(",", ""))


def tables(output: str) -> list[list[list[str]]]:
    """
    @param output: text holding Markdown tables.
    @return: each table as its rows of cells, the header row first and the
        C{|---|} line left out.
    """
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [cell.strip() for cell in line[1:-1].split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def tableWith(output: str, first: str) -> list[list[str]]:
    """
    @return: the first table whose first header cell is C{first}.
    @raise ValueError: if there is none.
    """
    for table in tables(output):
        if table[0][0] == first:
            return table
    raise ValueError(f"no table starting with column {first!r} in the output")


def runRatios(output: str) -> dict[str, float]:
    """
    C{bench/run.py}: netd / baseline throughput and server CPU per message.
    """
    table = tableWith(output, "workload")
    header = table[0]
    ratio = header.index("netd / baseline")
    netdCPU = header.index("netd server CPU")
    baseCPU = header.index("baseline server CPU")
    result = {}
    for row in table[1:]:
        result[f"{row[0]} throughput"] = number(row[ratio])
        result[f"{row[0]} server CPU (lower is better)"] = number(
            row[netdCPU]
        ) / number(row[baseCPU])
    return result


def httpRatios(output: str) -> dict[str, float]:
    """
    C{bench/http_bench.py}: netd's req/s over twistd web's and nginx's.
    """
    table = tableWith(output, "file")
    header = table[0]
    rps = header.index("req/s")
    byServer: dict[str, dict[str, float]] = {}
    for row in table[1:]:
        byServer.setdefault(row[0], {})[row[1]] = number(row[rps])
    result = {}
    for name, servers in byServer.items():
        for peer in ("twistd web", "nginx"):
            if "netd" in servers and peer in servers:
                result[f"{name} req/s vs {peer}"] = servers["netd"] / servers[peer]
    return result


def chatRatios(output: str) -> dict[str, float]:
    """
    C{bench/chat.py}: netd's deliveries/s and p50 latency over the minimal
    Twisted chat's and ncat's, for each offered rate.
    """
    table = tableWith(output, "offered msg/s")
    header = table[0]
    server = header.index("server")
    deliveries = header.index("deliveries/s")
    p50 = header.index("p50 ms")
    byRate: dict[str, dict[str, tuple[float, float]]] = {}
    for row in table[1:]:
        byRate.setdefault(row[0], {})[row[server]] = (
            number(row[deliveries]),
            number(row[p50]),
        )
    result = {}
    for rate, servers in byRate.items():
        for peer in ("twisted", "ncat"):
            if "netd" in servers and peer in servers:
                netd, other = servers["netd"], servers[peer]
                result[f"{rate}/s deliveries vs {peer}"] = netd[0] / other[0]
                result[f"{rate}/s p50 vs {peer} (lower is better)"] = netd[1] / other[1]
    return result


def forwardRatios(output: str) -> dict[str, float]:
    """
    C{bench/forward_bench.py}: netd/socat MiB/s and CPU per MiB, each
    direction (the two ratio columns share one name, so by position).
    """
    table = tableWith(output, "direction")
    header = table[0]
    result = {}
    for row in table[1:]:
        cells = dict(zip(header, row))
        result[f"{row[0]} MiB/s"] = number(cells["netd MiB/s"]) / number(
            cells["socat MiB/s"]
        )
        result[f"{row[0]} CPU/MiB (lower is better)"] = number(
            cells["netd ms CPU/MiB"]
        ) / number(cells["socat ms CPU/MiB"])
    return result


PARSERS: dict[str, Callable[[str], dict[str, float]]] = {
    "run": runRatios,
    "http": httpRatios,
    "chat": chatRatios,
    "forward": forwardRatios,
}


def sideBySide(
    bench: str, before: list[dict[str, float]], after: list[dict[str, float]]
) -> str:
    """
    @param before: each run's ratios in the first checkout.
    @param after: the same in the second.
    @return: a Markdown table: row, median before (min-max), median after
        (min-max), after / before of the medians.
    """

    def cell(values: list[float]) -> str:
        return (
            f"{statistics.median(values):.2f} " f"({min(values):.2f}-{max(values):.2f})"
        )

    lines = [
        "| bench | row | before, median (min-max) | after, median (min-max) "
        "| after / before |",
        "|---|---|---|---|---|",
    ]
    rows = list(dict.fromkeys(key for run in before + after for key in run))
    for row in rows:
        b = [run[row] for run in before if row in run]
        a = [run[row] for run in after if row in run]
        if not a or not b:
            continue
        quotient = statistics.median(a) / statistics.median(b)
        lines.append(f"| {bench} | {row} | {cell(b)} | {cell(a)} | {quotient:.3f} |")
    return "\n".join(lines)


def loadAverage() -> str:
    """
    @return: the 1, 5 and 15 minute load averages.
    """
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def runOnce(checkout: str, bench: str, args: Sequence[str]) -> str:
    """
    Run C{bench} in C{checkout} with its own virtualenv.

    @return: its standard output.
    @raise RuntimeError: if it fails.
    """
    python = os.path.join(checkout, ".venv", "bin", "python")
    command = [python, os.path.join("bench", SCRIPTS[bench]), *args]
    done = subprocess.run(
        command,
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} in {checkout} exited {done.returncode}:\n"
            + done.stderr[-2000:]
        )
    return done.stdout


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="bench/before_after.py",
        description="Run a benchmark alternately in two checkouts; compare ratios.",
    )
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("bench", choices=sorted(SCRIPTS))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--save", metavar="DIR", help="keep each run's output here")
    argv = list(argv)
    benchArgs: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, benchArgs = argv[:split], argv[split + 1 :]
    options = parser.parse_args(argv)
    options.args = benchArgs
    if not 1 <= options.pairs <= 20:
        parser.error("--pairs must be between 1 and 20")
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    loads = []
    for pair in range(options.pairs):
        for side in ("before", "after"):
            checkout = getattr(options, side)
            start = loadAverage()
            began = time.monotonic()
            output = runOnce(checkout, options.bench, options.args)
            end = loadAverage()
            loads.append((start, end))
            print(
                f"pair {pair + 1} {side}: {time.monotonic() - began:.0f} s, "
                f"load {start} -> {end}",
                file=sys.stderr,
                flush=True,
            )
            if options.save:
                os.makedirs(options.save, exist_ok=True)
                name = f"{options.bench}-{pair + 1}-{side}.txt"
                with open(os.path.join(options.save, name), "w") as f:
                    f.write(f"load {start} -> {end}\n{output}")
            results[side].append(PARSERS[options.bench](output))
    oneMinute = [float(load.split()[0]) for pair in loads for load in pair]
    print(
        f"{options.bench}: {options.pairs} pairs, args {' '.join(options.args)}; "
        f"1-min load average {min(oneMinute):.2f}-{max(oneMinute):.2f}"
    )
    print()
    print(sideBySide(options.bench, results["before"], results["after"]))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
        sys.exit(f"bench/before_after.py: {e}")
