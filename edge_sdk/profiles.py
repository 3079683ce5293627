"""Device profiles: what a board is, which LiteRT runtime it runs, and how to build models for it.

A profile is a TOML file. The built-in ones live in the top-level ``device_profiles/`` directory,
which ships inside the wheel as the package :mod:`edge_sdk.device_profiles`; users add or override
profiles with directories listed in ``EDGE_SDK_PROFILE_PATH`` (``os.pathsep``-separated, searched
in order, before the built-ins).

A :class:`DeviceProfile` that exists is valid: every field is checked on construction, unknown keys
are rejected, and a profile loaded from a file must be named after that file. Every error is a
:class:`~edge_sdk.errors.ProfileError` naming the file and the key.

This module runs on the device too, so it uses the standard library only (``tomllib``, or ``tomli``
on Python 3.10) and never imports numpy, tensorflow or a LiteRT runtime.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found]

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

from .errors import ProfileError
from .files import read_capped

PROFILE_PATH_ENV = "EDGE_SDK_PROFILE_PATH"
#: zstd level a profile uses unless it says otherwise (profiles are Base: they import nothing of ours).
DEFAULT_COMPRESSION_LEVEL = 10
BUILTIN_PACKAGE = "edge_sdk.device_profiles"

ARCHITECTURES = ("aarch64", "x86_64")
RUNTIME_PACKAGES = ("ai-edge-litert", "tflite-runtime")
QUANTIZATIONS = ("none", "dynamic", "float16", "int8", "int16x8")
IO_DTYPES = ("float32", "int8")
AEADS = ("aes-256-gcm", "chacha20-poly1305")
#: Delegates compiled into the runtime itself rather than loaded from a shared library.
BUILTIN_DELEGATES = ("xnnpack",)

#: The largest model a profile may accept. A .tflite is not capped at the FlatBuffer's 2 GiB: past
#: it the converter stores the weights after the FlatBuffer (``Buffer.offset``/``size``, u64), so a
#: board's memory is the real bound; this matches what sealed memory is made for.
MAX_MODEL_BYTES_LIMIT = 64 * 1024**3
#: zstd's highest level; 0 means "store uncompressed".
MAX_COMPRESSION_LEVEL = 22
#: A profile is a small hand-written file; anything bigger is a mistake, not a profile.
MAX_PROFILE_FILE_BYTES = 256 * 1024

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Same alphabet as a manifest's target.hardware_ids, so every profile id fits in a bundle.
_HWID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._,/+-]{0,127}")
_PYTHON = re.compile(r"3\.\d{1,2}")
_VERSION = re.compile(r"\d{1,4}\.\d{1,4}\.\d{1,4}(?:\.post\d{1,4})?")
_LIBRARY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")
_OPTION_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

#: A delegate option value as TOML gives it; passed to ``load_delegate`` as ``str(value)``.
OptionValue = str | int | float | bool


# -- field checks --------------------------------------------------------------------------------
# Each raises ProfileError("<key>: <problem>"); the loader prefixes the file name.


def _fail(key: str, problem: str) -> ProfileError:
    return ProfileError(f"{key}: {problem}")


def _type_name(value: Any) -> str:
    return {dict: "table", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _check_str(
    key: str,
    value: Any,
    *,
    pattern: re.Pattern[str] | None = None,
    choices: tuple[str, ...] = (),
    max_len: int = 300,
) -> str:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, got {_type_name(value)} {value!r}"[:200])
    if choices and value not in choices:
        raise _fail(key, f"{value[:80]!r} is not one of {', '.join(choices)}")
    if not value.strip() or len(value) > max_len:
        raise _fail(key, f"must be a non-empty string of at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(key, f"malformed value {value[:80]!r}")
    return value


def _check_int(key: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(key, f"must be an integer, got {_type_name(value)} {value!r}"[:200])
    if not low <= value <= high:
        raise _fail(key, f"must be between {low} and {high}, got {value}")
    return value


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"must be true or false, got {_type_name(value)} {value!r}"[:200])
    return value


def _check_str_tuple(
    key: str, value: Any, *, pattern: re.Pattern[str] | None = None, max_items: int = 64
) -> tuple[str, ...]:
    if not isinstance(value, tuple) or len(value) > max_items:
        raise _fail(key, f"must be a list of at most {max_items} strings")
    for index, item in enumerate(value):
        _check_str(f"{key}[{index}]", item, pattern=pattern, max_len=500)
    if len(set(value)) != len(value):
        raise _fail(key, "contains duplicates")
    return value


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a table, got {_type_name(value)}")
    return value


def _array(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(key, f"must be an array, got {_type_name(value)}")
    return value


def _expect_keys(
    where: str, data: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(sorted(required + optional))
        raise ProfileError(
            f"unknown key {prefix + unknown[0]!r}", hint=f"allowed keys here: {allowed}"
        )
    missing = [k for k in required if k not in data]
    if missing:
        raise ProfileError(f"missing required key {prefix + missing[0]!r}")


# -- the profile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSpec:
    """The application CPU: core type, SoC, core count, clock, and whether it has AES instructions.

    ``aes_instructions`` is true when the cores have hardware AES (ARMv8 Cryptography Extensions
    or x86 AES-NI); without it ChaCha20-Poly1305 is much faster than AES-GCM.
    """

    model: str
    cores: int
    aes_instructions: bool
    soc: str | None = None
    max_mhz: int | None = None

    def __post_init__(self) -> None:
        _check_str("cpu.model", self.model, max_len=100)
        _check_int("cpu.cores", self.cores, 1, 1024)
        _check_bool("cpu.aes_instructions", self.aes_instructions)
        if self.soc is not None:
            _check_str("cpu.soc", self.soc, max_len=100)
        if self.max_mhz is not None:
            _check_int("cpu.max_mhz", self.max_mhz, 1, 10_000)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if self.soc is not None:
            out["soc"] = self.soc
        out["cores"] = self.cores
        if self.max_mhz is not None:
            out["max_mhz"] = self.max_mhz
        out["aes_instructions"] = self.aes_instructions
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CpuSpec:
        data = _table("cpu", data)
        _expect_keys("cpu", data, ("model", "cores", "aes_instructions"), ("soc", "max_mhz"))
        return cls(
            model=data["model"],
            cores=data["cores"],
            aes_instructions=data["aes_instructions"],
            soc=data.get("soc"),
            max_mhz=data.get("max_mhz"),
        )


@dataclass(frozen=True)
class RuntimeSpec:
    """The LiteRT runtime the board runs: the Python distribution and its exact version."""

    package: str
    version: str

    def __post_init__(self) -> None:
        _check_str("runtime.package", self.package, choices=RUNTIME_PACKAGES)
        _check_str("runtime.version", self.version, pattern=_VERSION, max_len=32)

    @property
    def version_info(self) -> tuple[int, ...]:
        """The release as integers, e.g. ``(2, 14, 0)``, for ordering runtimes."""
        return tuple(int(part) for part in self.version.split(".post")[0].split("."))

    def to_dict(self) -> dict[str, Any]:
        return {"package": self.package, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeSpec:
        data = _table("runtime", data)
        _expect_keys("runtime", data, ("package", "version"), ())
        return cls(package=data["package"], version=data["version"])


@dataclass(frozen=True)
class DelegateSpec:
    """One link of the delegate chain.

    Either ``builtin`` (compiled into the runtime, e.g. XNNPACK; no library, no options) or loaded
    from ``library`` (a bare soname the dynamic loader finds, or an absolute path) with ``options``
    passed to ``load_delegate`` as strings. ``required`` means: if it fails to load, refuse to run
    rather than fall back to the next link.
    """

    name: str
    library: str | None = None
    builtin: bool = False
    required: bool = False
    options: tuple[tuple[str, OptionValue], ...] = ()

    def __post_init__(self) -> None:
        key = f"delegates[{self.name!r}]" if isinstance(self.name, str) else "delegates"
        _check_str(f"{key}.name", self.name, pattern=_NAME)
        _check_bool(f"{key}.builtin", self.builtin)
        _check_bool(f"{key}.required", self.required)
        if self.builtin:
            if self.name not in BUILTIN_DELEGATES:
                raise _fail(
                    f"{key}.builtin",
                    f"no delegate {self.name!r} is built into the runtime "
                    f"(built-in: {', '.join(BUILTIN_DELEGATES)})",
                )
            if self.library is not None:
                raise _fail(f"{key}.library", "a builtin delegate has no library")
            if self.options:
                raise _fail(f"{key}.options", "a builtin delegate takes no options")
        else:
            if self.name in BUILTIN_DELEGATES:
                raise _fail(
                    f"{key}.builtin", f"{self.name} is built into the runtime; set builtin = true"
                )
            if self.library is None:
                raise _fail(f"{key}.library", "required unless builtin = true")
            _check_str(f"{key}.library", self.library, max_len=4096)
            if not (_LIBRARY.fullmatch(self.library) or self._is_absolute(self.library)):
                raise _fail(
                    f"{key}.library",
                    f"{self.library[:80]!r} must be a bare library name (found by the dynamic "
                    "loader) or an absolute path",
                )
        if not isinstance(self.options, tuple):
            raise _fail(f"{key}.options", "must be a table of option names to values")
        seen: set[str] = set()
        for pair in self.options:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise _fail(f"{key}.options", "must be a table of option names to values")
            name, value = pair
            _check_str(f"{key}.options", name, pattern=_OPTION_KEY, max_len=64)
            if name in seen:
                raise _fail(f"{key}.options.{name}", "given twice")
            seen.add(name)
            if not isinstance(value, (str, int, float, bool)):
                raise _fail(
                    f"{key}.options.{name}",
                    f"must be a string, number or boolean, got {_type_name(value)}",
                )

    @staticmethod
    def _is_absolute(library: str) -> bool:
        parts = library.split("/")
        return library.startswith("/") and "\x00" not in library and ".." not in parts

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.builtin:
            out["builtin"] = True
        if self.library is not None:
            out["library"] = self.library
        out["required"] = self.required
        out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], index: int = 0) -> DelegateSpec:
        data = _table(f"delegates[{index}]", data)
        _expect_keys(
            f"delegates[{index}]", data, ("name",), ("library", "builtin", "required", "options")
        )
        options = _table(f"delegates[{index}].options", data.get("options", {}))
        return cls(
            name=data["name"],
            library=data.get("library"),
            builtin=data.get("builtin", False),
            required=data.get("required", False),
            options=tuple(sorted(options.items())),
        )


_REQUIRED = (
    "name", "description", "architecture", "python", "cpu", "memory_mb", "runtime", "delegates",
    "quantization", "aead", "max_model_bytes",
)  # fmt: skip
_OPTIONAL = (
    "threads", "io_dtype", "compression_level", "edgetpu", "accelerator", "hardware_ids", "sources",
)  # fmt: skip


@dataclass(frozen=True)
class DeviceProfile:
    """Everything edge-sdk needs to know about one kind of board.

    Attributes:
        name: the profile's name, equal to its file's stem (``rpi4`` ↔ ``rpi4.toml``).
        description: one line for humans.
        architecture: ``aarch64`` or ``x86_64`` (what ``uname -m`` prints).
        python: the ``major.minor`` Python of the board's usual OS.
        cpu: the application CPU.
        memory_mb: RAM of the variant this profile assumes, in MiB.
        runtime: the LiteRT runtime package and version the board runs.
        delegates: the delegate chain, tried in order; the interpreter's own CPU kernels run
            whatever no delegate claims, so the chain always ends on the CPU.
        quantization: the default for ``convert``: none, dynamic, float16, int8 or int16x8.
        aead: the payload AEAD to seal bundles with: aes-256-gcm or chacha20-poly1305.
        max_model_bytes: the largest plaintext model accepted for this board.
        threads: default interpreter threads (1..cpu.cores).
        io_dtype: dtype of the model's inputs/outputs: float32, or int8 for full-integer models.
        compression_level: zstd level for payloads, 0 = store uncompressed.
        edgetpu: the model must be compiled by ``edgetpu_compiler`` for a Coral Edge TPU.
        accelerator: the board's ML accelerator in words, if any.
        hardware_ids: strings that identify the board (device-tree ``compatible`` entries, …).
        sources: where the facts in this profile come from.
        path: the file this profile was loaded from (not part of its content).
    """

    name: str
    description: str
    architecture: str
    python: str
    cpu: CpuSpec
    memory_mb: int
    runtime: RuntimeSpec
    delegates: tuple[DelegateSpec, ...]
    quantization: str
    aead: str
    max_model_bytes: int
    threads: int
    io_dtype: str = "float32"
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    edgetpu: bool = False
    accelerator: str | None = None
    hardware_ids: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_str("name", self.name, pattern=_NAME)
        _check_str("description", self.description)
        _check_str("architecture", self.architecture, choices=ARCHITECTURES)
        _check_str("python", self.python, pattern=_PYTHON, max_len=8)
        if not isinstance(self.cpu, CpuSpec):
            raise _fail("cpu", "must be a CpuSpec")
        _check_int("memory_mb", self.memory_mb, 64, 16 * 1024 * 1024)
        if not isinstance(self.runtime, RuntimeSpec):
            raise _fail("runtime", "must be a RuntimeSpec")
        if not isinstance(self.delegates, tuple) or not all(
            isinstance(d, DelegateSpec) for d in self.delegates
        ):
            raise _fail("delegates", "must be a list of delegate tables")
        names = [d.name for d in self.delegates]
        for name in names:
            if names.count(name) > 1:
                raise _fail("delegates", f"delegate {name!r} appears twice")
        _check_str("quantization", self.quantization, choices=QUANTIZATIONS)
        _check_str("aead", self.aead, choices=AEADS)
        memory_bytes = self.memory_mb * 1024 * 1024
        _check_int(
            "max_model_bytes", self.max_model_bytes, 1, min(MAX_MODEL_BYTES_LIMIT, memory_bytes)
        )
        _check_int("threads", self.threads, 1, self.cpu.cores)
        _check_str("io_dtype", self.io_dtype, choices=IO_DTYPES)
        _check_int("compression_level", self.compression_level, 0, MAX_COMPRESSION_LEVEL)
        _check_bool("edgetpu", self.edgetpu)
        if self.accelerator is not None:
            _check_str("accelerator", self.accelerator, max_len=200)
        _check_str_tuple("hardware_ids", self.hardware_ids, pattern=_HWID)
        _check_str_tuple("sources", self.sources)
        if self.path is not None and not isinstance(self.path, str):
            raise _fail("path", "must be a string")
        # Only a full-integer model has int8 tensors at its edges; the other schemes keep float I/O.
        if self.io_dtype == "int8" and self.quantization != "int8":
            raise _fail("io_dtype", f"int8 needs quantization = int8, not {self.quantization!r}")
        if self.edgetpu:
            # The Edge TPU runs only fully 8-bit quantized models, through its delegate.
            if self.quantization != "int8":
                raise _fail("edgetpu", f"needs quantization = int8, not {self.quantization!r}")
            if "edgetpu" not in names:
                raise _fail("edgetpu", "needs a delegate named 'edgetpu' in the chain")

    @property
    def builtin(self) -> bool:
        """Whether this profile was loaded from the profiles shipped with edge-sdk."""
        return self.path is not None and self.path.startswith(str(_builtin_root()))

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain data (the TOML schema), e.g. for ``--json`` output.

        ``DeviceProfile.from_dict(p.to_dict()) == p``; :attr:`path` is not included.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "architecture": self.architecture,
            "python": self.python,
            "cpu": self.cpu.to_dict(),
            "memory_mb": self.memory_mb,
            "runtime": self.runtime.to_dict(),
            "delegates": [d.to_dict() for d in self.delegates],
            "quantization": self.quantization,
            "io_dtype": self.io_dtype,
            "aead": self.aead,
            "max_model_bytes": self.max_model_bytes,
            "threads": self.threads,
            "compression_level": self.compression_level,
            "edgetpu": self.edgetpu,
            "hardware_ids": list(self.hardware_ids),
            "sources": list(self.sources),
        }
        if self.accelerator is not None:
            out["accelerator"] = self.accelerator
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | None = None) -> DeviceProfile:
        """Build and validate a profile from parsed TOML (or :meth:`to_dict` output).

        Raises:
            ProfileError: an unknown, missing or invalid key, prefixed with ``path`` when given.
        """
        try:
            data = _table("profile", data)
            _expect_keys("", data, _REQUIRED, _OPTIONAL)
            cpu = CpuSpec.from_dict(data["cpu"])
            delegates = tuple(
                DelegateSpec.from_dict(d, i)
                for i, d in enumerate(_array("delegates", data["delegates"]))
            )
            lists = {k: tuple(_array(k, data.get(k, []))) for k in ("hardware_ids", "sources")}
            return cls(
                name=data["name"],
                description=data["description"],
                architecture=data["architecture"],
                python=data["python"],
                cpu=cpu,
                memory_mb=data["memory_mb"],
                runtime=RuntimeSpec.from_dict(data["runtime"]),
                delegates=delegates,
                quantization=data["quantization"],
                aead=data["aead"],
                max_model_bytes=data["max_model_bytes"],
                threads=data.get("threads", cpu.cores),
                io_dtype=data.get("io_dtype", "float32"),
                compression_level=data.get("compression_level", DEFAULT_COMPRESSION_LEVEL),
                edgetpu=data.get("edgetpu", False),
                accelerator=data.get("accelerator"),
                hardware_ids=lists["hardware_ids"],
                sources=lists["sources"],
                path=path,
            )
        except ProfileError as exc:
            if path is None:
                raise
            raise ProfileError(f"{path}: {exc.message}", hint=exc.hint) from None


# -- finding and loading -------------------------------------------------------------------------


def _builtin_root() -> Traversable:
    try:
        return resources.files(BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        # An editable install imports edge_sdk from the checkout, where the built-in profiles sit
        # beside the package rather than inside it (the wheel maps them in).
        checkout = Path(__file__).resolve().parent.parent / "device_profiles"
        if not checkout.is_dir():
            raise ProfileError(
                f"the built-in profiles ({BUILTIN_PACKAGE}) are missing from this installation",
                hint="reinstall edge-sdk from its wheel",
            ) from None
        return checkout


def _user_dirs() -> list[Path]:
    """The directories of ``EDGE_SDK_PROFILE_PATH``, in search order; empty entries are skipped."""
    raw = os.environ.get(PROFILE_PATH_ENV, "")
    dirs = [Path(entry) for entry in raw.split(os.pathsep) if entry]
    for directory in dirs:
        if not directory.is_dir():
            raise ProfileError(
                f"{PROFILE_PATH_ENV} lists {str(directory)!r}, which is not a directory",
                hint=f"fix or unset {PROFILE_PATH_ENV}",
            )
    return dirs


def _is_path(name_or_path: str) -> bool:
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return name_or_path.endswith(".toml") or any(sep in name_or_path for sep in separators)


def _parse(raw: bytes, where: str) -> DeviceProfile:
    stem = where.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".toml")
    if len(raw) > MAX_PROFILE_FILE_BYTES:
        raise ProfileError(f"{where}: larger than {MAX_PROFILE_FILE_BYTES} bytes; not a profile")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The parser's message carries the line and column, e.g. "(at line 3, column 9)".
        raise ProfileError(f"{where}: invalid TOML: {exc}") from None
    profile = DeviceProfile.from_dict(data, path=where)
    if profile.name != stem:
        raise ProfileError(
            f"{where}: name {profile.name!r} does not match the file name {stem + '.toml'!r}",
            hint=f"rename the file to {profile.name}.toml or set name = {stem!r}",
        )
    return profile


def _load_file(path: Path) -> DeviceProfile:
    try:
        raw = read_capped(path, 1 << 20)
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return _parse(raw, str(path))


def _candidates() -> Iterator[tuple[str, Path | Traversable]]:
    """Every profile file, highest precedence first: user directories in order, then built-ins."""
    for directory in _user_dirs():
        for path in sorted(directory.glob("*.toml")):
            yield path.stem, path
    for resource in sorted(_builtin_root().iterdir(), key=lambda t: t.name):
        if resource.name.endswith(".toml") and resource.is_file():
            yield resource.name.removesuffix(".toml"), resource


def load_profile(name_or_path: str) -> DeviceProfile:
    """Load a profile by name, or from a file when given a path.

    A value ending in ``.toml`` or containing a path separator is a file path. A name is looked up
    in the ``EDGE_SDK_PROFILE_PATH`` directories in order, then among the built-in profiles.

    Raises:
        ProfileError: unknown name (listing the available ones), unreadable file, invalid TOML
            (with line and column), or an invalid profile (naming the file and key).
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ProfileError("a profile name or path is required")
    if _is_path(name_or_path):
        return _load_file(Path(name_or_path))
    if not _NAME.fullmatch(name_or_path):
        raise ProfileError(
            f"{name_or_path[:80]!r} is not a profile name (lowercase letters, digits, '-' and '_')"
        )
    available: set[str] = set()
    for name, entry in _candidates():
        if name == name_or_path:
            if isinstance(entry, Path):
                return _load_file(entry)
            return _parse(entry.read_bytes(), str(entry))
        available.add(name)
    raise ProfileError(
        f"unknown device profile {name_or_path!r}; available: {', '.join(sorted(available))}",
        hint=(
            f"pass a .toml path, or put {name_or_path}.toml in a directory listed in "
            f"{PROFILE_PATH_ENV}"
        ),
    )


def list_profiles() -> list[DeviceProfile]:
    """Every available profile, sorted by name; a user profile shadows a built-in of the same name.

    Raises:
        ProfileError: a profile file that would be listed is invalid (the error names it).
    """
    found: dict[str, DeviceProfile] = {}
    for name, entry in _candidates():
        if name in found:
            continue  # shadowed by an earlier (higher-precedence) directory
        if isinstance(entry, Path):
            found[name] = _load_file(entry)
        else:
            found[name] = _parse(entry.read_bytes(), str(entry))
    return [found[name] for name in sorted(found)]


__all__ = [
    "AEADS",
    "ARCHITECTURES",
    "IO_DTYPES",
    "PROFILE_PATH_ENV",
    "QUANTIZATIONS",
    "RUNTIME_PACKAGES",
    "CpuSpec",
    "DelegateSpec",
    "DeviceProfile",
    "RuntimeSpec",
    "list_profiles",
    "load_profile",
]
