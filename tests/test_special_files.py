"""A FIFO, a device, a socket or a directory where the CLI expects a file is refused, by name, at once.

A FIFO named ``x.litertlm`` blocked ``edge-sdk package`` forever (the first read of the model,
hashing it for the build attestation, waited for a writer that never came), and ``/dev/zero`` as a
model or as calibration data was hashed forever. Every user-given path is now opened by
:func:`edge_sdk.files.open_regular` and a non-regular file is refused with the typed error of what
it should have been (README, "Exit codes"). Each command runs the real CLI in a child process with
a timeout, so a regression fails its test instead of freezing the suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk.errors import (
    AuditLogError,
    BundleFormatError,
    DataError,
    EdgeSDKError,
    KeyFileError,
    KeySlipError,
    ModelInputError,
    TransportError,
)

from . import models
from .conftest import REPO, CliResult

#: Seconds a refused command may take before it counts as hung: a guard against blocking
#: forever, far above what a refusal takes; nothing asserts how fast it was.
HANG = 120


def edge_sdk(*args: str | os.PathLike[str], cwd: Path) -> CliResult:
    """``python -m edge_sdk ARGS`` in a child process, with this checkout's code, a timeout and
    a device state directory of its own (never the machine's)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200",
           "EDGE_SDK_STATE_DIR": str(cwd / "state")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "edge_sdk", *map(str, args)],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=HANG,
        check=False,
    )  # fmt: skip
    return CliResult(done.returncode, done.stdout, done.stderr)


def _add_model(n: int = 1024) -> bytes:
    """A genuine one-op TFLite model, y = x + 0 over ``n`` floats, built without TensorFlow."""
    from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

    spec = Spec(opcodes=[OpCode(0)], ops=[Op(0, (0, 1), (2,))], inputs=(0,), outputs=(2,),
                tensors=[Tensor("x", (n,)), Tensor("c", (n,), buffer=1), Tensor("y", (n,))],
                buffers=[Buffer(), Buffer(data=bytes(4 * n))])  # fmt: skip
    return build(spec) + bytes(64)


@pytest.fixture
def work(tmp_path: Path, key_files: dict[str, Path]) -> Path:
    """A directory holding signer.key/.pub, device.key/.pub (``key_files``) and add.tflite."""
    assert {key_files[k].parent for k in ("signer", "device.pub")} == {tmp_path}
    (tmp_path / "add.tflite").write_bytes(_add_model())
    return tmp_path


def _package(work: Path, model: str | Path, *more: str | Path) -> CliResult:
    return edge_sdk("package", model, "--profile", "x86_64", "--name", "add", "--version", "1",
                    "--sign-key", "signer.key", "--recipient", "device.pub", "-o", "out.edgepkg",
                    *more, cwd=work)  # fmt: skip


def _refused(result: CliResult, error: type[EdgeSDKError], message: str) -> None:
    assert result.code == error.exit_code, result.err
    assert result.err.startswith("error: ") and message in result.err and "hint: " in result.err
    assert "Traceback" not in result.err


@pytest.fixture
def unix_socket(work: Path) -> Iterator[Path]:
    path = work / "model.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        yield path


# -- the model --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x.litertlm", "x.tflite", "x.h5", "x.keras"])
def test_a_fifo_named_as_a_model_is_refused_not_waited_on(name: str, work: Path) -> None:
    os.mkfifo(work / name)
    result = _package(work, name)
    _refused(result, ModelInputError, f"model file {name} is a FIFO, not a regular file")
    assert ".litertlm" in result.err and "SavedModel directory" in result.err  # the hint
    assert not (work / "out.edgepkg").exists()


def test_a_fifo_as_a_signed_model_is_refused_before_it_is_copied(work: Path) -> None:
    """With --model-signature the model is first copied into a private directory."""
    os.mkfifo(work / "x.tflite")
    result = _package(work, "x.tflite", "--model-signature", "x.sig", "--model-signer",
                      "signer.pub")  # fmt: skip
    _refused(result, ModelInputError, "model file x.tflite is a FIFO, not a regular file")


