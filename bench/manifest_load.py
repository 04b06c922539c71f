"""What checking a manifest with jsonschema costs a command (D72), beside what it cannot avoid.

Each figure is the median wall time of a fresh interpreter, in the same run:
- `python -c pass`: the interpreter alone;
- reading the bundled lab manifest as JSON (no check): what any command that loads it pays;
- `pantheros.manifest.bundled("lab")`: read, checked against the schema (jsonschema), typed;
- the same, twice in one interpreter: the second check, once jsonschema is loaded.

    .venv/bin/python bench/manifest_load.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15
LAB = Path(__file__).resolve().parents[1] / "src/pantheros/data/manifests/lab.json"


def median_ms(code: str) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    load = "from pantheros import manifest\nmanifest.bundled('lab')\n"
    figures = {
        "python -c pass": median_ms("pass"),
        "json.loads only": median_ms(f"import json\njson.loads(open({str(LAB)!r}).read())"),
        "checked (jsonschema)": median_ms(load),
        "checked twice": median_ms(load + "manifest.bundled('lab')\n"),
    }
    print(f"median of {RUNS} fresh interpreters, milliseconds")
    for name, value in figures.items():
        print(f"{name:22} {value:7.0f}")


if __name__ == "__main__":
    main()
