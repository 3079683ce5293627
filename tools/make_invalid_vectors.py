"""Write the negative conformance vectors: bundles a reader MUST refuse, each with its error kind.

In the spirit of Wycheproof: every file has exactly one defect, made from a well-formed bundle
sealed with the committed test keys (tests/vectors/keys/), re-signed (and its content key
re-wrapped) after the edit wherever that keeps the defect the only one. The index,
tests/vectors/invalid/index.json, says for each file what a reader is given — the trust store, a
device key, the time — and the kind of error it MUST report (docs/FORMAT.md, "Error kinds").
tests/test_conformance_vectors.py holds our reader to it.

    python tools/make_invalid_vectors.py        # rewrites tests/vectors/invalid/

Sealing is randomised (content keys, HPKE, ECDSA), so a run writes different bytes for the same
defects; the committed set is the reference, regenerated only on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.utils import (  # noqa: E402
    decode_dss_signature,
    encode_dss_signature,
)

from edge_sdk.format.bundle import bundle_to_bytes  # noqa: E402
from edge_sdk.format.encryption import _info, _suite, unwrap_content_key, wrap_content_key  # noqa: E402
from edge_sdk.format.manifest import Target  # noqa: E402
from edge_sdk.format.signing import PAYLOAD_TYPE, pae, sign_manifest  # noqa: E402
from edge_sdk.format.strict_json import canonical_bytes  # noqa: E402
from edge_sdk.host.sealing import seal_bundle  # noqa: E402
from edge_sdk.keys import PrivateKey, load_private_key  # noqa: E402
from tests.bundle_parts import Parts  # noqa: E402

VECTORS = REPO / "tests" / "vectors"
OUT = VECTORS / "invalid"
KEYS = VECTORS / "keys"
CREATED = datetime(2026, 11, 28, tzinfo=timezone.utc)
NOW = "2030-01-01T00:00:00Z"
ED25519_L = 2**252 + 27742317777372353535851937790883648493
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _key(name: str) -> PrivateKey:
    path = KEYS / f"{name}.key"
    path.chmod(0o600)  # git keeps no file modes; these are public test keys
    return load_private_key(path)


@dataclass
class Base:
    """A well-formed sealed bundle, and what re-signing and re-wrapping it takes."""

    raw: bytes
    signers: list[PrivateKey]
    devices: list[PrivateKey]
    trust: list[str] = field(default_factory=lambda: ["signer-ed25519"])
    device_key: str | None = "device-x25519"

    @property
    def cek(self) -> bytes:
        parts = self.parts()
        digest = hashlib.sha256(parts.manifest).digest()
        recipients = _entries(parts)
        return unwrap_content_key(recipients, digest, self.devices[0])

    def parts(self) -> Parts:
        return Parts.of(self.raw)

    def reseal(self, parts: Parts, *, signers: list[PrivateKey] | None = None) -> Parts:
        """Sign ``parts.manifest`` again and wrap the same content key for the new manifest."""
        cek = self.cek if self.devices else b""
        sigs = sign_manifest(parts.manifest, signers or self.signers)
        parts.envelope["signatures"] = [_sig_entry(s.key_id, s.alg, s.signature) for s in sigs]
        if self.devices:
            digest = hashlib.sha256(parts.manifest).digest()
            wrapped = wrap_content_key(cek, digest, [d.public for d in self.devices])
            parts.envelope["recipients"] = [
                {"enc": _b64(r.enc), "kem": r.kem, "keyid": r.key_id} for r in wrapped
            ]
        return parts

    def edit(self, change: Callable[[dict[str, Any]], None]) -> bytes:
        """The bundle with its manifest edited (as a JSON value), re-signed and re-wrapped."""
        parts = self.parts()
        manifest = json.loads(parts.manifest)
        change(manifest)
        parts.manifest = canonical_bytes(manifest)
        return self.reseal(parts).join()

    def edit_bytes(self, change: Callable[[bytes], bytes]) -> bytes:
        """The bundle with its manifest bytes edited, re-signed and re-wrapped."""
        parts = self.parts()
        parts.manifest = change(parts.manifest)
        return self.reseal(parts).join()

    def edit_envelope(self, change: Callable[[dict[str, Any]], Any]) -> bytes:
        parts = self.parts()
        change(parts.envelope)
        return parts.join()

    def edit_payload(self, change: Callable[[bytes], bytes], *, resign: bool) -> bytes:
        """The bundle with other payload bytes; with ``resign`` the manifest signs their digest."""
        parts = self.parts()
        parts.payload = change(parts.payload)
        if resign:
            manifest = json.loads(parts.manifest)
            manifest["payload"]["sha256"] = hashlib.sha256(parts.payload).hexdigest()
            manifest["payload"]["size"] = len(parts.payload)
            parts.manifest = canonical_bytes(manifest)
            self.reseal(parts)
        return parts.join()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sig_entry(key_id: str, alg: str, sig: bytes) -> dict[str, str]:
    return {"alg": alg, "keyid": key_id, "sig": _b64(sig)}


def _entries(parts: Parts) -> tuple[Any, ...]:
    from edge_sdk.format.encryption import RecipientEntry

    return tuple(
        RecipientEntry(r["keyid"], r["kem"], base64.b64decode(r["enc"]))
        for r in parts.envelope["recipients"]
    )


def _padding_bits(b64: str) -> str:
    """The same bytes spelled with non-zero padding bits (needs a padded value)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = b64.rstrip("=")
    assert body != b64, "value needs padding"
    return body[:-1] + alphabet[alphabet.index(body[-1]) + 1] + b64[len(body) :]


