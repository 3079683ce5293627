"""What users install: the built wheel, in fresh virtualenvs, driven as a user drives it.

Every other test imports edge_sdk from the checkout (an editable install). These build the wheel
and sdist from the committed tree, install the wheel (never editable) into new virtualenvs
outside the checkout, and walk the user journey with the installed ``edge-sdk`` command: init,
keys, package (a .tflite, and a Keras .h5 with the host extra — the mission's own command line
as typed), verify, inspect, deploy to a directory and over SSH to a real sshd, status, rollback,
audit of a directory and a target, run, the agent against a real nginx TUF repository, and
``import edge_sdk; edge_sdk.load(...)``. The device side is also installed with the ``device``
extra alone on Python 3.10 (Jetson JetPack 6) and 3.13 (Raspberry Pi OS on trixie).

A missing wheel module, a documented command that fails as typed, or an extra that does not
install its dependencies fails here, the way it would fail for a user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.tuf_server import RepoServer

from .conftest import REPO, Dist, tracked_files
from .sshd import SshServer, make_keypair, sshd_available

pytestmark = pytest.mark.wheel
VERSION_RE = r"^edge-sdk \d+\.\d+\.\d+\n$"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def test_the_wheel_holds_every_module_of_the_source_tree(dist: Dist) -> None:
    names = set(zipfile.ZipFile(dist.wheel).namelist())
    tracked = tracked_files()
    modules = [f for f in tracked if f.startswith("edge_sdk/") and f.endswith((".py", ".typed"))]
    profiles = [f"edge_sdk/{f}" for f in tracked if f.startswith("device_profiles/")]
    missing = [f for f in modules + profiles if f not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert "edge_sdk/fleet/transports/ssh.py" in names and "edge_sdk/cli/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "tools/"))]
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(dist.wheel).read(metadata).decode()
    assert "Name: edgepkg\n" in text  # not "edge-sdk": that PyPI name is somebody else's
    for extra in ("host", "device", "deploy", "tuf"):
        assert f"Provides-Extra: {extra}" in text


def test_the_sdist_builds_the_same_wheel(dist: Dist, tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(dist.sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (root,) = tmp_path.iterdir()
    assert (root / "tests" / "test_wheel.py").exists() and (
        root / "device_profiles" / "rpi4.toml"
    ).exists()
    out = tmp_path / "rebuilt"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), str(root)],
                   check=True, capture_output=True)  # fmt: skip
    (again,) = out.glob("*.whl")
    assert sorted(zipfile.ZipFile(again).namelist()) == sorted(
        zipfile.ZipFile(dist.wheel).namelist()
    )


# -- a user's machine ------------------------------------------------------------------------------


@dataclass
class UserEnv:
    """A virtualenv with the wheel installed, a home directory and a project directory."""

    venv: Path
    home: Path
    project: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EDGE_SDK_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
                   XDG_STATE_HOME=str(self.home / ".local" / "state"),
                   # As root the default state dir is the machine's /var/lib/edge-sdk, which every
                   # run on this machine shares: a newer "model" accepted there by another run made
                   # this run's loads rollbacks. Each test's device is its own.
                   EDGE_SDK_STATE_DIR=str(self.home / ".local" / "state" / "edge-sdk"),
                   PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", COLUMNS="200")  # fmt: skip
        return env

    def run(
        self, *args: str | Path, ok: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(a) for a in args], cwd=self.project, env=self.env(), capture_output=True,
                                text=True, timeout=timeout, check=False)  # fmt: skip
        if ok:
            assert result.returncode == 0, (
                f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def cli(self, *args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.venv / "bin" / "edge-sdk", *args, ok=ok)

    def py(self, code: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-c", code, ok=ok)


def make_user(tmp: Path, python: str | Path, wheel: Path, extras: str) -> UserEnv:
    venv = tmp / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    result = subprocess.run(
        [*pip, f"{wheel}[{extras}]"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    home, project = tmp / "home", tmp / "project"
    home.mkdir()
    project.mkdir()
    return UserEnv(venv, home, project)


@pytest.fixture(scope="module")
def user(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> UserEnv:
    """A publisher's machine: the wheel with every extra a publisher uses."""
    return make_user(
        tmp_path_factory.mktemp("user"), sys.executable, dist.wheel, "host,device,deploy,tuf"
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshServer, Path, Path]]:
    reason = sshd_available()
    if reason:
        pytest.fail(reason)  # tools/test.sh installs openssh-server: missing is a broken setup
    work = tmp_path_factory.mktemp("wheel-sshd")
    client = make_keypair(work / "client")
    with SshServer.start(work / "sshd", authorized=[client.public]) as server:
        known = work / "known_hosts"
        server.write_known_hosts(known)
        yield server, client.private, known


