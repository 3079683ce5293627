"""Device profiles: the built-ins load and say what we know about each board; user profiles are
found, shadow built-ins and are validated as strictly; the wheel ships the TOML files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge_sdk.errors import ProfileError
from edge_sdk.format import compression
from edge_sdk.format.manifest import Target
from edge_sdk.profiles import (
    PROFILE_PATH_ENV,
    DelegateSpec,
    DeviceProfile,
    list_profiles,
    load_profile,
)

REPO = Path(__file__).resolve().parents[1]
BUILTINS = ("coral-usb", "imx8mp", "jetson-orin-nano", "rpi4", "rpi4-tflite214", "rpi5", "x86_64")


@pytest.fixture(autouse=True)
def _no_user_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the built-ins only, whatever the caller's environment says."""
    monkeypatch.delenv(PROFILE_PATH_ENV, raising=False)


# A minimal valid user profile; the table of bad profiles below mutates one thing in it.
BASE = """\
name = "{name}"
description = "a test board"
architecture = "aarch64"
python = "3.11"
memory_mb = 2048
max_model_bytes = 1048576
quantization = "dynamic"
aead = "chacha20-poly1305"

[cpu]
model = "Cortex-A72"
cores = 4
aes_instructions = false

[runtime]
package = "tflite-runtime"
version = "2.14.0"

[[delegates]]
name = "xnnpack"
builtin = true
"""


def write_profile(directory: Path, name: str, text: str | None = None) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(BASE.format(name=name) if text is None else text, encoding="utf-8")
    return path


# -- the built-in profiles -----------------------------------------------------------------------