def flip(at: int) -> Callable[[bytes], bytes]:
    """A function that flips the lowest bit of byte ``at``."""
    return lambda data: data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def manifest_of(base: Base) -> bytes:
    return Parts.of(base.raw).manifest


def _set_header(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    size = struct.calcsize(fmt)
    return raw[:offset] + struct.pack(fmt, value) + raw[offset + size :]


def _p_offset(raw: bytes) -> int:
    parts = Parts.of(raw)
    return 16 + len(parts.manifest) + 4 + len(parts.envelope_bytes())


class Writer:
    """Collects vectors and writes them with their index."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}

    def add(
        self,
        name: str,
        kind: str,
        description: str,
        data: bytes,
        base: Base,
        *,
        trust: list[str] | None = None,
        threshold: int = 1,
        revoked: tuple[str, ...] = (),
        device_key: str | None = "",
        now: str = NOW,
    ) -> None:
        assert name not in self.files, name
        file = f"{name}.edgepkg"
        self.files[file] = data
        self.entries.append(
            {
                "file": file,
                "kind": kind,
                "description": description,
                "trust": trust or base.trust,
                "threshold": threshold,
                "revoked": list(revoked),
                "device_key": base.device_key if device_key == "" else device_key,
                "now": now,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )

    def write(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        for old in OUT.glob("*.edgepkg"):
            old.unlink()
        for file, data in self.files.items():
            (OUT / file).write_bytes(data)
        index = {
            "about": "Bundles a reader MUST refuse, with the error kind it MUST report "
            "(docs/FORMAT.md, 'Conformance vectors'). Keys: tests/vectors/keys/.",
            "vectors": self.entries,
        }
        (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        print(f"wrote {len(self.entries)} invalid vectors to {OUT}")


def main() -> None:
    ed, ec, hy = _key("signer-ed25519"), _key("signer-ecdsa"), _key("signer-hybrid")
    dx, dw = _key("device-x25519"), _key("device-xwing")
    model = (VECTORS / "model.tflite").read_bytes()
    target = Target("x86_64", "ai-edge-litert", "2.3.0", ("x86_64",))

    def seal(
        signers: list[PrivateKey], devices: list[PrivateKey], data: bytes = model, **kw: Any
    ) -> bytes:
        bundle = seal_bundle(
            data, name="vector", version=1, target=target, signers=signers,
            recipients=[d.public for d in devices], created=CREATED, chunk_size=4096, **kw,
        )  # fmt: skip
        return bundle_to_bytes(bundle)

    enc = Base(seal([ed], [dx]), [ed], [dx])
    multi = Base(seal([ed], [dx], bytes(range(256)) * 40), [ed], [dx])  # 10,240 bytes: 3 chunks
    plain = Base(seal([ed], []), [ed], [], device_key=None)
    zplain = Base(seal([ed], [], compression="zstd"), [ed], [], device_key=None)
    hybrid = Base(seal([hy], [dx]), [hy], [dx], trust=["signer-hybrid"])
    ecdsa = Base(seal([ec], [dx]), [ec], [dx], trust=["signer-ecdsa"])
    xwing = Base(seal([ed], [dw]), [ed], [dw], device_key="device-xwing")
    expiring = Base(seal([ed], [dx], expires=datetime(2027, 1, 1, tzinfo=timezone.utc)), [ed], [dx])
    w = Writer()
    raw = enc.raw
    p_at = _p_offset(raw)

    # -- the container ---------------------------------------------------------------------------
    w.add("file-empty", "format", "an empty file", b"", enc)
    w.add(
        "header-bad-magic",
        "format",
        "magic EDGEPKG\\r instead of EDGEPKG\\n",
        b"EDGEPKG\r" + raw[8:],
        enc,
    )
    w.add("header-truncated", "format", "15 bytes: shorter than the 16-byte header", raw[:15], enc)
    w.add("header-version-0", "unsupported", "format version 0", _set_header(raw, 8, ">H", 0), enc)
    w.add("header-version-2", "unsupported", "format version 2", _set_header(raw, 8, ">H", 2), enc)
    w.add(
        "header-flags-1", "unsupported", "header flags 0x0001", _set_header(raw, 10, ">H", 1), enc
    )
    w.add("header-manifest-length-over-cap", "format", "M = 262,145, over the manifest cap",
          _set_header(raw, 12, ">I", 262_145), enc)  # fmt: skip
    w.add("header-manifest-length-past-end", "format", "M runs past the end of the file",
          _set_header(raw, 12, ">I", len(raw)), enc)  # fmt: skip
    m_end = 16 + len(enc.parts().manifest)
    w.add("header-envelope-length-over-cap", "format", "E = 8,388,609, over the envelope cap",
          _set_header(raw, m_end, ">I", 8_388_609), enc)  # fmt: skip
    w.add("header-payload-length-over-cap", "too-large", "P = 4 GiB + 1, over the payload cap",
          _set_header(raw, p_at, ">Q", 2**32 + 1), enc)  # fmt: skip
    w.add("header-payload-length-short", "format", "P one byte short: a byte follows the payload",
          _set_header(raw, p_at, ">Q", len(raw) - p_at - 9), enc)  # fmt: skip
    w.add("file-trailing-byte", "format", "one byte after the payload", raw + b"\0", enc)
    w.add("file-truncated", "format", "the last payload byte is missing", raw[:-1], enc)
    w.add("file-junk-before-payload", "format", "16 bytes inserted between P and the payload "
          "(the last P bytes are still the payload)", raw[: p_at + 8] + b"JUNK" * 4 + raw[p_at + 8 :], enc)  # fmt: skip

    # -- the envelope ----------------------------------------------------------------------------
    parts = enc.parts()
    canonical = parts.envelope_bytes()

    def envelope_raw(data: bytes) -> bytes:
        p = enc.parts()
        p.envelope_raw = data
        return p.join()

    def first(field: str, key: str, value: Callable[[str], Any], base: Base = enc) -> bytes:
        """``base`` with one member of its first signature or recipient entry changed."""
        return base.edit_envelope(lambda e: e[field][0].update({key: value(e[field][0][key])}))

    def before_recipients(text: bytes) -> bytes:
        """The canonical envelope with ``text`` inserted as the first recipient entries."""
        return envelope_raw(canonical.replace(b'{"recipients":[', b'{"recipients":[' + text, 1))

    w.add("envelope-not-json", "format", "the envelope is '{'", envelope_raw(b"{"), enc)
    w.add("envelope-whitespace", "format", "the canonical content with spaces after separators",
          envelope_raw(json.dumps(parts.envelope, sort_keys=True).encode()), enc)  # fmt: skip
    w.add("envelope-member-order", "format", "signatures before recipients",
          envelope_raw(json.dumps({"signatures": parts.envelope["signatures"],
                                   "recipients": parts.envelope["recipients"]},
                                  separators=(",", ":")).encode()), enc)  # fmt: skip
    w.add("envelope-escaped-letter", "format", "alg spelled \"\\u0065d25519\" (the same string)",
          envelope_raw(canonical.replace(b'"alg":"ed25519"', b'"alg":"\\u0065d25519"')), enc)  # fmt: skip
    w.add("envelope-trailing-newline", "format", "a newline after the canonical envelope",
          envelope_raw(canonical + b"\n"), enc)  # fmt: skip
    w.add("envelope-non-ascii", "format", "a UTF-8 no-break space before the closing brace",
          envelope_raw(canonical[:-1] + b"\xc2\xa0}"), enc)  # fmt: skip
    w.add("envelope-duplicate-member", "format", "recipients given twice",
          envelope_raw(canonical.replace(b'{"recipients":', b'{"recipients":[],"recipients":', 1)), enc)  # fmt: skip
    w.add("envelope-unknown-member", "format", "an extra top-level member 'x'",
          enc.edit_envelope(lambda e: e.update(x=[])), enc)  # fmt: skip
    w.add("envelope-missing-recipients", "format", "no recipients member",
          enc.edit_envelope(lambda e: e.pop("recipients")), enc)  # fmt: skip
    w.add("envelope-signature-extra-member", "format", "a signature entry with a 'note' member",
          enc.edit_envelope(lambda e: e["signatures"][0].update(note="x")), enc)  # fmt: skip
    w.add("envelope-keyid-uppercase", "format", "a signature key id in upper-case hex",
          first("signatures", "keyid", str.upper), enc)  # fmt: skip
    w.add("envelope-keyid-short", "format", "a recipient key id of 63 hex digits",
          first("recipients", "keyid", lambda v: v[:63]), enc)  # fmt: skip
    w.add("envelope-alg-uppercase", "format", "alg 'Ed25519'",
          enc.edit_envelope(lambda e: e["signatures"][0].update(alg="Ed25519")), enc)  # fmt: skip
    w.add("envelope-kem-empty", "format", "kem ''",
          enc.edit_envelope(lambda e: e["recipients"][0].update(kem="")), enc)  # fmt: skip
    w.add("envelope-sig-padding-bits", "format", "the signature's base64 with non-zero padding bits "
          "(decodes to the same bytes)",
          first("signatures", "sig", _padding_bits), enc)  # fmt: skip
    w.add("envelope-enc-padding-bits", "format", "the wrapped key's base64 with non-zero padding bits",
          first("recipients", "enc", _padding_bits), enc)  # fmt: skip
    w.add("envelope-sig-unpadded", "format", "the signature's base64 without its '=' padding",
          first("signatures", "sig", lambda v: v.rstrip("=")), enc)  # fmt: skip
    w.add("envelope-enc-urlsafe", "format", "the wrapped key in the URL-safe alphabet",
          first("recipients", "enc", lambda v: "-_" + v[2:].replace("+", "-").replace("/", "_")), enc)  # fmt: skip
    w.add("envelope-sig-line-break", "format", "a \\n inside the signature's base64",
          first("signatures", "sig", lambda v: v[:40] + "\n" + v[40:]), enc)  # fmt: skip
    w.add("envelope-sig-empty", "format", "an empty signature",
          enc.edit_envelope(lambda e: e["signatures"][0].update(sig="")), enc)  # fmt: skip
    w.add("envelope-sig-too-long", "format", "a signature of 8,193 bytes",
          enc.edit_envelope(lambda e: e["signatures"][0].update(sig=_b64(bytes(8193)))), enc)  # fmt: skip
    w.add("envelope-enc-too-long", "format", "a wrapped key of 4,097 bytes",
          enc.edit_envelope(lambda e: e["recipients"][0].update(enc=_b64(bytes(4097)))), enc)  # fmt: skip
    w.add("envelope-two-signatures-one-key", "format", "the same signature entry twice",
          enc.edit_envelope(lambda e: e.update(signatures=e["signatures"] * 2)), enc)  # fmt: skip
    w.add("envelope-two-recipients-one-key", "format", "the same recipient entry twice",
          enc.edit_envelope(lambda e: e.update(recipients=e["recipients"] * 2)), enc)  # fmt: skip
    w.add("envelope-17-signatures", "format", "17 signature entries (16 by unknown key ids)",
          enc.edit_envelope(lambda e: e["signatures"].extend(
              _sig_entry(f"{i:064x}", "ed25519", bytes(64)) for i in range(16))), enc)  # fmt: skip
    w.add("envelope-too-many-values", "format", "17,000 empty objects among the recipients: more "
          "values than a well-formed envelope holds (refused before parsing)",
          before_recipients(b"{}," * 17_000), enc)  # fmt: skip
    w.add("envelope-depth-33", "format", "arrays nested 33 deep in the recipients",
          before_recipients(b"[" * 32 + b"]" * 32 + b","), enc)  # fmt: skip
    w.add("envelope-encrypted-no-recipients", "format", "an encrypted bundle with no recipient",
          enc.edit_envelope(lambda e: e.update(recipients=[])), enc)  # fmt: skip
    w.add("envelope-signed-only-with-recipient", "format", "a signed-only bundle listing a recipient",
          plain.edit_envelope(lambda e: e.update(recipients=enc.parts().envelope["recipients"])), plain)  # fmt: skip

    # -- the manifest: JSON rules ----------------------------------------------------------------
    def reports_raw(text: bytes) -> Callable[[bytes], bytes]:
        return lambda m: m.replace(b'"reports":{}', b'"reports":{"x":' + text + b"}")

    w.add("manifest-not-utf8", "format", "a 0xff byte in the name",
          enc.edit_bytes(lambda m: m.replace(b'"name":"vector"', b'"name":"vect\xffr"')), enc)  # fmt: skip
    w.add("manifest-bom", "format", "a UTF-8 byte-order mark before the manifest",
          enc.edit_bytes(lambda m: b"\xef\xbb\xbf" + m), enc)  # fmt: skip
    w.add("manifest-duplicate-member", "format", "the member 'name' twice",
          enc.edit_bytes(lambda m: m.replace(b'"name":"vector"', b'"name":"vector","name":"other"')), enc)  # fmt: skip
    w.add("manifest-nan", "format", "NaN in reports", enc.edit_bytes(reports_raw(b"NaN")), enc)
    w.add("manifest-integer-25-digits", "format", "a 25-digit integer in reports",
          enc.edit_bytes(reports_raw(b"1" + b"0" * 24)), enc)  # fmt: skip
    w.add("manifest-number-overflow", "format", "1e400 in reports (overflows a double)",
          enc.edit_bytes(reports_raw(b"1e400")), enc)  # fmt: skip
    w.add("manifest-depth-33", "format", "reports nested to depth 33 (the manifest is depth 1)",
          enc.edit_bytes(reports_raw(b"[" * 31 + b"]" * 31)), enc)  # fmt: skip
    w.add("manifest-lone-surrogate", "format", "a string in reports spelling an unpaired surrogate",
          enc.edit_bytes(reports_raw(b'"\\ud800"')), enc)  # fmt: skip
    w.add("manifest-not-an-object", "format", "the manifest is []",
          enc.edit_bytes(lambda m: b"[]"), enc)  # fmt: skip
    w.add("manifest-trailing-text", "format", "text after the manifest object",
          enc.edit_bytes(lambda m: m + b"x"), enc)  # fmt: skip

    # -- the manifest: schema --------------------------------------------------------------------
    def at(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def change(m: dict[str, Any]) -> None:
            *outer, last = path.split(".")
            node = m
            for part in outer:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node[last] = value

        return change

    def drop(path: str) -> Callable[[dict[str, Any]], None]:
        def change(m: dict[str, Any]) -> None:
            *outer, last = path.split(".")
            node = m
            for part in outer:
                node = node[part]
            del node[last]

        return change

    tensor = {"name": "x", "shape": [-1, 4], "dtype": "float32"}

    def with_input(**extra: Any) -> Callable[[dict[str, Any]], None]:
        return at("model.inputs", [dict(tensor, **extra)])

    schema_cases: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
        ("manifest-missing-reports", "no reports member (it is required)", drop("reports")),
        ("manifest-unknown-member", "an extra top-level member 'comment'", at("comment", "x")),
        ("manifest-unknown-payload-member", "an extra payload member 'mode'", at("payload.mode", "x")),
        ("manifest-unknown-tensor-member", "a tensor with a 'layout' member", with_input(layout="nhwc")),
        ("manifest-schema-2", "schema 2", at("schema", 2)),
        ("manifest-schema-true", "schema true (not the integer 1)", at("schema", True)),
        ("manifest-schema-float", "schema 1.0 (not the integer 1)", at("schema", 1.0)),
        ("manifest-version-negative", "version -1", at("version", -1)),
        ("manifest-version-2-63", "version 2^63", at("version", 2**63)),
        ("manifest-version-float", "version 7.0", at("version", 7.0)),
        ("manifest-version-string", 'version "7"', at("version", "7")),
        ("manifest-name-leading-dot", "name '.vector'", at("name", ".vector")),
        ("manifest-name-129", "a 129-character name", at("name", "n" * 129)),
        ("manifest-created-offset", "created with +00:00 instead of Z", at("created", "2026-11-28T00:00:00+00:00")),
        ("manifest-created-fraction", "created with a fraction of a second", at("created", "2026-11-28T00:00:00.5Z")),
        ("manifest-created-lowercase", "created in lower case", at("created", "2026-11-28t00:00:00z")),
        ("manifest-created-february-30", "created 2026-02-30", at("created", "2026-02-30T00:00:00Z")),
        ("manifest-created-leap-second", "created at 23:59:60", at("created", "2026-12-31T23:59:60Z")),
        ("manifest-created-year-0", "created in year 0000", at("created", "0000-01-01T00:00:00Z")),
        ("manifest-created-non-ascii-digits", "created with Arabic-Indic digits for the year",
         at("created", "\u0662\u0660\u0662\u0666-11-28T00:00:00Z")),
        ("manifest-expires-equals-created", "expires == created", at("expires", "2026-11-28T00:00:00Z")),
        ("manifest-target-not-object", "target is a string", at("target", "x86_64")),
        ("manifest-profile-empty", "target.profile ''", at("target.profile", "")),
        ("manifest-runtime-version-33", "a 33-character runtime_version", at("target.runtime_version", "9" * 33)),
        ("manifest-hardware-ids-65", "65 hardware ids", at("target.hardware_ids", [f"hw{i}" for i in range(65)])),
        ("manifest-hardware-id-space", "a hardware id with a space", at("target.hardware_ids", ["raspberry pi"])),
        ("manifest-format-onnx", "model.format onnx", at("model.format", "onnx")),
        ("manifest-model-sha256-uppercase", "model.sha256 in upper-case hex",
         lambda m: m["model"].update(sha256=m["model"]["sha256"].upper())),
        ("manifest-tensor-name-empty", "a tensor named ''", with_input(name="")),
        ("manifest-dtype-bfloat16", "dtype bfloat16 (not in the vocabulary)", with_input(dtype="bfloat16")),
        ("manifest-shape-rank-9", "a shape of 9 dimensions", with_input(shape=[1] * 9)),
        ("manifest-shape-dim-minus-2", "a dimension of -2", with_input(shape=[-2, 4])),
        ("manifest-shape-dim-2-31", "a dimension of 2^31", with_input(shape=[2**31])),
        ("manifest-scale-zero", "quantization scale 0", with_input(quantization={"scale": 0.0, "zero_point": 0})),
        ("manifest-scale-string", 'quantization scale "0.5"',
         with_input(quantization={"scale": "0.5", "zero_point": 0})),
        ("manifest-zero-point-missing", "quantization without zero_point", with_input(quantization={"scale": 0.5})),
        ("manifest-257-inputs", "257 input tensors", at("model.inputs", [tensor] * 257)),
        ("manifest-encryption-unknown", "encryption aes-128-gcm", at("payload.encryption", "aes-128-gcm")),
        ("manifest-compression-unknown", "compression gzip", at("payload.compression", "gzip")),
        ("manifest-compressed-size-without-compression", "compressed_size with compression none",
         at("payload.compressed_size", 1020)),
        ("manifest-content-id-31-hex", "content_id of 31 hex digits",
         lambda m: m["payload"].update(content_id=m["payload"]["content_id"][:31])),
        ("manifest-chunk-size-4095", "chunk_size 4,095", at("payload.chunk_size", 4095)),
        ("manifest-chunk-size-over-64-mib", "chunk_size 64 MiB + 1", at("payload.chunk_size", 64 * 1024 * 1024 + 1)),
        ("manifest-reports-array", "reports is []", at("reports", [])),
    ]  # fmt: skip
    for name, description, change in schema_cases:
        w.add(name, "manifest", description, enc.edit(change), enc)
    w.add("manifest-zstd-without-compressed-size", "manifest", "compression zstd without compressed_size",
          zplain.edit(drop("payload.compressed_size")), zplain)  # fmt: skip
    w.add("manifest-payload-size-one-tag-short", "manifest", "3 chunks but payload.size counts 2 "
          "tags (n = max(1, ceil(L / chunk_size)))",
          multi.edit(lambda m: m["payload"].update(size=m["payload"]["size"] - 16)), multi)  # fmt: skip
    w.add("manifest-empty-model-without-tag", "manifest", "an empty model whose payload.size is 0 "
          "(an empty plaintext is still one chunk: 16 bytes)",
          enc.edit(lambda m: (m["model"].update(size=0), m["payload"].update(size=0))), enc)  # fmt: skip
    w.add("manifest-signed-only-digest-differs", "manifest", "signed-only, uncompressed, and "
          "payload.sha256 is not model.sha256",
          plain.edit(lambda m: m["payload"].update(sha256="0" * 64)), plain)  # fmt: skip
    w.add("manifest-payload-size-not-p", "format", "a consistent signed manifest whose payload.size "
          "is not the header's P",
          plain.edit(lambda m: (m["model"].update(size=1021), m["payload"].update(size=1021))), plain)  # fmt: skip
    w.add("manifest-model-over-4-gib", "too-large", "model.size 2^33 (compressed to a small payload)",
          zplain.edit(lambda m: m["model"].update(size=2**33)), zplain)  # fmt: skip

    # -- signatures ------------------------------------------------------------------------------
    def signed(base: Base, entry: Callable[[bytes], dict[str, str]]) -> bytes:
        parts = base.parts()
        parts.envelope["signatures"] = [entry(pae(PAYLOAD_TYPE, parts.manifest))]
        return parts.join()

    w.add("signature-none", "signature", "no signature entry",
          enc.edit_envelope(lambda e: e.update(signatures=[])), enc)  # fmt: skip
    w.add("signature-bit-flipped", "signature", "one bit of the Ed25519 signature flipped",
          signed(enc, lambda msg: _sig_entry(ed.key_id, "ed25519", flip(0)(ed.sign(msg)))), enc)  # fmt: skip
    w.add("signature-over-the-bare-manifest", "signature", "Ed25519 over the manifest, not its PAE",
          signed(enc, lambda msg: _sig_entry(ed.key_id, "ed25519", ed.sign(manifest_of(enc)))), enc)  # fmt: skip
    w.add("signature-other-payload-type", "signature", "PAE with type application/json",
          signed(enc, lambda msg: _sig_entry(ed.key_id, "ed25519", ed.sign(pae("application/json", manifest_of(enc))))),
          enc)  # fmt: skip
    w.add("signature-untrusted-only", "signature", "signed only by a key not in the trust store",
          Base(enc.raw, [ec], [dx]).reseal(enc.parts()).join(), enc)  # fmt: skip
    w.add("signature-alg-relabelled", "signature", "a valid Ed25519 signature labelled ecdsa-p256",
          enc.edit_envelope(lambda e: e["signatures"][0].update(alg="ecdsa-p256")), enc)  # fmt: skip

    def s_plus_l(msg: bytes) -> dict[str, str]:
        sig = ed.sign(msg)
        s = int.from_bytes(sig[32:], "little") + ED25519_L
        return _sig_entry(ed.key_id, "ed25519", sig[:32] + s.to_bytes(32, "little"))

    w.add("signature-ed25519-s-not-reduced", "signature", "Ed25519 signature with S + L in place of S "
          "(RFC 8032 requires S < L)", signed(enc, s_plus_l), enc)  # fmt: skip

    def ecdsa_entry(change: Callable[[bytes], bytes]) -> Callable[[bytes], dict[str, str]]:
        return lambda msg: _sig_entry(ec.key_id, "ecdsa-p256", change(ec.sign(msg)))

    w.add("signature-ecdsa-trailing-byte", "signature", "a DER ECDSA signature with a trailing zero byte",
          signed(ecdsa, ecdsa_entry(lambda s: s + b"\0")), ecdsa)  # fmt: skip
    w.add("signature-ecdsa-long-form-length", "signature", "the DER SEQUENCE length in long form (BER)",
          signed(ecdsa, ecdsa_entry(lambda s: b"\x30\x81" + s[1:])), ecdsa)  # fmt: skip
    w.add("signature-ecdsa-r-s-swapped", "signature", "r and s swapped",
          signed(ecdsa, ecdsa_entry(lambda s: encode_dss_signature(*reversed(decode_dss_signature(s))))),
          ecdsa)  # fmt: skip

    def hybrid_entry(
        alg: str, change: Callable[[bytes], bytes]
    ) -> Callable[[bytes], dict[str, str]]:
        return lambda msg: _sig_entry(hy.key_id, alg, change(hy.sign(msg)))

    w.add("signature-hybrid-downgraded", "signature", "the Ed25519 half of a hybrid signature, "
          "relabelled ed25519 (the trusted key is ed25519+mldsa65)",
          signed(hybrid, hybrid_entry("ed25519", lambda s: s[:64])), hybrid)  # fmt: skip
    w.add("signature-hybrid-ed25519-half-only", "signature", "only the Ed25519 half, labelled "
          "ed25519+mldsa65", signed(hybrid, hybrid_entry("ed25519+mldsa65", lambda s: s[:64])), hybrid)  # fmt: skip
    w.add("signature-hybrid-mldsa-flipped", "signature", "a valid Ed25519 half and a flipped bit in "
          "the ML-DSA-65 half",
          signed(hybrid, hybrid_entry("ed25519+mldsa65", flip(100))), hybrid)  # fmt: skip
    w.add("signature-below-threshold", "signature", "one valid signature, threshold 2",
          enc.raw, enc, trust=["signer-ed25519", "signer-ecdsa"], threshold=2)  # fmt: skip
    both = Base(enc.raw, [ed, ec], [dx]).reseal(enc.parts()).join()
    w.add("signature-revoked", "revoked", "signed by a trusted key and by a revoked one",
          both, enc, trust=["signer-ed25519", "signer-ecdsa"], revoked=("signer-ecdsa",))  # fmt: skip
    with_hybrid = Base(enc.raw, [ed, hy], [dx]).reseal(enc.parts()).join()
    w.add("signature-revoked-key-not-in-store", "revoked", "a signature by a revoked key the store "
          "does not hold", with_hybrid, enc, revoked=("signer-hybrid",))  # fmt: skip

    # -- time ------------------------------------------------------------------------------------
    w.add("expired-at-the-instant", "expired", "now equals expires (refused at that instant; "
          "accepted one second before)", expiring.raw, expiring, now="2027-01-01T00:00:00Z")  # fmt: skip

    # -- integrity -------------------------------------------------------------------------------
    w.add("payload-bit-flipped", "integrity", "one payload bit flipped; the signed digest is the "
          "original's", enc.edit_payload(flip(5), resign=False), enc)  # fmt: skip
    w.add("payload-signed-only-bit-flipped", "integrity", "a signed-only model with one bit flipped",
          plain.edit_payload(flip(5), resign=False), plain)  # fmt: skip
    w.add("model-sha256-differs", "integrity", "the signed model.sha256 is not the decrypted model's",
          enc.edit(lambda m: m["model"].update(sha256="0" * 64)), enc)  # fmt: skip
    w.add("model-sha256-differs-zstd", "integrity", "signed-only zstd: the decompressed model's "
          "SHA-256 is not model.sha256", zplain.edit(lambda m: m["model"].update(sha256="0" * 64)), zplain)  # fmt: skip
    w.add("zstd-output-over-model-size", "too-large", "signed-only zstd whose stream decompresses to "
          "more than model.size",
          zplain.edit(lambda m: m["model"].update(size=m["model"]["size"] - 1)), zplain)  # fmt: skip
    w.add("zstd-output-under-model-size", "integrity", "signed-only zstd whose stream decompresses to "
          "less than model.size",
          zplain.edit(lambda m: m["model"].update(size=m["model"]["size"] + 1)), zplain)  # fmt: skip
    w.add("zstd-corrupt", "integrity", "signed-only zstd: a corrupt stream, its digest signed",
          zplain.edit_payload(lambda p: p[:20] + bytes(len(p) - 20), resign=True), zplain)  # fmt: skip

    # -- decryption ------------------------------------------------------------------------------
    w.add("recipient-not-this-device", "decryption", "encrypted for another device key only",
          xwing.raw, xwing, device_key="device-x25519")  # fmt: skip
    w.add("recipient-kem-relabelled", "decryption", "this device's entry labelled mlkem768-x25519",
          enc.edit_envelope(lambda e: e["recipients"][0].update(kem="mlkem768-x25519")), enc)  # fmt: skip
    w.add("recipient-enc-truncated", "decryption", "this device's entry one byte short (79 bytes)",
          first("recipients", "enc", lambda v: _b64(base64.b64decode(v)[:-1])), enc)  # fmt: skip
    other = Parts.of(seal([ed], [dx]))
    w.add("recipient-from-another-bundle", "decryption", "this device's entry copied from another "
          "bundle (its info binds the other manifest)",
          enc.edit_envelope(lambda e: e.update(recipients=other.envelope["recipients"])), enc)  # fmt: skip

    def wrapped(cek: bytes, key_id: str, kem: str = "x25519") -> Callable[[dict[str, Any]], None]:
        digest = hashlib.sha256(enc.parts().manifest).digest()
        ct = _suite(kem).encrypt(cek, dx.public.hpke_public(), info=_info(digest, key_id))
        return lambda e: e["recipients"][0].update(enc=_b64(bytes(ct)))

    w.add("recipient-cek-31-bytes", "decryption", "a correctly wrapped content key of 31 bytes",
          enc.edit_envelope(wrapped(enc.cek[:31], dx.key_id)), enc)  # fmt: skip
    w.add("recipient-info-other-key-id", "decryption", "the content key wrapped with another key id "
          "in info", enc.edit_envelope(wrapped(enc.cek, ed.key_id)), enc)  # fmt: skip
    w.add("recipient-xwing-ciphertext-flipped", "decryption", "one bit of ct_M flipped in an X-Wing "
          "entry (ML-KEM's implicit rejection: the entry does not open)",
          first("recipients", "enc", lambda v: _b64(flip(10)(base64.b64decode(v))), xwing), xwing)  # fmt: skip
    w.add("recipient-x25519-small-order-point", "decryption", "this device's entry with enc = the "
          "all-zero X25519 point (a small-order point: the DH output is zero)",
          first("recipients", "enc", lambda v: _b64(bytes(32) + base64.b64decode(v)[32:])), enc)  # fmt: skip
    w.add("recipient-xwing-enc-short", "decryption", "an X-Wing entry one byte short of 1,168",
          first("recipients", "enc", lambda v: _b64(base64.b64decode(v)[:-1]), xwing), xwing)  # fmt: skip
    w.add("chunk-tag-flipped", "decryption", "a tag bit flipped, the new payload digest signed",
          enc.edit_payload(flip(len(enc.parts().payload) - 1), resign=True), enc)  # fmt: skip

    def swap01(p: bytes) -> bytes:
        size = 4096 + 16
        return p[size : 2 * size] + p[:size] + p[2 * size :]

    w.add("chunks-swapped", "decryption", "chunks 0 and 1 swapped, the new payload digest signed",
          multi.edit_payload(swap01, resign=True), multi)  # fmt: skip

    def drop_last(m: dict[str, Any]) -> None:
        m["model"]["size"] = 8192  # two full chunks remain
        m["payload"]["size"] = 8192 + 32

    dropped = multi.parts()
    dropped.payload = dropped.payload[: 2 * (4096 + 16)]
    manifest = json.loads(dropped.manifest)
    drop_last(manifest)
    manifest["payload"]["sha256"] = hashlib.sha256(dropped.payload).hexdigest()
    dropped.manifest = canonical_bytes(manifest)
    w.add("chunk-last-dropped", "decryption", "the last chunk dropped and the manifest re-signed for "
          "two chunks: chunk 1 was sealed as not last", multi.reseal(dropped).join(), multi)  # fmt: skip
    w.add("chunk-content-id-changed", "decryption", "another content_id signed: every chunk's AAD "
          "differs", enc.edit(lambda m: m["payload"].update(content_id="0" * 32)), enc)  # fmt: skip
    w.write()


if __name__ == "__main__":
    main()