KERAS_MODEL = """
import keras, numpy as np
inputs = keras.Input((8,), name="features")
hidden = keras.layers.Dense(16, activation="relu")(inputs)
outputs = keras.layers.Dense(3, activation="softmax", name="scores")(hidden)
model = keras.Model(inputs, outputs)
model.save("model.h5")
np.save("x.npy", np.random.default_rng(0).normal(size=(4, 8)).astype("float32"))
"""


def _enable_recipient(project: Path, target: str) -> None:
    config = project / "edge-sdk.toml"
    text = config.read_text()
    text = text.replace('# recipients = ["keys/pi-0042.pub"]', 'recipients = ["pi-0042.pub"]')
    text = text.replace('# target = "ssh://pi@pi-0042.local/opt/models"', f'target = "{target}"')
    config.write_text(text)


def test_the_user_journey_from_the_wheel(user: UserEnv, sshd: tuple[SshServer, Path, Path],
                                         tmp_path: Path) -> None:  # fmt: skip
    import re

    # The installed package, not the checkout.
    where = user.py(
        "import edge_sdk, edge_sdk.fleet.transports.ssh, edge_sdk.cli; print(edge_sdk.__file__)"
    ).stdout
    assert str(user.venv) in where and str(REPO) not in where
    assert re.match(VERSION_RE, user.cli("--version").stdout)

    # Without the one-time setup, the mission's command line says what to do, in one line.
    user.py(KERAS_MODEL)
    shutil.copy(REPO / "tests" / "vectors" / "model.tflite", user.project / "tiny.tflite")
    first = user.cli("package", "model.h5", "--profile", "rpi4", ok=False)
    assert (
        first.returncode == 2
        and "edge-sdk init" in first.stderr
        and len(first.stderr.strip().splitlines()) == 1
    )

    user.cli("init")
    key = next((user.home / ".config" / "edge-sdk" / "keys").glob("*.key"))
    assert key.stat().st_mode & 0o777 == 0o600 and (user.project / "publisher.pub").exists()
    user.cli("keys", "generate", "--kind", "device", "--out", "pi-0042")
    _enable_recipient(user.project, "board")
    (user.project / "board").mkdir()  # the board's model directory (an SD card, a mount)

    # The mission's command line, as typed.
    user.cli("package", "model.h5", "--profile", "rpi4")
    rpi4 = user.project / "model.rpi4.edgepkg"
    shown = json.loads(user.cli("inspect", rpi4, "--json").stdout)
    assert shown["manifest"]["name"] == "model" and shown["encrypted"] and shown["recipients"]
    assert shown["manifest"]["version"] >= 20260101000000  # the UTC build time
    user.cli("package", "model.h5", "--profile", "x86_64")
    user.cli("package", "tiny.tflite", "--profile", "x86_64")
    bundle = user.project / "model.x86_64.edgepkg"
    assert "OK model" in user.cli("verify", bundle, "--trust", "publisher.pub").stdout
    user.cli("verify", bundle, "--trust", "publisher.pub", "--device-key", "pi-0042.key")

    # Deploy to the configured directory, then over SSH to a real sshd.
    user.cli("deploy", bundle)
    time.sleep(1.1)  # the default version is the build time in seconds
    user.cli("package", "model.h5", "--profile", "x86_64")
    user.cli("deploy", bundle)
    status = json.loads(user.cli("status", "--json").stdout)["releases"]
    assert status[0]["name"] == "model" and len(status[0]["releases"]) == 2
    back = json.loads(user.cli("rollback", "model", "--json").stdout)
    assert back["ok"] and back["results"][0]["version"] < status[0]["version"]
    server, identity, known = sshd
    remote_root = tmp_path / "ssh-board"
    remote_root.mkdir()
    ssh = [server.uri(remote_root), "--identity", str(identity), "--known-hosts", str(known)]
    user.cli("deploy", bundle, "--target", *ssh)
    assert (
        json.loads(user.cli("status", "--target", *ssh, "--json").stdout)["releases"][0]["name"]
        == "model"
    )

    # Audits of a directory and of a target.
    audit = json.loads(user.cli("audit", "board", "--trust", "publisher.pub", "--json").stdout)
    assert audit["summary"]["error"] == 0 and audit["summary"]["total"] == 2
    remote = json.loads(
        user.cli("audit", "--target", *ssh, "--trust", "publisher.pub", "--json").stdout
    )
    assert remote["ok"] and remote["rows"][0]["current"]

    # On the device: the command, and the Python API.
    current = user.project / "board" / "model" / "current"
    ran = json.loads(user.cli("run", current, "--trust", "publisher.pub", "--device-key", "pi-0042.key",
                              "--input", "x.npy", "--json").stdout)  # fmt: skip
    assert ran["results"]["scores"]["shape"] == [4, 3]
    api = user.py(
        "import edge_sdk, numpy as np, sys\n"
        "m = edge_sdk.load('board/model/current', trust='publisher.pub', device_key='pi-0042.key')\n"
        "y = m.predict(np.load('x.npy'))\n"
        "assert y.shape == (4, 3) and abs(float(y.sum()) - 4.0) < 1e-4, y\n"
        "print(m.threads, m.threads_reason)\n"
    )
    assert "usable cores" in api.stdout or "profile" in api.stdout


