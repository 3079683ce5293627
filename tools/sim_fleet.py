"""Simulation: one release for 1,000 / 10,000 / 100,000 devices through a TUF repository served
by a real nginx, with key slips in hashed bins, and a sample of real agent processes pulling it.

For each fleet size it times the one command a publisher runs, ``edge-sdk repo publish BUNDLE
--devices DIR --opener ESCROW --signing-key KEY --exclude REVOKED.pub`` (load N device keys, issue
N signed slips, store them, write the bins, sign targets/snapshot/timestamp), as a subprocess on
a fresh repository; measures the repository; then has one in-process agent pull the release and
reads nginx's access log for what it downloaded (top-level metadata, its bin, its slip, the
payload) and for a second poll with nothing new. At the largest size, ``--agents`` real
``edge-sdk agent --once`` processes (each its own key, state and install directory) pull,
verify and install the release, and each installed release is loaded and run with LiteRT; one
of them was revoked (``--exclude``) and must get a typed refusal (exit 31) and nothing to open.

nginx compresses JSON (``gzip on``, as tools/tuf_server.py and docs/TUF.md configure it) and the
agent asks for it: the metadata columns are bytes as sent (nginx's ``$body_bytes_sent``), next to
the same files' plain size.

Device keys (X25519) are generated once and cached (``--cache``): raw private keys in
``seeds.bin`` and one ``.pub`` file per device and fleet size. With ``--token-devices N`` the
largest fleet also has N devices whose P-256 keys are generated inside a real SoftHSM2 token
(never extractable; only their ``.pub`` reaches the publisher, as a second ``--devices``
directory of the same one command); N of the ``--agents`` processes are those devices, with the
``pkcs11:`` URI as ``--device-key``, and each loads and runs what it installed through the token
(the HPKE unwrap's Diffie-Hellman happens in the token).

    .venv/bin/python tools/sim_fleet.py [--devices 1000 10000 100000] [--agents 50]
        [--token-devices 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import x25519

import edge_sdk
from edge_sdk.fleet import tuf_repo
from edge_sdk.fleet.agent import Agent
from edge_sdk.fleet.transports import RetryPolicy
from edge_sdk.format.bundle import save_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, PublicKey, TrustStore, generate_key, save_keypair
from tools.bench_common import table
from tools.tuf_server import RepoServer

REPO = Path(__file__).resolve().parent.parent
MODEL = (REPO / "tests" / "vectors" / "model.tflite").read_bytes()
X = [[1.0, 1.0, 1.0, 1.0]]


def _device(seed: bytes) -> PrivateKey:
    private = x25519.X25519PrivateKey.from_private_bytes(seed)
    return PrivateKey(PublicKey.from_components([private.public_key()], "device"), (private,))


def fleet_keys(cache: Path, count: int) -> tuple[list[bytes], float]:
    """``count`` cached X25519 private keys (generated on first use); seconds spent generating."""
    cache.mkdir(parents=True, exist_ok=True)
    seeds_file = cache / "seeds.bin"
    data = seeds_file.read_bytes() if seeds_file.exists() else b""
    started = time.perf_counter()
    if len(data) < 32 * count:
        fresh = [
            generate_key("device", "x25519").components[0] for _ in range(count - len(data) // 32)
        ]
        from cryptography.hazmat.primitives import serialization as ser

        raw = ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption()
        data += b"".join(k.private_bytes(*raw) for k in fresh)
        seeds_file.write_bytes(data)
    seconds = time.perf_counter() - started
    return [data[i * 32 : (i + 1) * 32] for i in range(count)], seconds


def pub_dir(cache: Path, seeds: list[bytes]) -> Path:
    """A directory of the fleet's ``.pub`` files (what a publisher has: public keys only)."""
    directory = cache / f"pub-{len(seeds)}"
    if not (directory / ".complete").exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        for i, seed in enumerate(seeds):
            (directory / f"dev-{i:06d}.pub").write_bytes(_device(seed).public.to_pem())
        (directory / ".complete").touch()
    return directory