@pytest.mark.parametrize(
    ("model", "kind"),
    [("/dev/zero", "a character device"), ("/dev/urandom", "a character device"),
     ("model.sock", "a socket")],
)  # fmt: skip
def test_a_device_or_a_socket_as_a_model_is_refused(
    model: str, kind: str, work: Path, unix_socket: Path
) -> None:
    result = _package(work, model)
    _refused(result, ModelInputError, f"model file {model} is {kind}, not a regular file")


def test_a_special_file_inside_a_savedmodel_directory_is_refused(work: Path) -> None:
    """A SavedModel is legitimately a directory; what it holds must be regular files."""
    saved = work / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    os.mkfifo(saved / "variables" / "variables.index")
    result = _package(work, saved)
    assert result.code == ModelInputError.exit_code, result.err
    assert "variables.index is a symlink or special file" in result.err


# -- data -------------------------------------------------------------------------------------------


@pytest.mark.host  # the model is the trained Keras digits CNN (built once, cached)
@pytest.mark.parametrize(
    ("option", "given", "kind"),
    [("--calibration", "fifo", "a FIFO"), ("--calibration", "/dev/zero", "a character device"),
     ("--eval", "/dev/urandom", "a character device"), ("--train", "fifo", "a FIFO")],
)  # fmt: skip
def test_a_special_file_as_data_is_refused(option: str, given: str, kind: str, work: Path) -> None:
    if given == "fifo":
        given = "data.npz"
        os.mkfifo(work / given)
    more = ["--quantize", "int8"] if option == "--calibration" else []
    more += ["--prune", "0.5"] if option == "--train" else []
    result = _package(work, models.digits_cnn(), option, given, *more)
    _refused(result, DataError, f"data file {given} is {kind}, not a regular file")


@pytest.mark.host
def test_a_fifo_in_an_image_directory_is_refused(work: Path) -> None:
    images = work / "images"
    images.mkdir()
    os.mkfifo(images / "a.png")
    result = _package(work, models.digits_cnn(), "--calibration", images, "--quantize", "int8")
    assert result.code == DataError.exit_code, result.err
    assert "a.png is a symlink or special file" in result.err


# -- keys, bundles, slips, inputs, logs -----------------------------------------------------------


@pytest.fixture
def bundle(work: Path) -> Path:
    result = _package(work, "add.tflite")
    assert result.code == 0, result.err
    return work / "out.edgepkg"


DEPLOY = ["deploy", "out.edgepkg", "--target", "ssh://edge@127.0.0.1:1/srv/models", "--trust",
          "signer.pub", "--retries", "1", "--connect-timeout", "5"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["package", "add.tflite", "--profile", "x86_64", "--sign-key", "/dev/zero"],
         KeyFileError, "key file /dev/zero is a character device"),
        (["package", "add.tflite", "--profile", "x86_64", "--sign-key", "signer.key",
          "--recipient", "fifo"], KeyFileError, "key file fifo is a FIFO"),
        (["verify", "out.edgepkg", "--trust", "/dev/zero"], KeyFileError,
         "key file /dev/zero is a character device"),
        (["verify", "out.edgepkg", "--trust", "signer.pub", "--device-key", "fifo"],
         KeyFileError, "key file fifo is a FIFO"),
        (["inspect", "/dev/zero"], BundleFormatError, "/dev/zero is a character device"),
        (["inspect", "fifo"], BundleFormatError, "fifo is a FIFO"),
        (["verify", "/dev/zero", "--trust", "signer.pub"], BundleFormatError,
         "/dev/zero is a character device"),
        (["run", "fifo", "--trust", "signer.pub", "--device-key", "device.key", "--input",
          "x.npy"], BundleFormatError, "fifo is a FIFO"),
        (["verify", "out.edgepkg", "--trust", "signer.pub", "--device-key", "device.key",
          "--slip", "/dev/zero"], KeySlipError, "key slip /dev/zero is a character device"),
        (["run", "out.edgepkg", "--trust", "signer.pub", "--device-key", "device.key",
          "--input", "fifo"], DataError, "input file fifo is a FIFO"),
        (["audit", "log", "/dev/zero"], AuditLogError, "audit log /dev/zero is a character device"),
        (["audit", "log", "fifo"], AuditLogError, "audit log fifo is a FIFO"),
        # Refused before any connection is tried: nothing listens on port 1.
        ([*DEPLOY, "--identity", "fifo"], TransportError, "identity file fifo is a FIFO"),
        ([*DEPLOY, "--known-hosts", "/dev/zero"], TransportError,
         "known_hosts /dev/zero is a character device"),
    ],
    ids=["sign-key", "recipient", "trust", "device-key", "inspect-zero", "inspect-fifo",
         "verify-bundle", "run-bundle", "slip", "run-input", "audit-log-zero", "audit-log-fifo",
         "ssh-identity", "ssh-known-hosts"],
)  # fmt: skip
def test_a_special_file_as_a_key_bundle_slip_input_or_log_is_refused(
    args: list[str], error: type[EdgeSDKError], message: str, work: Path, bundle: Path
) -> None:
    os.mkfifo(work / "fifo")
    np.save(work / "x.npy", np.zeros(1024, dtype=np.float32))
    _refused(edge_sdk(*args, cwd=work), error, f"{message}, not a regular file")


