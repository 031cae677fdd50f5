"""How long psabridge's imports take before a command runs: `psabridge --help` and a few commands.

    python benchmarks/startup.py              # 7 fresh processes per command, the median
    python benchmarks/startup.py --runs 15

Each command runs in a fresh interpreter with `-X importtime`; its import time is the sum of the
top-level imports' cumulative times it prints (everything imported before and while the command
ran), and the wall time is the process's, start to exit. Commands run against an empty store in
a temporary folder, so none reaches a remote system. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = (
    ("--help",),
    ("plugins", "list"),
    ("sync", "--help"),
    ("simulate", "--help"),
    ("serve", "--help"),
)
TOP_LEVEL = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")
HEAVY = ("werkzeug", "jinja2", "rich", "cryptography", "httpx", "sqlite_utils", "rapidfuzz",
         "psabridge.simulation", "psabridge.core.mapping", "waitress")


def run_once(args: tuple[str, ...], env: dict) -> tuple[float, float, set[str]]:
    """Import seconds, wall seconds, and the modules imported, of one fresh `psabridge ARGS`."""
    code = "import sys; from psabridge.cli import cli; sys.argv = ['psabridge', *sys.argv[1:]]; cli()"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"psabridge {' '.join(args)} failed: {done.stderr[-500:]}")
    micros, modules = 0, set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            modules.add(name)
            if (match := TOP_LEVEL.match(line)) is not None:
                micros += int(match.group(1))
    return micros / 1e6, wall, modules


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command (default 7)")
    args = parser.parse_args(argv)
    print(f"psabridge start-up: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"median of {args.runs} fresh processes")
    print(f"  {'command':<28} {'imports':>10} {'wall':>10}   heavy modules loaded")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PSABRIDGE_DB": os.path.join(tmp, "startup.db"), "HOME": tmp,
               "XDG_CONFIG_HOME": tmp, "XDG_DATA_HOME": tmp}
        for command in COMMANDS:
            runs = [run_once(command, env) for _ in range(args.runs)]
            imports = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            heavy = sorted(h for h in HEAVY if h in runs[0][2])
            print(f"  psabridge {' '.join(command):<18} {imports * 1000:8.0f} ms {wall * 1000:7.0f} ms"
                  f"   {', '.join(heavy) or '-'}")


if __name__ == "__main__":
    main()