def du(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes on disk) under ``path``."""
    apparent = disk = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            apparent += st.st_size
            disk += st.st_blocks * 512
    return apparent, disk


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MiB"


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_sdk", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip


def categorize(repo: Path, files: list[tuple[str, int]]) -> dict[str, int]:
    """Bytes per kind of file one poll downloaded, and the plain size of the metadata."""
    out = {"top": 0, "bin": 0, "bin_files": 0, "slip": 0, "slip_files": 0, "payload": 0, "plain": 0}
    for name, size in files:
        if name.startswith("metadata/"):
            kind = "bin" if ".bin-" in name else "top"
            out["plain"] += (repo / name).stat().st_size
        else:
            kind = "slip" if name.startswith("targets/slips/") else "payload"
        out[kind] += size
        if kind in ("bin", "slip"):
            out[kind + "_files"] += 1
    return out


def token_devices(work: Path, count: int) -> tuple[Any, Path, list[str]]:
    """A SoftHSM2 token holding ``count`` P-256 device keys: (the token, their .pub directory,
    their ``pkcs11:`` URIs)."""
    from edge_sdk.keys.key_uri import Pkcs11Uri
    from edge_sdk.keys.pkcs11 import generate_pkcs11_key
    from tests.hardware import SoftHsm, hardware_missing

    missing = hardware_missing()
    if missing is not None:
        raise SystemExit(f"--token-devices needs SoftHSM2: {missing}")
    hsm = SoftHsm.start(work / "softhsm", tokens=("edge",))
    pubs = work / "token-devices"
    pubs.mkdir()
    uris = [hsm.uri(f"sim-device-{i}") for i in range(count)]
    for i, uri in enumerate(uris):
        generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="device", alg="p256", out=pubs / f"tok-{i}")
    return hsm, pubs, uris


def simulate(
    work: Path, server: RepoServer, seeds: list[bytes], cache: Path, agents: int,
    tokens: tuple[Path, list[str]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    n = len(seeds)
    here = work / f"n{n}"
    here.mkdir()
    publisher = generate_key("signing")
    escrow = generate_key("device")
    signer, trust = save_keypair(publisher, here / "publisher")
    opener, _ = save_keypair(escrow, here / "escrow")
    bundle = here / "digits.edgepkg"
    save_bundle(seal_bundle(MODEL, name="digits", version=1, target=Target("x86_64"),
                            signers=[publisher], recipients=[escrow.public]), bundle)  # fmt: skip
    repo = here / "repo"
    tuf_repo.init_repo(repo)
    url = server.add(f"n{n}", repo)
    devices = pub_dir(cache, seeds)
    # The in-process probe, the agent processes, and (last) the revoked device, spread evenly.
    # With token devices, they are some of the ``agents`` processes.
    file_agents = max(agents - len(tokens[1]), 0) if tokens else agents
    sample = sorted({round(i * (n - 1) / (file_agents + 1)) for i in range(file_agents + 2)})
    revoked = sample[-1]
    extra: list[str | Path] = ["--devices", tokens[0]] if tokens else []
    started = time.perf_counter()
    done = cli("repo", "publish", bundle, "--repo", repo, "--trust", trust, "--devices", devices,
               *extra, "--opener", opener, "--signing-key", signer,
               "--exclude", devices / f"dev-{revoked:06d}.pub", "--json")  # fmt: skip
    publish_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"publish failed ({done.returncode}): {done.stderr[-2000:]}")
    published = json.loads(done.stdout)
    apparent, disk = du(repo)
    meta_apparent, _ = du(repo / "metadata")
    slips_apparent, slips_disk = du(repo / "targets" / "slips")
    store = TrustStore.from_keys([publisher.public])

    def agent(index: int) -> Agent:
        return Agent(url, repo / "metadata" / "1.root.json", here / f"a{index}" / "state",
                     here / f"a{index}" / "install", store, hardware_ids=("x86_64",),
                     device_key=_device(seeds[index]),
                     retry=RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0))  # fmt: skip

    probe = agent(sample[0])
    mark = server.mark()
    first = probe.poll()
    assert [o.status for o in first.outcomes] == ["installed"], first.outcomes
    got = [
        (r.uri.split(f"/n{n}/", 1)[1], r.body_bytes)
        for r in server.requests(mark)
        if r.status == 200
    ]
    cost = categorize(repo, got)
    # One bin and one slip, or the figures below are not what a device pays.
    assert cost["bin_files"] == cost["slip_files"] == 1, got
    mark = server.mark()
    started = time.perf_counter()
    idle = probe.poll()
    idle_s = time.perf_counter() - started
    assert [o.status for o in idle.outcomes] == ["up-to-date"], idle.outcomes
    idle_files = [(r.uri, r.body_bytes) for r in server.requests(mark)]
    row: dict[str, Any] = {
        "devices": n, "token_devices": len(tokens[1]) if tokens else 0,
        "slips": published["slips"], "bins": published["bins"],
        "publish_s": publish_s, "repo": apparent, "repo_disk": disk, "metadata": meta_apparent,
        "slips_bytes": slips_apparent, "slips_disk": slips_disk, **cost,
        "idle_s": idle_s, "idle_requests": len(idle_files),
        "idle_bytes": sum(b for _, b in idle_files),
    }  # fmt: skip
    if agents:
        # Each agent: (directory name, its --device-key: a key file or a token URI).
        sampled: list[tuple[str, str]] = []
        for index in sample[1:]:
            (here / f"p{index}").mkdir()
            key, _ = save_keypair(_device(seeds[index]), here / f"p{index}" / "device")
            sampled.append((f"p{index}", str(key)))
        sampled += [(f"t{i}", uri) for i, uri in enumerate(tokens[1] if tokens else [])]
        row.update(run_agents(here, url, repo, trust, sampled, f"p{revoked}"))
    return row


def run_agents(
    here: Path, url: str, repo: Path, trust: Path, sampled: list[tuple[str, str]], revoked: str
) -> dict[str, Any]:
    """``edge-sdk agent --once`` processes, two at a time (this machine has two cores)."""

    def one(device: tuple[str, str]) -> tuple[str, int, dict[str, Any]]:
        name, key = device
        done = cli("agent", "--repo", url, "--root", repo / "metadata" / "1.root.json",
                   "--state-dir", here / name / "state",
                   "--install-dir", here / name / "install", "--trust", trust,
                   "--device-key", key, "--hardware-id", "x86_64", "--json")  # fmt: skip
        return name, done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, sampled))
    wall = time.perf_counter() - started
    keys = dict(sampled)
    ran = refused = token_ran = token_slip = 0
    for name, code, out in results:
        outcome = (out.get("outcomes") or [{}])[0]
        current = here / name / "install" / "digits" / "current"
        if name == revoked:
            if code == 31 and outcome.get("error") == "key-slip" and not current.exists():
                refused += 1
            continue
        if code != 0 or outcome.get("status") != "installed":
            print(f"agent {name}: exit {code}, {outcome}", file=sys.stderr)
            continue
        # The installed release, opened as the board would: its slip beside `current`, the
        # device key a file or the token's pkcs11: URI.
        with edge_sdk.load(current, trust=trust, device_key=keys[name],
                           state_dir=here / name / "load",
                           allow_target_mismatch=True) as model:  # fmt: skip
            if model.predict(__import__("numpy").asarray(X, "float32")).shape == (1, 3):
                ran += 1
                if keys[name].startswith("pkcs11:"):
                    token_ran += 1
                    (slip,) = (current.parent / "releases").glob("*.edgeslip")
                    token_slip = max(token_slip, slip.stat().st_size)
    return {"agents": len(sampled), "agents_ran": ran, "revoked_refused": refused,
            "token_agents": sum(k.startswith("pkcs11:") for _, k in sampled),
            "token_agents_ran": token_ran, "token_slip": token_slip,
            "agents_wall_s": wall}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument(
        "--agents", type=int, default=50, help="agent processes at the largest size"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "edge-sdk-sim-fleet"
    )
    parser.add_argument(
        "--token-devices", type=int, default=0,
        help="at the largest size, also N devices with P-256 keys in SoftHSM2 (N of the agents)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    seeds, generating = fleet_keys(args.cache, max(args.devices))
    if generating > 1:
        print(f"generated and cached {len(seeds):,} device keys in {generating:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="sim-fleet-"))
    server = RepoServer.start(work / "server")
    hsm = None
    rows = []
    try:
        tokens = None
        if args.token_devices:
            hsm, token_pubs, uris = token_devices(work, args.token_devices)
            tokens = (token_pubs, uris)
        for n in sorted(args.devices):
            largest = n == max(args.devices)
            agents = args.agents if largest else 0
            rows.append(simulate(work, server, seeds[:n], args.cache, agents,
                                 tokens if largest else None))  # fmt: skip
            print(f"{n:,} devices done", file=sys.stderr)
    finally:
        server.stop()
        if hsm is not None:
            hsm.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"server: {server.kind}")
    table(
        "One release for the fleet, through TUF hashed bins (nginx on 127.0.0.1)",
        ["devices", "bins", "publish (one command)", "per 1,000 devices", "repository (on disk)", "slips (on disk)",
         "device metadata / release (plain)", "of it: its bin", "its slip", "idle poll"],
        [[f"{r['devices']:,}" + (f" + {r['token_devices']} P-256 in a token" if r["token_devices"] else ""),
          f"{r['bins']:,}", f"{r['publish_s']:.1f} s",
          f"{r['publish_s'] * 1000 / (r['devices'] + r['token_devices']):.2f} s",
          f"{kib(r['repo'])} ({kib(r['repo_disk'])})", f"{kib(r['slips_bytes'])} ({kib(r['slips_disk'])})",
          f"{kib(r['top'] + r['bin'])} ({kib(r['plain'])})", kib(r["bin"]), f"{r['slip']} B",
          f"{r['idle_requests']} req, {r['idle_bytes']} B, {r['idle_s'] * 1000:.0f} ms"]
         for r in rows],
    )  # fmt: skip
    last = rows[-1]
    if "agents" in last:
        print(f"{last['agents']} agent processes at {last['devices']:,} devices in "
              f"{last['agents_wall_s']:.0f} s: {last['agents_ran']} installed and ran the release "
              f"(LiteRT), revoked device refused with exit 31: {bool(last['revoked_refused'])}")  # fmt: skip
        if last["token_agents"]:
            print(f"of them {last['token_agents']} with a P-256 key in SoftHSM2 (pkcs11: URI): "
                  f"{last['token_agents_ran']} installed and ran it through the token "
                  f"(P-256 slip: {last['token_slip']} B)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