def test_the_builtin_list_matches_the_files_shipped() -> None:
    on_disk = sorted(p.stem for p in (REPO / "device_profiles").glob("*.toml"))
    assert on_disk == sorted(BUILTINS)
    assert [p.name for p in list_profiles()] == sorted(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_loads_validates_and_round_trips(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.builtin
    assert profile.path is not None
    assert profile.path.endswith(f"{name}.toml")
    assert profile.sources, "every built-in profile says where its facts come from"
    assert 1 <= profile.threads <= profile.cpu.cores
    # to_dict is the TOML schema: it survives JSON and rebuilds an equal profile.
    data = json.loads(json.dumps(profile.to_dict()))
    assert DeviceProfile.from_dict(data) == profile
    # Every profile's target fits in a manifest, so a bundle can be sealed for it.
    target = Target(
        profile.name, profile.runtime.package, profile.runtime.version, profile.hardware_ids
    )
    assert target.hardware_ids == profile.hardware_ids


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_chains_end_on_xnnpack_and_aead_follows_the_cpu(name: str) -> None:
    profile = load_profile(name)
    last = profile.delegates[-1]
    assert (last.name, last.builtin, last.library) == ("xnnpack", True, None)
    # Without AES instructions AES-GCM is slow software; ChaCha20-Poly1305 is the fast AEAD.
    expected = "aes-256-gcm" if profile.cpu.aes_instructions else "chacha20-poly1305"
    assert profile.aead == expected


def test_rpi4_facts() -> None:
    p = load_profile("rpi4")
    assert p.architecture == "aarch64"
    assert (p.cpu.model, p.cpu.soc, p.cpu.cores) == ("Cortex-A72", "BCM2711", 4)
    assert p.cpu.aes_instructions is False
    assert p.aead == "chacha20-poly1305"
    assert p.runtime.package == "ai-edge-litert"
    assert p.quantization == "dynamic"
    assert p.io_dtype == "float32"
    assert {"raspberrypi,4-model-b", "brcm,bcm2711"} <= set(p.hardware_ids)
    assert [d.name for d in p.delegates] == ["xnnpack"]
    assert p.compression_level == compression.DEFAULT_LEVEL


def test_rpi4_tflite214_facts() -> None:
    p = load_profile("rpi4-tflite214")
    assert (p.runtime.package, p.runtime.version) == ("tflite-runtime", "2.14.0")
    assert p.runtime.version_info == (2, 14, 0)
    assert p.python == "3.11"  # tflite-runtime 2.14.0 has no aarch64 wheels past CPython 3.11
    assert p.aead == "chacha20-poly1305"
    assert p.hardware_ids == load_profile("rpi4").hardware_ids


def test_rpi5_facts() -> None:
    p = load_profile("rpi5")
    assert (p.cpu.model, p.cpu.soc, p.cpu.cores) == ("Cortex-A76", "BCM2712", 4)
    assert p.cpu.aes_instructions is True
    assert p.aead == "aes-256-gcm"
    assert "raspberrypi,5-model-b" in p.hardware_ids


def test_coral_usb_facts() -> None:
    p = load_profile("coral-usb")
    assert p.edgetpu is True
    assert p.quantization == "int8"
    assert p.io_dtype == "int8"
    first = p.delegates[0]
    assert (first.name, first.library, first.required) == ("edgetpu", "libedgetpu.so.1", True)
    assert dict(first.options) == {"device": "usb"}
    assert p.aead == "chacha20-poly1305"  # the host is a Pi 4
    assert p.cpu.soc == "BCM2711"


def test_imx8mp_facts() -> None:
    p = load_profile("imx8mp")
    assert p.quantization == "int8"
    assert p.io_dtype == "int8"
    assert (p.cpu.model, p.cpu.cores) == ("Cortex-A53", 4)
    assert p.aead == "aes-256-gcm"
    vx = p.delegates[0]
    assert (vx.name, vx.library, vx.builtin) == ("vx", "libvx_delegate.so", False)
    assert "fsl,imx8mp" in p.hardware_ids
    assert p.accelerator is not None
    assert "2.3 TOPS" in p.accelerator


def test_jetson_orin_nano_facts() -> None:
    p = load_profile("jetson-orin-nano")
    assert (p.cpu.model, p.cpu.cores, p.threads) == ("Cortex-A78AE", 6, 6)
    assert p.quantization == "float16"
    gpu = p.delegates[0]
    assert (gpu.library, gpu.required) == ("libtensorflowlite_gpu_delegate.so", False)
    assert "nvidia,tegra234" in p.hardware_ids
    assert p.python == "3.10"  # JetPack 6 is Ubuntu 22.04


def test_x86_64_facts() -> None:
    p = load_profile("x86_64")
    assert p.architecture == "x86_64"
    assert p.hardware_ids == ("x86_64",)
    assert p.aead == "aes-256-gcm"
    assert p.quantization == "none"
    assert p.max_model_bytes == 4 * 1024**3  # past the FlatBuffer's 2 GiB: weights stored after it


# -- user profiles -------------------------------------------------------------------------------


def test_a_minimal_user_profile_gets_the_defaults(tmp_path: Path) -> None:
    p = load_profile(str(write_profile(tmp_path, "myboard")))
    assert p.threads == p.cpu.cores == 4
    assert p.io_dtype == "float32"
    assert p.compression_level == compression.DEFAULT_LEVEL
    assert (p.edgetpu, p.accelerator, p.hardware_ids, p.sources) == (False, None, (), ())
    assert not p.builtin


def test_user_profile_by_name_through_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_profile(tmp_path, "myboard")
    with pytest.raises(ProfileError, match="unknown device profile 'myboard'"):
        load_profile("myboard")
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path))
    profile = load_profile("myboard")
    assert profile.path == str(path)
    assert "myboard" in [p.name for p in list_profiles()]
    assert load_profile("rpi5").builtin  # the built-ins are still there


def test_user_profile_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_profile(tmp_path, "myboard")
    assert load_profile(str(path)).name == "myboard"
    monkeypatch.chdir(tmp_path)
    assert load_profile("myboard.toml").name == "myboard"  # ends in .toml: a path, not a name
    assert load_profile(f".{os.sep}myboard.toml").name == "myboard"


