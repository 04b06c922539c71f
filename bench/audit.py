"""A full `panther audit` of this machine beside `lynis audit system --quick`, same run.

Prints both wall times and the ratio, then which Lynis test ids and kernel-hardening-checker
checks the hardening table covers (from its anchors). Installs Debian's lynis if missing.

    sudo .venv/bin/python bench/audit.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections import defaultdict

from _lab import PANTHER, REPO, timed


def main() -> None:
    if shutil.which("lynis") is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "lynis"], check=True, capture_output=True
        )
    panther_s = timed(
        lambda: subprocess.run([*PANTHER, "audit", "--json"], capture_output=True, check=False)
    )
    with tempfile.TemporaryDirectory() as tmp:
        lynis_s = timed(
            lambda: subprocess.run(
                [
                    "lynis",
                    "audit",
                    "system",
                    "--quick",
                    "--no-colors",
                    "--logfile",
                    f"{tmp}/lynis.log",
                    "--report-file",
                    f"{tmp}/report.dat",
                ],
                capture_output=True,
                check=False,
            )
        )
    print(f"{'tool':32} {'seconds':>9}")
    print(f"{'panther audit (all checks)':32} {panther_s:9.3f}")
    print(f"{'lynis audit system --quick':32} {lynis_s:9.3f}")
    print(f"ratio (lynis / panther): {lynis_s / panther_s:.1f}x (target >= 20x, panther < 2 s)")

    table = json.loads((REPO / "src/pantheros/data/hardening.json").read_text())
    from pantheros.audit.checks import BUILTINS

    anchors = [(c["id"], c["anchors"]) for c in table["checks"]] + [(b[0], b[5]) for b in BUILTINS]
    by_source: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for cid, refs in anchors:
        for source in ("lynis", "khc"):
            if source in refs:
                by_source[source][refs[source]].append(cid)
    for source, title in (("lynis", "Lynis test id"), ("khc", "kernel-hardening-checker check")):
        print(f"\n{title:34} panther checks")
        for ref, ids in sorted(by_source[source].items()):
            print(f"{ref:34} {', '.join(ids)}")


if __name__ == "__main__":
    main()