# -- and then the genuine file ----------------------------------------------------------------------


def test_the_next_genuine_package_still_works(work: Path) -> None:
    """The same name, a FIFO first and then the genuine model: packaged, run, right answer."""
    model = work / "x.tflite"
    os.mkfifo(model)
    _refused(_package(work, model.name), ModelInputError, "model file x.tflite is a FIFO")
    model.unlink()
    model.write_bytes(_add_model())
    packaged = _package(work, model.name)
    assert packaged.code == 0, packaged.err
    x = np.arange(1024, dtype=np.float32)
    np.save(work / "x.npy", x)
    ran = edge_sdk("run", "out.edgepkg", "--trust", "signer.pub", "--device-key", "device.key",
                   "--input", "x.npy", "--output", "y.npz", cwd=work)  # fmt: skip
    assert ran.code == 0, ran.err
    with np.load(work / "y.npz") as outputs:
        (y,) = outputs.values()
    assert np.array_equal(y, x)


def test_the_next_genuine_litertlm_still_packages(work: Path, tiny_llm: Any) -> None:
    os.mkfifo(work / "x.litertlm")
    _refused(_package(work, "x.litertlm"), ModelInputError, "model file x.litertlm is a FIFO")
    (work / "x.litertlm").unlink()
    os.symlink(tiny_llm.path, work / "x.litertlm")
    packaged = _package(work, "x.litertlm")
    assert packaged.code == 0, packaged.err
    assert "LiteRT-LM" in packaged.out
    inspected = edge_sdk("inspect", "out.edgepkg", "--json", cwd=work)
    assert inspected.code == 0, inspected.err
    assert inspected.json()["manifest"]["model"]["format"] == "litertlm"


# -- the helper -------------------------------------------------------------------------------------


def test_open_regular_names_what_it_refuses(work: Path, unix_socket: Path) -> None:
    from edge_sdk.files import NotARegularFile, open_regular

    os.mkfifo(work / "fifo")
    os.symlink(work / "add.tflite", work / "link")
    for path, kind in [(work / "fifo", "a FIFO"), ("/dev/zero", "a character device"),
                       (unix_socket, "a socket")]:  # fmt: skip
        with pytest.raises(NotARegularFile) as refused:
            open_regular(path)
        assert refused.value.strerror == f"{kind}, not a regular file"
    with pytest.raises(IsADirectoryError):
        open_regular(work)
    with pytest.raises(NotARegularFile, match="a symlink"):
        open_regular(work / "link", follow_symlinks=False)
    with open_regular(work / "link") as handle:
        assert os.get_blocking(handle.fileno())  # an ordinary blocking file once accepted
        assert handle.read() == _add_model()
