"""`panther spec validate --all --strict --json` beside the OpenSpec CLI 1.13.2, same run.

Over the compatibility corpus (tests/spec/corpus.py, 60+ items) copied three times, so both tools
validate well over 50 items. Median of 5 runs each.

    .venv/bin/python bench/spec.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _lab import REPO

sys.path.insert(0, str(REPO))
from tests.spec import corpus
from tests.spec.tools import CLI, ENV, openspec_argv, panther_argv


def median_seconds(argv: list[str], cwd: Path, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    if not Path(CLI).exists():
        sys.exit(f"the OpenSpec CLI is not at {CLI} (bash scripts/quickstart test installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus.write(root)
        for copy in (1, 2):
            for name, files in corpus.CHANGES.items():
                folder = root / "openspec" / "changes" / f"{name}-copy{copy}"
                folder.mkdir(parents=True)
                for rel, text in {"proposal.md": corpus.PROPOSAL, **files}.items():
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    (folder / rel).write_text(text)
        items = len(corpus.SPECS) + 3 * len(corpus.CHANGES)
        args = ["validate", "--all", "--strict", "--json"]
        ours = median_seconds(panther_argv(*args), root)
        theirs = median_seconds(openspec_argv(*args), root)
    print(f"validate --all --strict --json over {items} items (median of 5)")
    print(f"{'tool':28} {'seconds':>9}")
    print(f"{'panther spec':28} {ours:9.3f}")
    print(f"{'openspec 1.13.2':28} {theirs:9.3f}")
    print(f"ratio (openspec / panther): {theirs / ours:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
