"""`panther fleet status` on 20 local hosts beside the same per-host commands run one host after
the other over SSH, in the same run; prints both wall times and the ratio.

The hosts are real sshd servers on loopback (tests/fleet/sshlab.py), each with a lab for its
panther to report on. Both sides run the same commands on each host: `panther status --json`,
`panther diff --json`, `panther audit --json` and the three readlinks, through one ssh
connection per host with the same options. On this machine the hosts' work runs on the same CPUs
as the client, so the ratio is a floor: on real hosts it is their work that runs in parallel.

    sudo .venv/bin/python bench/fleet.py [--hosts 20] [--limit 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _lab import PANTHER, REPO, timed, workspace

sys.path.insert(0, str(REPO))
from tests.fleet import sshlab

STEPS = "panther status --json; panther diff --json; panther audit --json; " + "; ".join(
    f"readlink {p}"
    for p in ("/run/booted-system", "/run/current-system", "/nix/var/nix/profiles/system")
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--limit", type=int, default=10)
    options = parser.parse_args()
    reason = sshlab.reason_to_skip()
    if reason:
        sys.exit(f"bench/fleet.py {reason}")
    os.environ.pop("SSH_AUTH_SOCK", None)
    with workspace() as base:
        names = [f"host{i:02d}" for i in range(1, options.hosts + 1)]
        print(f"==> {len(names)} labs", file=sys.stderr)
        labs = sshlab.make_labs(base / "labs", names)
        try:
            with sshlab.running(base / "ssh") as ssh:
                servers = [ssh.server(name, lab=labs[name]) for name in names]
                inventory = base / "fleet.toml"
                hosts = [(s.name, s.address, s.port, "[]") for s in servers]
                inventory.write_text(sshlab.inventory(ssh, hosts))
                measure(ssh, servers, inventory, options.limit)
        finally:
            sshlab.remove_labs(list(labs.values()))


def measure(ssh: sshlab.SshLab, servers: list[sshlab.Server], inventory: Path, limit: int) -> None:
    fleet_argv = [*PANTHER, "fleet", "status", "-i", str(inventory), "--json", "-q"]
    fleet_argv += ["--limit", str(limit)]

    def fleet() -> None:
        proc = subprocess.run(fleet_argv, capture_output=True, text=True, check=False)
        rows = json.loads(proc.stdout)["hosts"]
        bad = [r["name"] for r in rows if r["error"] or r["problems"]]
        if bad:
            sys.exit(f"fleet status: hosts failed: {bad}: {proc.stderr}")

    def one_after_the_other() -> None:
        for server in servers:
            argv = [
                "ssh",
                "-T",
                "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=10",
                "-o", f"UserKnownHostsFile={ssh.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-i", str(ssh.client_key),
                "-o", "IdentitiesOnly=yes",
                "-p", str(server.port),
                "-l", "root",
                "--", server.address, "sh", "-c", shlex.quote(STEPS),
            ]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, check=False)
            if proc.returncode not in (0, 1):
                sys.exit(f"ssh {server.name}: exit {proc.returncode}: {proc.stderr!r}")

    fleet()  # warm: bytecode, page cache, host keys
    runs = 2
    sequential = min(timed(one_after_the_other) for _ in range(runs))
    parallel = min(timed(fleet) for _ in range(runs))
    hosts = len(servers)
    print(f"hosts: {hosts}, limit: {limit}, CPUs here: {os.cpu_count()} (best of {runs})")
    print(f"one host after the other over ssh: {sequential:6.2f} s")
    print(f"panther fleet status:              {parallel:6.2f} s")
    print(f"ratio: {sequential / parallel:.2f}x")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"(bench took {time.monotonic() - started:.0f} s)", file=sys.stderr)
