"""How long `gentool --version` takes, against `python -c "import torch"`, in one run.

The CLI parses its flags before it imports torch or any plugin, so a light command
(--version, --help, shell completion) should cost a fraction of importing torch; the
goal is at most 0.25x. Both are timed as fresh processes, alternately, several times,
and the medians are compared: on a busy machine only the ratio of one run means much.

    python benchmarks/cli_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

GOAL = 0.25  # at most this fraction of `import torch`


def seconds(command: list[str]) -> float:
    """Wall-clock seconds of one run of ``command``, which must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command; the median counts")
    args = parser.parse_args()
    gentool = shutil.which("gentool")
    commands = {
        "gentool --version": [gentool, "--version"] if gentool else [sys.executable, "-m", "gentoolkit", "--version"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # alternately, so a burst of load elsewhere hits both
        for name, command in commands.items():
            times[name].append(seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:28} median {median:6.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f}, "
              f"{args.repeats} runs)")
    cli, torch = medians.values()
    ratio = cli / torch
    print(f"ratio: {ratio:.3f}x of importing torch (goal: at most {GOAL}x): {'met' if ratio <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
