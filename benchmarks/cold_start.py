"""Cold start: wall time of `tfkd --help` and `import tfkd`, tree by tree.

Times fresh processes of two (or more) source trees of tfkd, e.g. the base
commit and a branch, **interleaved**: each round runs every command once
per tree, the order of the trees rotating every round, so that the load
of the shared machine weighs on both alike. Prints, per command, the
median wall time over rounds of each tree and the median of the per-round
ratios to the first tree (with their 25th–75th percentiles).

    git worktree add --detach /tmp/tfkd-base main
    python benchmarks/cold_start.py --tree before=/tmp/tfkd-base \\
        --tree after=. --rounds 5

Each tree is put first on `PYTHONPATH` and the processes run in an empty
directory (so the current directory does not shadow it); `tfkd` is the
console script installed beside this Python (`python -m tfkd.cli` if there
is none). Output of the commands is discarded. TensorFlow is not imported
here: the processes timed are the only ones that pay for it.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _commands():
    script = os.path.join(os.path.dirname(sys.executable), "tfkd")
    tfkd = [script] if os.path.exists(script) else [sys.executable, "-m",
                                                     "tfkd.cli"]
    python = [sys.executable, "-c"]
    return {
        "python -c pass": python + ["pass"],
        "tfkd --help": tfkd + ["--help"],
        "tfkd demo --help": tfkd + ["demo", "--help"],
        "python -c 'import tfkd'": python + ["import tfkd"],
        "python -c 'import tfkd; tfkd.Distiller'":
            python + ["import tfkd; tfkd.Distiller"],
    }


def _origin(tree, cwd):
    """Where `import tfkd` resolves with `tree` first on the path."""
    env = dict(os.environ, PYTHONPATH=tree)
    return subprocess.run(
        [sys.executable, "-c", "import importlib.util; "
         "print(importlib.util.find_spec('tfkd').origin)"],
        env=env, cwd=cwd, capture_output=True, text=True,
        check=True).stdout.strip()


def _time(command, tree, cwd):
    env = dict(os.environ, PYTHONPATH=tree)
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True,
                        metavar="NAME=PATH",
                        help="a tfkd source tree; the first is the reference")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    trees = []
    for item in args.tree:
        name, _, path = item.partition("=")
        trees.append((name, os.path.abspath(path)))
    commands = _commands()
    cwd = tempfile.mkdtemp(prefix="tfkd_cold_start_")
    try:
        for name, path in trees:
            origin = _origin(path, cwd)
            if not origin.startswith(path):
                sys.exit(f"{name}: tfkd resolves to {origin}, not {path}")
            print(f"{name}: {origin}")
        times = {(c, t): [] for c in commands for t, _ in trees}
        for r in range(args.rounds):
            shift = r % len(trees)
            order = trees[shift:] + trees[:shift]
            for label, command in commands.items():
                for name, path in order:
                    times[label, name].append(_time(command, path, cwd))
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0
            print(f"round {r + 1}/{args.rounds} done, load {load:.1f}",
                  flush=True)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    reference = trees[0][0]
    header = " | ".join(f"{t} median s" for t, _ in trees)
    print(f"\n| command | {header} | "
          + " | ".join(f"{t}/{reference} (25–75 %)" for t, _ in trees[1:])
          + " |")
    print("| --- " * (1 + 2 * len(trees) - 1) + "|")
    for label in commands:
        cells = [f"{statistics.median(times[label, t]):.2f}"
                 for t, _ in trees]
        for t, _ in trees[1:]:
            ratios = [a / b for a, b in zip(times[label, t],
                                            times[label, reference])]
            low, high = _quartiles(ratios)
            cells.append(f"{statistics.median(ratios):.3f} "
                         f"({low:.3f}–{high:.3f})")
        print(f"| `{label}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