def test_a_user_profile_shadows_the_builtin_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = BASE.format(name="rpi4").replace("a test board", "our own Pi 4")
    write_profile(tmp_path, "rpi4", text)
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path))
    assert load_profile("rpi4").description == "our own Pi 4"
    assert not load_profile("rpi4").builtin
    listed = [p for p in list_profiles() if p.name == "rpi4"]
    assert [p.description for p in listed] == ["our own Pi 4"]
    assert len(list_profiles()) == len(BUILTINS)


def test_earlier_path_entries_win_and_empty_entries_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write_profile(first, "board", BASE.format(name="board").replace("a test board", "first"))
    write_profile(second, "board", BASE.format(name="board").replace("a test board", "second"))
    monkeypatch.setenv(PROFILE_PATH_ENV, os.pathsep.join(["", str(first), "", str(second), ""]))
    assert load_profile("board").description == "first"
    assert [p.description for p in list_profiles() if p.name == "board"] == ["first"]


def test_a_path_entry_that_is_not_a_directory_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path / "missing"))
    with pytest.raises(ProfileError, match=f"{PROFILE_PATH_ENV} lists .*missing.*not a directory"):
        load_profile("rpi4")
    with pytest.raises(ProfileError, match="not a directory"):
        list_profiles()


def test_an_invalid_user_profile_breaks_the_listing_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write_profile(tmp_path, "broken", BASE.format(name="broken").replace("dynamic", "int3"))
    monkeypatch.setenv(PROFILE_PATH_ENV, str(tmp_path))
    with pytest.raises(ProfileError, match="quantization") as info:
        list_profiles()
    assert str(bad) in info.value.message


def test_absolute_delegate_library_paths_are_accepted(tmp_path: Path) -> None:
    text = BASE.format(name="npu").replace(
        '[[delegates]]\nname = "xnnpack"',
        '[[delegates]]\nname = "vx"\nlibrary = "/usr/lib/libvx_delegate.so"\n\n'
        '[delegates.options]\ncache = true\nlevel = 2\n\n[[delegates]]\nname = "xnnpack"',
    )
    p = load_profile(str(write_profile(tmp_path, "npu", text)))
    assert p.delegates[0].library == "/usr/lib/libvx_delegate.so"
    assert dict(p.delegates[0].options) == {"cache": True, "level": 2}


# -- bad profiles: each names the file and what is wrong -----------------------------------------


def _add_top(line: str) -> tuple[str, str]:
    return ('description = "a test board"\n', f'description = "a test board"\n{line}\n')


