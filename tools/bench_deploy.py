"""Deploy throughput: ``python tools/bench_deploy.py`` (or ``python tools/bench.py deploy``).

One 5 MB bundle, measured side by side in one run (best of N, fresh target roots each time):

* to 50 local directory targets in parallel vs to one (goal ≤ 3×), next to the same ratio for
  the bare file work a deploy cannot skip (write + fsync + read back and SHA-256, rename), so
  the table shows how much of the ratio is the disk and CPU rather than edge-sdk;
* to 8 SSH targets (two real sshd on 127.0.0.1, tests/sshd.py) in parallel vs to one;
* an unchanged redeploy vs the first deploy, local and SSH (goal ≤ 0.2×); over loopback the SSH
  handshake dominates both, so the SSH rows are repeated through a proxy throttled to typical
  links to a board (100 and 20 Mbit/s).

Needs ``/usr/sbin/sshd`` for the SSH rows (``apt-get install -y openssh-server``); without it
they are reported as skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.bench_common import best_of, table  # noqa: E402

MODEL_BYTES = 5_000_000
LOCAL_TARGETS = 50
SSH_TARGETS = 8


def deploy_suite() -> None:
    from edge_sdk.fleet.deploy import DeployOptions, deploy, deploy_fleet, prepare_bundle
    from edge_sdk.fleet.inventory import Device
    from edge_sdk.fleet.transports import RetryPolicy, SshOptions
    from edge_sdk.format.bundle import save_bundle
    from edge_sdk.format.manifest import Target
    from edge_sdk.host.sealing import seal_bundle
    from edge_sdk.keys import generate_key
    from tests.sshd import SshServer, make_keypair, sshd_available

    signer, device_key = generate_key("signing"), generate_key("device")
    options = DeployOptions(retry=RetryPolicy(attempts=1))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        sealed = seal_bundle(os.urandom(MODEL_BYTES), name="bench", version=1,
                             target=Target("x86_64"), signers=[signer],
                             recipients=[device_key.public])  # fmt: skip
        save_bundle(sealed, tmp / "bench.edgepkg")
        bundle = prepare_bundle(tmp / "bench.edgepkg")
        fresh = count()

        def new_root() -> Path:
            root = tmp / "roots" / f"r{next(fresh)}"
            root.mkdir(parents=True)
            return root

        def fleet_of(
            n: int, uri: Callable[[int, Path], str], ssh: SshOptions | None
        ) -> list[Device]:
            return [Device(f"d{i}", uri(i, new_root()), ssh=ssh or SshOptions()) for i in range(n)]

        def run_fleet(make: Callable[[], list[Device]], parallel: int) -> Callable[[], None]:
            def go() -> None:
                result = deploy_fleet(bundle, make(), options, parallel=parallel)
                assert result.ok, [r.reason for r in result.results if r.reason]

            return go

        def first_vs_unchanged(
            uri: Callable[[Path], str], ssh: SshOptions | None
        ) -> tuple[float, float]:
            first = best_of(lambda: deploy(bundle, uri(new_root()), options, ssh=ssh))
            root = new_root()
            deploy(bundle, uri(root), options, ssh=ssh)

            def again() -> None:
                assert deploy(bundle, uri(root), options, ssh=ssh).status == "unchanged"

            return first, best_of(again)

        def raw(n: int) -> Callable[[], None]:
            def go() -> None:
                roots = [new_root() for _ in range(n)]
                with ThreadPoolExecutor(max_workers=min(n, 32)) as pool:
                    list(pool.map(lambda root: _raw_install(bundle.data, root), roots))

            return go

        local = lambda i, root: str(root)  # noqa: E731
        one_raw = best_of(raw(1))
        many_raw = best_of(raw(LOCAL_TARGETS), 3)
        one_local = best_of(run_fleet(lambda: fleet_of(1, local, None), 1))
        many_local = best_of(
            run_fleet(lambda: fleet_of(LOCAL_TARGETS, local, None), LOCAL_TARGETS), 3
        )
        first_local, same_local = first_vs_unchanged(str, None)

        ssh_rows: list[list[str]] = []
        unchanged_rows = [_unchanged_row("local directory", first_local, same_local)]
        reason = sshd_available()
        if reason:
            ssh_rows.append(["SSH", "skipped", reason, "", ""])
        else:
            client = make_keypair(tmp / "client")
            servers = [
                SshServer.start(tmp / f"sshd{i}", authorized=[client.public]) for i in range(2)
            ]
            try:
                known = tmp / "known_hosts"
                for server in servers:
                    server.write_known_hosts(known)
                ssh = SshOptions(identity=client.private, known_hosts=known, use_agent=False)

                def over_ssh(i: int, root: Path) -> str:
                    return servers[i % len(servers)].uri(root)

                one_ssh = best_of(run_fleet(lambda: fleet_of(1, over_ssh, ssh), 1))
                many_ssh = best_of(
                    run_fleet(lambda: fleet_of(SSH_TARGETS, over_ssh, ssh), SSH_TARGETS), 3
                )
                what = f"SSH (2 sshd on 127.0.0.1), {SSH_TARGETS} targets"
                ssh_rows.append(_parallel_row(what, one_ssh, many_ssh, SSH_TARGETS))
                first_ssh, same_ssh = first_vs_unchanged(lambda root: over_ssh(0, root), ssh)
                unchanged_rows.append(_unchanged_row("SSH, loopback", first_ssh, same_ssh))
                for mbit in (100, 20):
                    first, same = asyncio.run(
                        _throttled(servers[0], tmp, new_root, bundle, options, ssh, mbit)
                    )
                    unchanged_rows.append(_unchanged_row(f"SSH, {mbit} Mbit/s link", first, same))
            finally:
                for server in servers:
                    server.stop()

    mb = bundle.size / 1e6
    table(
        f"Deploy: one {mb:.1f} MB bundle, parallel fleet vs one target (best of 5 / 3)",
        ["targets", "one target", "all in parallel", "ratio (goal ≤ 3×)", "per target"],
        [
            _parallel_row(
                f"local directories, {LOCAL_TARGETS} targets", one_local, many_local, LOCAL_TARGETS
            ),
            _parallel_row(
                f"bare file work only, {LOCAL_TARGETS} dirs (floor)",
                one_raw,
                many_raw,
                LOCAL_TARGETS,
            ),
            *ssh_rows,
        ],
    )
    table(
        f"Deploy: unchanged redeploy vs first deploy, {mb:.1f} MB bundle (best of 5; throttled: of 3)",
        ["target", "first deploy", "unchanged redeploy", "ratio (goal ≤ 0.2×)"],
        unchanged_rows,
    )


async def _throttled(
    server: Any,
    tmp: Path,
    new_root: Callable[[], Path],
    bundle: Any,
    options: Any,
    ssh: Any,
    mbit: int,
) -> tuple[float, float]:
    """First vs unchanged deploy through a proxy limited to ``mbit`` Mbit/s (best of 3)."""
    from dataclasses import replace

    from edge_sdk.fleet.deploy import deploy_async
    from tests.sshd import DropProxy

    async with DropProxy(server.port, rate=mbit * 1e6 / 8) as proxy:
        known = server.write_known_hosts(tmp / f"known_hosts_{proxy.port}", port=proxy.port)
        via = replace(ssh, known_hosts=known)

        def uri(root: Path) -> str:
            return f"ssh://root@127.0.0.1:{proxy.port}{root}"

        async def timed(root: Path) -> float:
            start = time.perf_counter()
            await deploy_async(bundle, uri(root), options, ssh=via)
            return time.perf_counter() - start

        first = min([await timed(new_root()) for _ in range(3)])
        root = new_root()
        await timed(root)
        same = min([await timed(root) for _ in range(3)])
    return first, same


def _raw_install(data: bytes, root: Path) -> None:
    """What any safe install must do: temp write, fsync, read back + SHA-256, rename."""
    temp, final = root / ".bench.partial", root / "bench.edgepkg"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert hashlib.sha256(temp.read_bytes()).digest() == hashlib.sha256(data).digest()
    os.replace(temp, final)


def _parallel_row(what: str, one: float, many: float, n: int) -> list[str]:
    return [
        what,
        f"{one * 1000:.0f} ms",
        f"{many * 1000:.0f} ms",
        f"{many / one:.2f}×",
        f"{many / n * 1000:.1f} ms",
    ]


def _unchanged_row(what: str, first: float, same: float) -> list[str]:
    return [what, f"{first * 1000:.0f} ms", f"{same * 1000:.0f} ms", f"{same / first:.2f}×"]


if __name__ == "__main__":
    print(f"edge-sdk deploy benchmark on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    deploy_suite()
