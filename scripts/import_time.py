"""How long `import stt_hf` takes next to `import timm` and `import timm, transformers`.

Each import runs in a fresh interpreter (so nothing is cached in the process; the OS file cache is warm
after the first warm-up round). The statements are interleaved round by round, so a busy machine slows
them alike, and the table gives the median and the spread over the rounds.

    python scripts/import_time.py --repeats 7
    python scripts/import_time.py --also ../other-checkout  # also `import stt_hf` from another copy
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

STATEMENTS = {
    "import timm": "import timm",
    "import timm, transformers": "import timm, transformers",
    # transformers imports its submodules lazily: this is the modeling stack stt_hf's classes build on.
    "import timm; from transformers import PreTrainedModel":
        "import timm; from transformers import PreTrainedModel",
    "import stt_hf": "import stt_hf",
}
# Printed by the child: seconds spent in the statement alone (interpreter start-up excluded).
TIMER = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def time_once(statement: str, path: str | None = None) -> float:
    """Seconds `statement` takes in a fresh interpreter, run outside any source tree (so the installed
    package is imported), with `path` first on sys.path when given."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, "-c", TIMER.format(stmt=statement)], capture_output=True,
                             text=True, check=True, cwd=cwd, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def measure(repeats: int, warmup: int = 1, also: str | None = None) -> dict[str, list[float]]:
    runs = {name: (statement, None) for name, statement in STATEMENTS.items()}
    if also:
        runs[f"import stt_hf ({also})"] = ("import stt_hf", also)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(warmup + repeats):
        for name, (statement, path) in runs.items():
            seconds = time_once(statement, path)
            if round_ >= warmup:
                times[name].append(seconds)
    return times


def table(times: dict[str, list[float]]) -> str:
    base = statistics.median(times["import timm"])
    rows = ["| statement | median (s) | min - max (s) | vs `import timm` |", "|---|---|---|---|"]
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(f"| `{name}` | {median:.2f} | {min(values):.2f} - {max(values):.2f} | "
                    f"{median - base:+.2f} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="measured rounds (after one warm-up round)")
    parser.add_argument("--also", default=None,
                        help="folder holding another copy of the stt_hf package to time as well")
    args = parser.parse_args(argv)
    times = measure(args.repeats, also=args.also)
    print(f"{args.repeats} rounds, interleaved, fresh interpreter each; Python {sys.version.split()[0]}")
    print(table(times))


if __name__ == "__main__":
    main()
