#!/usr/bin/env python3
"""CLI start-up: what one `netfw` process costs around its kernel work, side by side with the shell floor.

    scripts/bench_startup.py [--rounds 5] [--json FILE]     (re-runs itself inside scripts/sandbox when needed)

OpenNebula starts netfw once per driver action, so this fixed cost is paid on every VM start, migration and NIC
hot-plug. In one run, `rounds` rounds, each row once per round in an order that rotates between rounds (so a load
drift on this shared machine hits every row alike); medians in ms:
  interpreter       `python -S -c pass` and `python -c pass` (the difference is site: the venv's .pth files)
  commands          `netfw --version`, `netfw --help`, `netfw attach --help` (wall time of the process)
  imports           each module imported in a fresh interpreter, timed inside it (so without interpreter start)
  attach / detach   the shell floor (bench_control.FLOOR_*, timed inside bash) and `netfw attach/detach` from the CLI
                    (wall time of the process), security group 0, on a fresh tap each round; and the Python API.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PYTHON = str(HERE.parent / ".venv" / "bin" / "python")
NETFW = str(HERE.parent / ".venv" / "bin" / "netfw")

#: Imports timed inside a fresh interpreter: the CLI's own, each dependency, and all that attach imports.
IMPORTS = ("typer", "loguru", "sh", "netfw.cli", "netfw.api", "netfw.cli, netfw.api, loguru, sh")

#: Commands timed as whole processes; the interpreter rows are the floor every Python CLI pays.
COMMANDS = {
    "python -S -c pass": [PYTHON, "-S", "-c", "pass"],
    "python -c pass": [PYTHON, "-c", "pass"],
    "netfw --version": [NETFW, "--version"],
    "netfw --help": [NETFW, "--help"],
    "netfw attach --help": [NETFW, "attach", "--help"],
}

_IMPORT_TIMER = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"


def wall(argv: list[str]) -> float:
    """Seconds for one process from start to exit (its output discarded); raises when it fails."""
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def import_time(modules: str) -> float:
    """Seconds `import <modules>` takes in a fresh interpreter, timed inside it."""
    out = subprocess.run([PYTHON, "-c", _IMPORT_TIMER.format(modules)], check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def _jobs(floor_factory, state_dir: str) -> dict:
    """Every measured row as a function returning seconds (attach/detach return both)."""
    from bench_control import timed_api, timed_cli
    from bench_lab import spec

    jobs: dict = {name: (lambda a=argv: wall(a)) for name, argv in COMMANDS.items()}
    jobs.update({f"import {m}": (lambda m=m: import_time(m)) for m in IMPORTS})
    vm = iter(range(700, 800))
    jobs["floor"] = lambda: _floor(floor_factory(next(vm)))
    jobs["cli"] = lambda: timed_cli(_fresh(next(vm)), state_dir)
    jobs["api"] = lambda: timed_api(spec(_fresh(next(vm)), None), state_dir)[::2]
    return jobs


def _fresh(vm: int) -> int:
    from bench_lab import cheap_taps
    cheap_taps([vm])
    return vm


def _floor(floor) -> tuple[float, float]:
    return floor.attach(), floor.detach()


def measure(rounds: int) -> dict:
    """{row: median ms}; attach rows give `<row> attach` and `<row> detach`."""
    import bench_control as ctl
    import bench_lab as lab
    from loguru import logger

    logger.remove()  # the API rows: netfw logs each step; logging to a terminal is not what is measured
    lab.reset()
    lab.vn_bridge()
    work = ctl.workdir()
    state_dir = str(work / "state")
    jobs = _jobs(lambda vm: (lab.cheap_taps([vm]), ctl.Floor(lab.spec(vm, None), work))[1], state_dir)
    samples: dict[str, list[float]] = {}
    names = list(jobs)
    for job in names:  # warm-up: page cache, pyc, first namespace
        jobs[job]()
    for i in range(rounds):
        for job in names[i % len(names):] + names[:i % len(names)]:
            value = jobs[job]()
            if isinstance(value, tuple):
                samples.setdefault(f"{job} attach", []).append(value[0])
                samples.setdefault(f"{job} detach", []).append(value[1])
            else:
                samples.setdefault(job, []).append(value)
    lab.reset()
    return {k: round(statistics.median(v) * 1000, 1) for k, v in samples.items()} | {"rounds": rounds}


def table(r: dict) -> str:
    """The start-up tables in Markdown."""
    floor = r["floor attach"]
    rows = [("shell floor, SG 0 (timed inside bash)", r["floor attach"], r["floor detach"]),
            ("netfw API, SG 0 (in-process)", r["api attach"], r["api detach"]),
            ("netfw CLI, SG 0 (a new process)", r["cli attach"], r["cli detach"])]
    out = [f"**CLI start-up and attach from the CLI** (median of {r['rounds']}, ms, one run, rows interleaved)", "",
           "| what | attach | detach | attach − floor |", "|---|---|---|---|"]
    out += [f"| {name} | {a} | {d} | {round(a - floor, 1)} |" for name, a, d in rows]
    out += ["", "| command (whole process) | ms |", "|---|---|"]
    out += [f"| `{name}` | {r[name]} |" for name in COMMANDS]
    out += ["", "| import, in a fresh interpreter (timed inside it) | ms |", "|---|---|"]
    out += [f"| `import {m}` | {r[f'import {m}']} |" for m in IMPORTS]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="write the medians here too")
    args = p.parse_args()
    from bench_lab import in_sandbox

    in_sandbox()
    r = measure(args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