def test_the_agent_from_the_wheel(user: UserEnv, tmp_path: Path) -> None:
    bundle = user.project / "model.x86_64.edgepkg"
    if not bundle.exists():  # run alone: make what the journey made
        pytest.fail("run with test_the_user_journey_from_the_wheel (it packages the bundle)")
    user.cli("repo", "init", "repo")
    user.cli("keys", "generate", "--out", "stranger")
    unverified = user.cli(
        "repo", "publish", bundle, "--repo", "repo", "--trust", "stranger.pub", ok=False
    )
    assert unverified.returncode == 21, (
        unverified.stderr
    )  # a bundle that does not verify is never published
    user.cli("repo", "publish", bundle, "--repo", "repo")  # the project's key is the default trust
    server = RepoServer.start(tmp_path / "www", prefer_nginx=True)
    try:
        assert server.kind == "nginx", "tools/test.sh installs nginx-light"
        url = server.add("fleet", user.project / "repo")
        polled = json.loads(user.cli(
            "agent", "--repo", url, "--root", "repo/metadata/1.root.json", "--state-dir", "agent-state",
            "--install-dir", "agent-models", "--trust", "publisher.pub", "--device-key", "pi-0042.key",
            "--profile", "x86_64", "--once", "--json",
        ).stdout)  # fmt: skip
    finally:
        server.stop()
    assert [o["status"] for o in polled["outcomes"]] == ["installed"]
    assert (user.project / "agent-models" / "model" / "current").is_symlink()


def test_a_missing_extra_is_a_clear_error_not_a_traceback(dist: Dist, tmp_path: Path) -> None:
    bare = make_user(tmp_path, sys.executable, dist.wheel, "device")
    shutil.copy(REPO / "tests" / "vectors" / "model.tflite", bare.project / "tiny.tflite")
    bare.cli("keys", "generate", "--out", "pub")
    bare.cli("package", "tiny.tflite", "--profile", "x86_64", "--sign-key", "pub.key")
    result = bare.cli(
        "deploy", "tiny.x86_64.edgepkg", "--target", "ssh://pi@127.0.0.1:1/opt/models", ok=False
    )
    assert result.returncode == 65, result.stderr
    assert "Traceback" not in result.stderr and "[deploy]" in result.stderr
    assert "pip install 'edge-sdk" not in result.stderr  # never a stranger's package
    agent = bare.cli("agent", "--repo", "http://127.0.0.1:1", "--root", "x.json", "--state-dir", "s",
                     "--install-dir", "i", "--trust", "pub.pub", ok=False)  # fmt: skip
    assert agent.returncode == 65 and "Traceback" not in agent.stderr and "[tuf]" in agent.stderr


def _interpreter(version: str) -> Path:
    found = sorted(PYENV.glob(f"{version}.*/bin/python{version}"))
    if not found:
        pytest.fail(
            f"Python {version} not found under {PYENV} (the CI image provides it through pyenv)"
        )
    return found[-1]


@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_the_device_side_on_other_pythons(
    version: str, dist: Dist, user: UserEnv, tmp_path: Path
) -> None:
    bundle = user.project / "model.x86_64.edgepkg"
    if not bundle.exists():
        pytest.fail("run with test_the_user_journey_from_the_wheel (it packages the bundle)")
    device = make_user(tmp_path, _interpreter(version), dist.wheel, "device")
    for name in ("model.x86_64.edgepkg", "publisher.pub", "pi-0042.key", "x.npy"):
        shutil.copy2(user.project / name, device.project / name)
    assert f"Python {version}" in device.run(device.python, "--version").stdout
    device.cli(
        "verify", "model.x86_64.edgepkg", "--trust", "publisher.pub", "--device-key", "pi-0042.key"
    )
    device.py(
        "import sys, edge_sdk, numpy as np\n"
        "m = edge_sdk.load('model.x86_64.edgepkg', trust='publisher.pub', device_key='pi-0042.key')\n"
        "assert m.predict(np.load('x.npy')).shape == (4, 3)\n"
        "assert not any(n.split('.')[0] in ('tensorflow', 'keras', 'typer', 'rich', 'asyncssh', 'tuf')"
        " for n in sys.modules), sorted(sys.modules)\n"
    )
