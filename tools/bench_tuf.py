"""Benchmark: a fleet of simulated device agents polling one TUF repository served by nginx.

Each simulated device is a real :class:`edge_sdk.fleet.agent.Agent` with its own state and install
directories and its own HTTP connection pool; they poll concurrently from a thread pool. nginx's
access log (bytes sent per request, including headers, tagged with each agent's User-Agent) gives
requests and bytes per device for three rounds:

* ``install``: every device installs v1 from scratch (first contact);
* ``idle``: nothing new was published (the cost every poll interval pays);
* ``update``: v2 was published; every device fetches new metadata and the bundle and installs it.

Then it scales the figures to a fleet (default 100,000 devices) on a CDN, at per-request and
per-GB prices given on the command line (assumptions, printed with the result).

    .venv/bin/python tools/bench_tuf.py [--agents 200] [--workers 64] [--bundle-kib 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_sdk.errors import EdgeSDKError
from edge_sdk.fleet import tuf_repo
from edge_sdk.fleet.agent import Agent
from edge_sdk.fleet.transports import RetryPolicy
from edge_sdk.format.bundle import save_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import TrustStore, generate_key
from tools.tuf_server import RepoServer


@dataclass(frozen=True)
class Round:
    """One concurrent poll of every agent, as nginx saw it."""

    name: str
    agents: int
    wall: float
    mean_poll: float
    requests: int
    bytes_sent: int
    requests_per_agent: tuple[int, int]
    bytes_per_agent: tuple[int, int]
    converged: int
    failures: int

    @property
    def mean_requests(self) -> float:
        return self.requests / self.agents

    @property
    def mean_bytes(self) -> float:
        return self.bytes_sent / self.agents


def _bundle(path: Path, version: int, size: int, signer: object, device: object) -> Path:
    # Random bytes stand in for the model: the agent verifies and installs, it never runs it.
    sealed = seal_bundle(
        os.urandom(size), name="model", version=version, target=Target("x86_64"),
        signers=[signer], recipients=[device.public],  # type: ignore[attr-defined]
    )  # fmt: skip
    save_bundle(sealed, path)
    return path


def run_fleet(
    server: RepoServer,
    workdir: Path,
    *,
    agents: int = 200,
    workers: int = 64,
    bundle_size: int = 4096,
) -> dict[str, Round]:
    """Run the install, idle and update rounds for ``agents`` devices; figures per round."""
    repo = workdir / "repo"
    tuf_repo.init_repo(repo)
    url = server.add(f"bench-{os.getpid()}-{time.monotonic_ns()}", repo)
    publisher, device = generate_key("signing"), generate_key("device")
    trust = TrustStore.from_keys([publisher.public])
    from tuf.ngclient import UpdaterConfig

    fleet = [
        Agent(
            url, repo / "metadata" / "root.json", workdir / f"dev{i}" / "state",
            workdir / f"dev{i}" / "install", trust, hardware_ids=("x86_64",),
            config=UpdaterConfig(app_user_agent=f"agent-{i}"),
            retry=RetryPolicy(attempts=5, base_delay=0.05, max_delay=1.0),
        )
        for i in range(agents)
    ]  # fmt: skip

    def poll_all(name: str, expect: int) -> Round:
        mark = server.mark()
        durations: list[float] = []
        failed: list[EdgeSDKError] = []

        def one(agent: Agent) -> None:
            started = time.monotonic()
            try:
                agent.poll().raise_for_errors()
            except EdgeSDKError as exc:
                failed.append(exc)
            durations.append(time.monotonic() - started)

        started = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, fleet))
        wall = time.monotonic() - started
        time.sleep(0.1)  # nginx writes a log line once the response is fully sent
        per_requests = dict.fromkeys(range(agents), 0)
        per_bytes = dict.fromkeys(range(agents), 0)
        logged = server.requests(mark)
        for request in logged:
            tag = request.user_agent.split(" ", 1)[0]
            if tag.startswith("agent-"):
                index = int(tag.removeprefix("agent-"))
                per_requests[index] += 1
                per_bytes[index] += request.bytes_sent
        converged = 0
        for i in range(agents):
            link = workdir / f"dev{i}" / "install" / "model" / "current"
            if link.is_symlink() and os.readlink(link).startswith(f"releases/{expect}-"):
                converged += 1
        return Round(
            name, agents, wall, statistics.mean(durations), len(logged),
            sum(r.bytes_sent for r in logged),
            (min(per_requests.values()), max(per_requests.values())),
            (min(per_bytes.values()), max(per_bytes.values())),
            converged, len(failed),
        )  # fmt: skip

    tuf_repo.publish([_bundle(workdir / "v1.edgepkg", 1, bundle_size, publisher, device)], repo)
    rounds = {"install": poll_all("install", 1), "idle": poll_all("idle", 1)}
    tuf_repo.publish([_bundle(workdir / "v2.edgepkg", 2, bundle_size, publisher, device)], repo)
    rounds["update"] = poll_all("update", 2)
    return rounds


def markdown(rounds: dict[str, Round], bundle_bytes: int) -> str:
    lines = [
        f"bundle file: {bundle_bytes} bytes",
        "",
        "| round | agents | wall time (s) | mean poll (s) | requests/agent "
        "| bytes/agent on the wire | converged | failures |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rounds.values():
        req = (
            f"{r.requests_per_agent[0]}"
            if r.requests_per_agent[0] == r.requests_per_agent[1]
            else f"{r.requests_per_agent[0]}–{r.requests_per_agent[1]}"
        )
        lines.append(
            f"| {r.name} | {r.agents} | {r.wall:.2f} | {r.mean_poll:.3f} | {req} | "
            f"{r.mean_bytes:,.0f} ({r.bytes_per_agent[0]:,}–{r.bytes_per_agent[1]:,}) | "
            f"{r.converged}/{r.agents} | {r.failures} |"
        )
    return "\n".join(lines)


def fleet_cost(
    rounds: dict[str, Round], devices: int, per_10k_requests: float, per_gb: float
) -> str:
    lines = [
        "",
        f"Scaled to {devices:,} devices (assumed CDN prices: ${per_10k_requests} per 10,000 "
        f"requests, ${per_gb} per GB transferred out):",
        "",
        "| per poll of the whole fleet | requests | GB | request cost | transfer cost | total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("idle", "update"):
        r = rounds[name]
        requests = r.mean_requests * devices
        gigabytes = r.mean_bytes * devices / 1e9
        req_cost = requests / 10_000 * per_10k_requests
        gb_cost = gigabytes * per_gb
        lines.append(
            f"| {name} | {requests:,.0f} | {gigabytes:,.3f} | ${req_cost:,.2f} | "
            f"${gb_cost:,.2f} | ${req_cost + gb_cost:,.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--workers", type=int, help="agents polling at once (default: all)")
    parser.add_argument("--bundle-kib", type=int, default=256, help="model size in the bundle")
    parser.add_argument("--devices", type=int, default=100_000, help="fleet size to scale to")
    parser.add_argument("--price-per-10k-requests", type=float, default=0.0100)
    parser.add_argument("--price-per-gb", type=float, default=0.085)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tuf-") as tmp:
        server = RepoServer.start(Path(tmp) / "server")
        if server.kind != "nginx":
            print(f"note: nginx not found, serving with {server.kind}", file=sys.stderr)
        try:
            rounds = run_fleet(
                server, Path(tmp) / "fleet", agents=args.agents, workers=args.workers or args.agents,
                bundle_size=args.bundle_kib * 1024,
            )  # fmt: skip
            bundle_bytes = (Path(tmp) / "fleet" / "v2.edgepkg").stat().st_size
        finally:
            server.stop()
    at_once = args.workers or args.agents
    print(f"server: {server.kind}; {os.cpu_count()} CPUs; {at_once} agents polling at once\n")
    print(markdown(rounds, bundle_bytes))
    print(fleet_cost(rounds, args.devices, args.price_per_10k_requests, args.price_per_gb))


if __name__ == "__main__":
    main()
