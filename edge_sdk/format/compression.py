"""Payload compression (zstd) before encryption, and bounded decompression on the device.

The decompressor never trusts the frame header's content size: it streams into a buffer of the
signed model size and refuses to produce a single byte more, so a decompression bomb costs the
device at most the declared size.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_sdk.errors import IntegrityError, PayloadTooLargeError, UnsupportedVersionError, excerpt
from edge_sdk.profiles import DEFAULT_COMPRESSION_LEVEL

from .memory import Buffer, freeze, writable_bytes

DEFAULT_LEVEL = DEFAULT_COMPRESSION_LEVEL


#: The zstd window the packager writes: what a device's decoder holds besides the model while it
#: decompresses. The levels' own windows (4 MiB at level 10, up to 128 MiB) save no measurable
#: bytes on model weights (MobileNetV2: the same to 0.1 %; pruned, 0.3 % more with 1 MiB).
WINDOW_LOG = 20


def compress(data: bytes, method: str, level: int = DEFAULT_LEVEL) -> bytes:
    """Compress the plaintext model with ``method`` (``zstd``), with a 1 MiB window."""
    if method != "zstd":
        raise UnsupportedVersionError(f"unknown compression {excerpt(method)}")
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(data), window_log=WINDOW_LOG, write_content_size=True
    )
    return bytes(zstandard.ZstdCompressor(compression_params=params).compress(data))


def decompress(
    data: Buffer,
    method: str,
    declared_size: int,
    on_chunk: Callable[[memoryview], object] | None = None,
) -> bytes:
    """Decompress into exactly ``declared_size`` bytes, refusing anything larger.

    ``on_chunk`` sees each decompressed piece (a view of the final buffer, never written again)
    as it is produced, so the caller can hash while later pieces are still being decompressed.

    Raises:
        PayloadTooLargeError: the stream would exceed ``declared_size``.
        IntegrityError: the stream is corrupt or shorter than declared.
        UnsupportedVersionError: unknown method.
    """
    obj, view = writable_bytes(declared_size)
    decompress_into(data, method, view, on_chunk)
    return freeze(obj, view)


def decompress_into(
    data: Buffer,
    method: str,
    view: memoryview,
    on_chunk: Callable[[memoryview], object] | None = None,
) -> None:
    """:func:`decompress` into the caller's buffer of exactly the declared size.

    The caller owns ``view`` and so can wipe it when the result is refused (partly written
    plaintext of a bundle that fails must not linger in memory).
    """
    if method != "zstd":
        raise UnsupportedVersionError(f"unknown compression {excerpt(method)}")
    import zstandard

    declared_size = len(view)
    filled = 0
    # One spare byte of room: a stream that would write past the declared size says so by filling
    # it, and nothing is ever written outside the buffer.
    spare = memoryview(bytearray(1))
    reader = zstandard.ZstdDecompressor().stream_reader(memoryview(data), read_across_frames=True)
    try:
        with reader:
            while True:
                # Straight into the model's buffer: no intermediate copy of the output.
                room = view[filled : filled + (1 << 20)] if filled < declared_size else spare
                count = reader.readinto(room)
                if not count:
                    break
                if filled + count > declared_size:
                    raise PayloadTooLargeError(
                        f"decompressed payload exceeds its declared size of {declared_size} bytes"
                    )
                if on_chunk is not None:
                    on_chunk(view[filled : filled + count])
                filled += count
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"payload does not decompress: {excerpt(str(exc), 200)}") from None
    if filled != declared_size:
        # The length reached is not said: nothing derived from a refused plaintext leaves.
        raise IntegrityError(
            f"decompressed payload is shorter than the {declared_size} bytes the manifest signs"
        )