BAD = [
    ("unknown key", _add_top('colour = "red"'), r"unknown key 'colour'"),
    (
        "unknown nested key",
        ('version = "2.14.0"', 'version = "2.14.0"\nflavour = "lite"'),
        r"unknown key 'runtime\.flavour'",
    ),
    (
        "unknown delegate key",
        ("builtin = true", 'builtin = true\npath = "/x"'),
        r"unknown key 'delegates\[0\]\.path'",
    ),
    (
        "bad type",
        ("memory_mb = 2048", 'memory_mb = "2048"'),
        r"memory_mb: must be an integer, got string",
    ),
    ("bool is not an int", _add_top("threads = true"), r"threads: must be an integer, got boolean"),
    (
        "bad quantization",
        ('quantization = "dynamic"', 'quantization = "int4"'),
        r"quantization: 'int4' is not one of none, dynamic, float16, int8, int16x8",
    ),
    (
        "bad aead",
        ('aead = "chacha20-poly1305"', 'aead = "aes-128-cbc"'),
        r"aead: 'aes-128-cbc' is not one of aes-256-gcm, chacha20-poly1305",
    ),
    ("bad architecture", ('"aarch64"', '"armv7l"'), r"architecture: 'armv7l' is not one of"),
    (
        "missing required field",
        ('aead = "chacha20-poly1305"\n', ""),
        r"missing required key 'aead'",
    ),
    (
        "missing nested field",
        ('version = "2.14.0"\n', ""),
        r"missing required key 'runtime\.version'",
    ),
    (
        "missing table",
        ('[runtime]\npackage = "tflite-runtime"\nversion = "2.14.0"\n', ""),
        r"missing required key 'runtime'",
    ),
    ("invalid TOML", ('python = "3.11"', "python = "), r"invalid TOML: .*line 4, column 10"),
    ("duplicate key", ('python = "3.11"', 'python = "3.11"\npython = "3.12"'), r"invalid TOML"),
    ("bad python", ('python = "3.11"', 'python = "2.7"'), r"python: malformed value '2\.7'"),
    ("too many threads", _add_top("threads = 8"), r"threads: must be between 1 and 4, got 8"),
    (
        "model bigger than memory",
        ("max_model_bytes = 1048576", "max_model_bytes = 4294967296"),
        r"max_model_bytes: must be between 1 and",
    ),
    (
        "compression level",
        _add_top("compression_level = 23"),
        r"compression_level: must be between 0 and 22",
    ),
    (
        "int8 io needs int8",
        _add_top('io_dtype = "int8"'),
        r"io_dtype: int8 needs quantization = int8",
    ),
    ("edgetpu needs int8", _add_top("edgetpu = true"), r"edgetpu: needs quantization = int8"),
    (
        "edgetpu needs its delegate",
        ('quantization = "dynamic"', 'quantization = "int8"\nedgetpu = true'),
        r"needs a delegate named 'edgetpu'",
    ),
    (
        "bad hardware id",
        _add_top('hardware_ids = ["Raspberry Pi 4"]'),
        r"hardware_ids\[0\]: malformed value",
    ),
    (
        "duplicate hardware id",
        _add_top('hardware_ids = ["a", "a"]'),
        r"hardware_ids: contains duplicates",
    ),
    ("sources not a list", _add_top('sources = "a paper"'), r"sources: must be an array"),
    (
        "bad runtime package",
        ('"tflite-runtime"', '"tensorflow"'),
        r"runtime\.package: 'tensorflow' is not one of",
    ),
    (
        "bad runtime version",
        ('version = "2.14.0"', 'version = "latest"'),
        r"runtime\.version: malformed value",
    ),
    (
        "cpu is a table",
        ('[cpu]\nmodel = "Cortex-A72"\ncores = 4\naes_instructions = false\n', 'cpu = "A72"\n'),
        r"cpu: must be a table",
    ),
    ("zero cores", ("cores = 4", "cores = 0"), r"cpu\.cores: must be between 1 and 1024, got 0"),
    (
        "builtin with a library",
        ("builtin = true", 'builtin = true\nlibrary = "libxnnpack.so"'),
        r"a builtin delegate has no library",
    ),
    (
        "unknown builtin",
        ('name = "xnnpack"\nbuiltin = true', 'name = "gpu"\nbuiltin = true'),
        r"no delegate 'gpu' is built into the runtime",
    ),
    (
        "xnnpack is builtin",
        ("builtin = true", "builtin = false"),
        r"xnnpack is built into the runtime",
    ),
    (
        "delegate without library",
        ('name = "xnnpack"\nbuiltin = true', 'name = "npu"'),
        r"delegates\['npu'\]\.library: required unless builtin = true",
    ),
    (
        "relative library path",
        ('name = "xnnpack"\nbuiltin = true', 'name = "npu"\nlibrary = "../lib/npu.so"'),
        r"must be a bare library name .* or an absolute path",
    ),
    (
        "option value is a table",
        (
            'name = "xnnpack"\nbuiltin = true',
            'name = "npu"\nlibrary = "libnpu.so"\noptions = {a = {b = 1}}',
        ),
        r"options\.a: must be a string, number or boolean, got table",
    ),
    (
        "duplicate delegate",
        ("builtin = true\n", 'builtin = true\n\n[[delegates]]\nname = "xnnpack"\nbuiltin = true\n'),
        r"delegate 'xnnpack' appears twice",
    ),
    (
        "name differs from the file",
        ('name = "{name}"', 'name = "other"'),
        r"name 'other' does not match the file name 'bad\.toml'",
    ),
    ("bad name", ('name = "{name}"', 'name = "Bad Name"'), r"name: malformed value 'Bad Name'"),
]


