"""docs/FORMAT.md's size limits for 2-8 GB payloads, held to the code that enforces them.

The multi-GB bundles themselves are the benchmark (tools/bench_transfers.py); here the headers
of such bundles are parsed for real (signed manifests that declare them) without their payload.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_sdk.errors import BundleFormatError, IntegrityError, PayloadTooLargeError
from edge_sdk.format.bundle import DEFAULT_LIMITS, Limits, read_header
from edge_sdk.format.encryption import _nonce, chunk_count, ciphertext_size
from edge_sdk.format.verify import Policy, open_verified
from edge_sdk.keys import TrustStore, generate_key
from tools.bench_transfers import header_for, write_signed_only_bundle

FORMAT_MD = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"


def _table() -> list[tuple[int, int, int, int, str]]:
    text = FORMAT_MD.read_text()
    section = text[text.index("### Size limits for large payloads") :]
    section = section[: section.index("\n\n* ")]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0][:1].isdigit():
            nums = [int(re.sub(r"[^0-9]", "", c.split(" ")[0])) for c in cells[:4]]
            rows.append((nums[0], nums[1], nums[2], nums[3], cells[4]))
    return rows


def test_the_documented_table_is_what_the_code_computes() -> None:
    rows = _table()
    assert len(rows) == 6
    for plain, chunk, n, payload, verdict in rows:
        assert chunk_count(plain, chunk) == n
        assert ciphertext_size(plain, chunk) == payload
        fits = (
            payload <= DEFAULT_LIMITS.max_payload_bytes and plain <= DEFAULT_LIMITS.max_model_bytes
        )
        assert fits == (verdict == "opens"), (plain, chunk, verdict)


def test_chunk_nonces_stay_distinct_past_32_bits() -> None:
    """The index is a u64 in the nonce: chunk 2**32 does not wrap onto chunk 0."""
    nonces = {_nonce(i) for i in (0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63)}
    assert len(nonces) == 6
    assert all(len(n) == 12 for n in nonces)


@pytest.mark.parametrize("size", [2_000_000_000, 3_000_000_000, 4 * 1024**3])
def test_a_signed_header_declaring_a_multi_gb_payload_is_accepted(size: int) -> None:
    signer = generate_key("signing")
    prefix = header_for(size, signer)
    header = read_header(prefix, len(prefix) + size, trust=TrustStore.from_keys([signer.public]))
    assert header.manifest.payload.size == size
    assert header.manifest.model.size == size


def test_past_the_default_cap_is_too_large_and_a_raised_cap_reads_it() -> None:
    signer = generate_key("signing")
    size = 8 * 1024**3
    prefix = header_for(size, signer)
    trust = TrustStore.from_keys([signer.public])
    with pytest.raises(PayloadTooLargeError) as caught:
        read_header(prefix, len(prefix) + size, trust=trust)
    assert caught.value.exit_code == 13
    raised = Limits(max_payload_bytes=16 * 1024**3, max_model_bytes=16 * 1024**3)
    assert read_header(prefix, len(prefix) + size, raised, trust=trust).manifest.model.size == size


def test_a_header_declaring_3_gb_over_a_short_file_is_refused() -> None:
    signer = generate_key("signing")
    prefix = header_for(3_000_000_000, signer)
    with pytest.raises(BundleFormatError):
        read_header(prefix, len(prefix) + 1000, trust=TrustStore.from_keys([signer.public]))


def test_the_fast_path_bundle_verifies_and_a_flipped_byte_does_not(tmp_path: Path) -> None:
    """The generator the benchmark uses makes real, verifiable bundles (a few MB here)."""
    signer = generate_key("signing")
    path = tmp_path / "b.edgepkg"
    write_signed_only_bundle(path, 5 * 1024 * 1024 + 7, signer)
    policy = Policy(TrustStore.from_keys([signer.public]))
    assert open_verified(path, policy, decrypt=False).verification.manifest.model.size == (
        5 * 1024 * 1024 + 7
    )
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        open_verified(path, policy, decrypt=False)


_PEAK = r"""
import sys
from edge_sdk.cli import app
sys.argv = ["edge-sdk", *sys.argv[1:]]
try:
    app()
except SystemExit as exc:
    assert not exc.code, exc.code
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec, so
# a child of a large test process would report the parent's peak.
hwm = [l for l in open("/proc/self/status").read().splitlines() if l.startswith("VmHWM:")]
print(int(hwm[0].split()[1]) * 1024)
"""


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_inspect_and_verify_read_a_large_bundle_in_bounded_memory(
    tmp_path: Path, command: str
) -> None:
    """Peak RSS of the real CLI on a 300 MB bundle stays far below the bundle: the payload is
    hashed through small buffers (verify) or not read at all (inspect)."""
    import subprocess
    import sys

    signer = generate_key("signing")
    path = tmp_path / "big.edgepkg"
    size = 300 * 1024 * 1024
    write_signed_only_bundle(path, size, signer)
    pub = tmp_path / "signer.pub"
    pub.write_bytes(signer.public.to_pem())
    args = [command, str(path)] + (["--trust", str(pub)] if command == "verify" else [])
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    peak = int(done.stdout.strip().splitlines()[-1])
    assert peak < size // 2, f"{command}: peak RSS {peak} for a {size}-byte bundle"
