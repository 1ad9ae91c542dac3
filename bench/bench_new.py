"""How much `scaffold new --defaults` costs over a bare `copier copy --defaults`.

Both render the same template (the bundled one, from its snapshot repository) in the same
run, interleaved, so machine noise hits both alike. Target: median ratio <= 1.5.

    python bench/bench_new.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaffold.render import bundled_template

TARGET_RATIO = 1.5


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command (default 7)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-new-"))
    os.environ["VPS_SCAFFOLD_CACHE_DIR"] = str(work / "cache")  # never the user's cache
    env = dict(os.environ)
    try:
        template = bundled_template()  # the snapshot both commands read; made once, untimed
        commands = {
            "scaffold new --defaults": [
                sys.executable,
                "-m",
                "scaffold",
                "new",
                "DEST",
                "--defaults",
                "--quiet",
            ],
            "copier copy --defaults": [
                sys.executable,
                "-m",
                "copier",
                "copy",
                "--defaults",
                "--quiet",
                "--vcs-ref",
                str(template.ref),
                template.src,
                "DEST",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for run in range(-1, args.runs):  # run -1 warms both up (imports, page cache)
            for index, (name, argv) in enumerate(commands.items()):
                dest = str(work / f"{index}-{run}")
                elapsed = timed([dest if arg == "DEST" else arg for arg in argv], env)
                if run >= 0:
                    times[name].append(elapsed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["scaffold new --defaults"] / medians["copier copy --defaults"]
    print(f"{'command':<26} {'median s':>9} {'min s':>7} {'max s':>7}  runs")
    for name, values in times.items():
        print(f"{name:<26} {medians[name]:>9.3f} {min(values):>7.3f} {max(values):>7.3f}  {len(values)}")
    verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
    print(f"{'ratio scaffold/copier':<26} {ratio:>9.2f}  target <= {TARGET_RATIO}  {verdict}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