@pytest.mark.parametrize(("mutation", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_profiles_are_rejected_naming_file_and_key(
    tmp_path: Path, mutation: tuple[str, str], message: str
) -> None:
    before, after = mutation
    assert before in BASE, f"the mutation must apply: {before!r}"
    path = write_profile(tmp_path, "bad", BASE.replace(before, after, 1).replace("{name}", "bad"))
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(str(path))
    assert info.value.message.startswith(f"{path}: ")
    assert info.value.exit_code == 50


def test_not_utf8_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(BASE.format(name="latin").replace("a test board", "caf\xe9").encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin\.toml: not UTF-8 text"):
        load_profile(str(path))


def test_unknown_name_lists_the_available_profiles() -> None:
    with pytest.raises(ProfileError, match=r"unknown device profile 'nope'; available: ") as info:
        load_profile("nope")
    assert all(name in info.value.message for name in BUILTINS)
    assert info.value.hint is not None
    assert PROFILE_PATH_ENV in info.value.hint


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", r"a profile name or path is required"),
        ("Rpi4", r"'Rpi4' is not a profile name"),
        ("rpi 4", r"'rpi 4' is not a profile name"),
        ("/nonexistent/dir/rpi4.toml", r"rpi4\.toml: no such profile file"),
    ],
)
def test_bad_names_and_paths(value: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(value)


# -- the Python API ------------------------------------------------------------------------------


def test_an_object_that_exists_is_valid() -> None:
    profile = load_profile("rpi4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.aead = "aes-256-gcm"  # type: ignore[misc]
    with pytest.raises(ProfileError, match=r"^aead: 'none' is not one of"):
        dataclasses.replace(profile, aead="none")
    with pytest.raises(ProfileError, match=r"threads: must be between 1 and 4, got 5"):
        dataclasses.replace(profile, threads=5)
    with pytest.raises(ProfileError, match=r"options: must be a table"):
        DelegateSpec("npu", library="libnpu.so", options={"a": "b"})  # type: ignore[arg-type]
    assert hash(profile) == hash(load_profile("rpi4"))


def test_importing_profiles_loads_no_heavy_module() -> None:
    code = (
        "import sys, edge_sdk.profiles as p; p.load_profile('rpi4'); p.list_profiles();"
        "heavy = {'numpy', 'tensorflow', 'ai_edge_litert', 'tflite_runtime', 'typer', 'rich'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- packaging -----------------------------------------------------------------------------------


def test_the_wheel_ships_the_profiles(tmp_path: Path) -> None:
    # Build from a copy of the sources so a stale build/ directory cannot hide a packaging bug.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    for optional in ("README.md", "LICENSE"):
        if (REPO / optional).exists():
            shutil.copy2(REPO / optional, src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "edge_sdk", src / "edge_sdk", ignore=ignore)
    shutil.copytree(REPO / "device_profiles", src / "device_profiles", ignore=ignore)
    out = tmp_path / "dist"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("edgepkg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "edge_sdk/device_profiles/rpi4.toml" in names
        assert "edge_sdk/device_profiles/__init__.py" in names
        assert "edge_sdk/profiles.py" in names
        shipped = tmp_path / "shipped"
        shipped.mkdir()
        for name in BUILTINS:
            copy = shipped / f"{name}.toml"
            copy.write_bytes(archive.read(f"edge_sdk/device_profiles/{name}.toml"))
            assert load_profile(str(copy)) == load_profile(name)
