"""Key slips at fleet scale: one sealed release, a signed slip for each of N devices.

A bundle sealed for a large fleet lists only a few in-bundle recipients — the publisher's escrow
key at least, since format 1 requires an encrypted bundle to name one — and every device gets a
key slip (:mod:`edge_sdk.format.key_slip`) instead. The payload is encrypted once; issuing a slip
costs one HPKE seal and one signature per device (about 0.2 ms with X25519 and Ed25519), so the
time grows linearly with the fleet and not with the model.

The content key comes from the bundle's own recipient entry for the escrow key, and is checked
against the payload's first chunk before any slip is made: the envelope is not signed, so an
entry someone swapped in could otherwise make every slip wrap a key that opens nothing.

Revoking a device is not issuing its slip for the next release: every seal draws a fresh content
key, so the slips and the keys a revoked device holds open nothing newer (docs/TUF.md,
"Revoking a device").
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import DecryptionError, KeyFileError, UsageError
from edge_sdk.files import FileSwapped, commit_temp, identity, is_same_file, open_dir
from edge_sdk.format.bundle import Bundle
from edge_sdk.format.encryption import TAG_SIZE, PayloadDecryptor, unwrap_content_key
from edge_sdk.format.key_slip import SLIP_SUFFIX, make_key_slip
from edge_sdk.keys import PrivateKey, PublicKey, load_public_key


@dataclass(frozen=True)
class SlipReport:
    """What :func:`write_key_slips` wrote."""

    directory: Path
    count: int
    total_bytes: int
    largest: int
    excluded: tuple[str, ...]


def slip_name(key_id: str) -> str:
    """A device's slip file name in a slip directory: its key id, then ``.edgeslip``."""
    return key_id + SLIP_SUFFIX


def content_key_of(bundle: Bundle, opener: PrivateKey) -> bytes:
    """The bundle's content key, unwrapped with ``opener`` and checked against the payload.

    Raises:
        UsageError: the bundle is signed-only, or its payload was not kept in memory.
        DecryptionError: ``opener`` is not a recipient, or the key does not open the payload.
    """
    payload = bundle.manifest.payload
    if not payload.encrypted:
        raise UsageError("a signed-only bundle has no content key to issue slips for")
    if bundle.streamed:
        raise UsageError("the bundle was read for an audit: its payload was not kept")
    try:
        key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, opener)
    except DecryptionError as exc:
        raise DecryptionError(
            exc.message,
            hint=exc.hint
            or "the opener must be a recipient: package the release with "
            f"--recipient for that key's .pub (key {opener.key_id[:16]}), then issue the slips",
        ) from None
    stored = (
        payload.compressed_size
        if payload.compression != "none" and payload.compressed_size is not None
        else bundle.manifest.model.size
    )
    decryptor = PayloadDecryptor(
        payload.encryption, key, bytes.fromhex(payload.content_id), payload.chunk_size, stored
    )
    first = min(payload.chunk_size, stored)
    scratch = memoryview(bytearray(first))
    try:
        decryptor.open_into(memoryview(bundle.payload)[: first + TAG_SIZE], scratch)
    except DecryptionError:
        raise DecryptionError(
            f"the content key unwrapped with key {opener.key_id[:16]} does not open this "
            "bundle's payload: its recipient entry was replaced",
            hint="re-read the bundle from the publisher's own copy",
        ) from None
    finally:
        scratch[:] = bytes(len(scratch))  # the first chunk of plaintext: not kept
    return key


def issue_key_slips(
    bundle: Bundle,
    content_key: bytes,
    devices: Iterable[PublicKey],
    signers: Sequence[PrivateKey],
) -> Iterator[tuple[PublicKey, bytes]]:
    """One signed slip per device, in order (each device key once; a repeat is an error).

    Every signer must be one of the bundle's own signers: a device checks a slip against the
    same trust that accepts the bundle, so a slip signed by any other key would be refused on
    every board after the release was published (and its payload downloaded).

    Raises:
        UsageError: a key is not a device key, or appears twice; a signer did not sign the bundle.
    """
    signed_by = {s.key_id for s in bundle.signatures}
    strangers = [k.key_id[:16] for k in signers if k.key_id not in signed_by]
    if strangers:
        raise UsageError(
            f"signing key {', '.join(strangers)} did not sign bundle {bundle.manifest.name} "
            f"v{bundle.manifest.version} (signed by {', '.join(k[:16] for k in sorted(signed_by))}): "
            "devices would refuse slips it signs",
            hint="sign the slips with the key that signed the bundle (edge-sdk inspect lists it; "
            "after edge-sdk init it is ~/.config/edge-sdk/keys/*-publisher.key)",
        )
    return _issue(bundle, content_key, devices, signers)  # checked above, before any slip


def _issue(
    bundle: Bundle,
    content_key: bytes,
    devices: Iterable[PublicKey],
    signers: Sequence[PrivateKey],
) -> Iterator[tuple[PublicKey, bytes]]:
    seen: set[str] = set()
    for device in devices:
        if device.key_id in seen:
            raise UsageError(f"device key {device.key_id[:16]} is listed twice")
        seen.add(device.key_id)
        yield device, make_key_slip(bundle, content_key, device, signers)


def load_device_keys(paths: Iterable[str | os.PathLike[str]]) -> list[PublicKey]:
    """Device public keys from ``.pub`` files and directories of them (sorted by file name).

    Raises:
        KeyFileError: a file is not a device public key, or a path does not exist.
    """
    keys: list[PublicKey] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".pub")
            keys += [load_public_key(p, kind="device") for p in files]
        elif path.exists():
            keys.append(load_public_key(path, kind="device"))
        else:
            raise KeyFileError(f"device key path {path} does not exist")
    return keys


def write_key_slips(
    out: str | os.PathLike[str],
    bundle: Bundle,
    content_key: bytes,
    devices: Iterable[PublicKey],
    signers: Sequence[PrivateKey],
    *,
    exclude: Iterable[str] = (),
) -> SlipReport:
    """Write ``<key id>.edgeslip`` for every device not in ``exclude`` (key ids) into ``out``.

    ``out`` must not exist yet: the slips are written into a private, randomly named directory
    beside it, which is renamed to ``out`` once complete. A reader therefore never sees half a
    release's slips, and nothing another user planted in ``out`` is followed or overwritten.

    Raises:
        UsageError: ``out`` exists, or a device is listed twice.
        KeySlipError: a slip would be over the size cap.
    """
    target = Path(out)
    if target.exists() or target.is_symlink():
        raise UsageError(f"{target} exists; slips are written into a new directory",
                         hint="choose a new --out for each release")  # fmt: skip
    revoked = set(exclude)
    wanted: list[PublicKey] = []
    skipped: list[PublicKey] = []
    for device in devices:
        (skipped if device.key_id in revoked else wanted).append(device)
    slips = issue_key_slips(bundle, content_key, wanted, signers)
    try:
        count, total, largest = _write_staged(target, slips)
    except FileSwapped as exc:
        raise UsageError(f"cannot write slips to {target}: {exc.strerror}",
                         hint="someone else can write in its directory: use a private one") from None  # fmt: skip
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise UsageError(f"{target} exists; slips are written into a new directory",
                             hint="choose a new --out for each release") from None  # fmt: skip
        raise UsageError(f"cannot write slips to {target}: {exc.strerror or exc}") from None
    return SlipReport(target, count, total, largest, tuple(d.key_id for d in skipped))


#: The staging directory, reopened by name right after mkdir: never through a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_staged(target: Path, slips: Iterator[tuple[PublicKey, bytes]]) -> tuple[int, int, int]:
    """Write the slips into a private staging directory beside ``target``, then rename it.

    The parent is opened once; the staging directory is created, filled, made readable and
    renamed through descriptors (``dir_fd=``), so another user who can write in the parent
    cannot redirect any of it by swapping a path component, and the renamed directory is
    checked to be ours (:func:`edge_sdk.files.is_same_file`).
    """
    parent_fd = open_dir(target.parent)
    try:
        staging = f".{target.name}.tmp-{secrets.token_hex(8)}"
        os.mkdir(staging, 0o700, dir_fd=parent_fd)
        staging_fd = os.open(staging, _DIR_FLAGS, dir_fd=parent_fd)
        ours = identity(os.fstat(staging_fd))
        count = total = largest = 0
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            for device, raw in slips:
                fd = os.open(slip_name(device.key_id), flags, 0o644, dir_fd=staging_fd)
                try:
                    os.write(fd, raw)
                finally:
                    os.close(fd)
                count += 1
                total += len(raw)
                largest = max(largest, len(raw))
            # Slips are public (each opens only with its device's key); a web server serves them.
            os.fchmod(staging_fd, 0o755)
            commit_temp(parent_fd, staging, target.name, ours)
        except BaseException:
            for leftover in os.listdir(staging_fd):
                with contextlib.suppress(OSError):
                    os.unlink(leftover, dir_fd=staging_fd)
            if is_same_file(parent_fd, staging, ours):
                with contextlib.suppress(OSError):
                    os.rmdir(staging, dir_fd=parent_fd)
            raise
        finally:
            os.close(staging_fd)
        return count, total, largest
    finally:
        os.close(parent_fd)
