"""Fixtures of the device suite: everything comes from a directory the host made, nothing from TF.

On a device install (edge-sdk, numpy, cryptography, one LiteRT runtime — no TensorFlow, no
scikit-learn) point ``EDGE_SDK_DEVICE_FIXTURES`` at the directory ``tools/make_device_fixtures.py``
wrote on the host, and run this directory on its own, with nothing else in the session::

    EDGE_SDK_DEVICE_FIXTURES=/path/to/fixtures python -P -m pytest tests/device \\
        --confcutdir tests/device --import-mode importlib -p no:cacheprovider

(``--confcutdir`` keeps ``tests/conftest.py``, which needs the dev extras, out; ``-P`` and
``--import-mode importlib`` keep the repository off ``sys.path``, so the *installed* edge-sdk is
the one under test.) ``tools/test_portability.sh`` does exactly this in each device environment.

When the variable is unset — the main test session on the host — the fixtures are built in a
session temp directory with the host's TensorFlow, and the suite runs on them in-process.

``EDGE_SDK_DEVICE_REPORT``, when set, names a JSON-lines file each test appends its measurements to
(parity figures, backend, how the hardware ids were chosen); the portability table is built from it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.device.runtime import Backend, Model, detect_hardware_ids, discover_backend
from edge_sdk.profiles import load_profile

FIXTURES_ENV = "EDGE_SDK_DEVICE_FIXTURES"
REPORT_ENV = "EDGE_SDK_DEVICE_REPORT"
TENSORFLOW_MODULES = ("tensorflow", "keras", "tf_keras")


class ImportWatch(MetaPathFinder):
    """Records every attempt to import TensorFlow (or Keras), whether or not it is installed.

    A missing package would make ``import tensorflow`` fail quietly inside a ``try``; the attempt
    itself is what the device path must never make, so it is recorded before any finder runs.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.split(".", maxsplit=1)[0] in TENSORFLOW_MODULES:
            self.attempts.append(fullname)
        return None  # never resolve anything: the normal finders decide

    @staticmethod
    def imported() -> list[str]:
        """The TensorFlow/Keras modules in ``sys.modules`` now."""
        return sorted(n for n in sys.modules if n.split(".")[0] in TENSORFLOW_MODULES)


# Installed at import time in device mode, before any test (or fixture) loads a bundle. In the
# host session TensorFlow is imported on purpose to build the fixtures, so the check moves to a
# fresh interpreter there (see the suite's last test).
IMPORT_WATCH = ImportWatch()
if os.environ.get(FIXTURES_ENV):
    sys.meta_path.insert(0, IMPORT_WATCH)


@dataclass(frozen=True)
class BundleCase:
    """One packaged bundle the parity tests run, as ``fixtures.json`` describes it."""

    key: str
    path: Path
    profile: str
    runtime: str
    mode: str  # float32 | dynamic | int8
    reference: dict[str, str]  # which runtime computed the host's reference outputs


@dataclass(frozen=True)
class ZooFixture:
    """One model-zoo bundle: its inputs (a batch) and Keras's outputs on them, by output name."""

    key: str
    path: Path
    profile: str
    mode: str  # float32 | dynamic
    fixed_batch: bool
    inputs: dict[str, np.ndarray] = field(repr=False)
    keras: dict[str, np.ndarray] = field(repr=False)


@dataclass
class DeviceFixtures:
    """The fixtures directory: keys, inputs, expected outputs, bundles, security variants."""

    root: Path
    manifest: dict[str, Any]
    built_here: bool
    _expected: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def trust(self) -> Path:
        return self.path(self.manifest["keys"]["trust"])

    @property
    def device_key(self) -> Path:
        return self.path(self.manifest["keys"]["device_key"])

    @property
    def untrusted_trust(self) -> Path:
        return self.path(self.manifest["keys"]["untrusted_trust"])

    @property
    def other_device_key(self) -> Path:
        return self.path(self.manifest["keys"]["other_device_key"])

    def inputs(self) -> np.ndarray:
        return np.asarray(np.load(self.path(self.manifest["inputs"]), allow_pickle=False))

    def labels(self) -> np.ndarray:
        return np.asarray(np.load(self.path(self.manifest["labels"]), allow_pickle=False))

    def expected(self, key: str) -> np.ndarray:
        """``keras`` (the source model's float outputs), ``host:<bundle>`` (the host's reference
        from the bundle's own runtime when it had it) or ``host-litert:<bundle>``."""
        if not self._expected:
            with np.load(self.path(self.manifest["expected"]), allow_pickle=False) as saved:
                self._expected.update({name: saved[name] for name in saved.files})
        return self._expected[key]

    def bundles(self, runtime: str, mode: str) -> list[BundleCase]:
        """The parity bundles for one runtime package and quantization mode."""
        cases = [
            BundleCase(
                key,
                self.path(entry["file"]),
                entry["profile"],
                entry["runtime"],
                entry["mode"],
                entry["reference"],
            )
            for key, entry in sorted(self.manifest["bundles"].items())
        ]
        return [c for c in cases if c.runtime == runtime and c.mode == mode]

    def zoo(self, runtime: str) -> list[ZooFixture]:
        """The model zoo's bundles for one runtime package (empty for fixtures made before it)."""
        cases = []
        for key, entry in sorted(self.manifest.get("zoo", {}).items()):
            bundle = entry["bundles"].get(runtime)
            if bundle is None:
                continue
            with np.load(self.path(entry["inputs"]), allow_pickle=False) as saved:
                inputs = {name: saved[name] for name in saved.files}
            with np.load(self.path(entry["keras"]), allow_pickle=False) as saved:
                keras = {name: saved[name] for name in saved.files}
            cases.append(ZooFixture(key, self.path(bundle["file"]), bundle["profile"], entry["mode"],
                                    entry["fixed_batch"], inputs, keras))  # fmt: skip
        return cases

    def security(self, runtime: str) -> dict[str, Any]:
        """The rollback and bad-input bundles for one runtime package (paths resolved)."""
        entry = dict(self.manifest["security"][runtime])
        entry["files"] = {label: self.path(rel) for label, rel in entry["files"].items()}
        return entry


@pytest.fixture(scope="session")
def device_fixtures(tmp_path_factory: pytest.TempPathFactory) -> DeviceFixtures:
    """The fixtures named by ``$EDGE_SDK_DEVICE_FIXTURES``, or built now with the host's TF."""
    given = os.environ.get(FIXTURES_ENV)
    if given:
        root = Path(given)
        if not (root / "fixtures.json").is_file():
            pytest.exit(f"{FIXTURES_ENV}={given} has no fixtures.json", returncode=4)
        built_here = False
    else:
        # Host session only: this imports TensorFlow (through edge_sdk.host.convert) and the tests'
        # cached digits model; the device environments never reach this branch.
        from tests.models import CACHE, digits_cnn
        from tools.make_device_fixtures import make_fixtures

        root = tmp_path_factory.mktemp("device-fixtures")
        make_fixtures(root, digits_cnn(), progress=lambda _step: None, zoo_models=CACHE)
        built_here = True
    manifest = json.loads((root / "fixtures.json").read_text())
    return DeviceFixtures(root, manifest, built_here)


@pytest.fixture(scope="session")
def backend() -> Backend:
    """The LiteRT runtime this environment runs (``$EDGE_SDK_BACKEND`` pins one)."""
    found = discover_backend()
    if found.name == "tensorflow":
        pytest.skip("the device suite needs ai-edge-litert or tflite-runtime, not tensorflow.lite")
    return found


def target_arguments(profile_name: str) -> tuple[dict[str, Any], str]:
    """How to tell :func:`edge_sdk.load` which board this is, and which way was taken.

    On a board the profile describes, its hardware ids are detected (device tree, ``uname -m``).
    Anywhere else (an x86 runner loading an rpi4 bundle, qemu, which has no device tree) the
    profile's first hardware id is passed explicitly: the target check still runs, against a
    claim this test makes out loud, instead of being switched off with ``allow_target_mismatch``.
    """
    profile = load_profile(profile_name)
    if set(profile.hardware_ids) & set(detect_hardware_ids()):
        return {"profile": profile_name}, "detected"
    return {"profile": profile_name, "hardware_ids": [profile.hardware_ids[0]]}, "explicit"


class BundleLoader:
    """``load_bundle(path, profile, **overrides)``: :func:`edge_sdk.load` with this device's keys.

    The state directory is the test's own (``tmp_path / "state"``) unless ``state_dir`` is given.
    """

    def __init__(self, fixtures: DeviceFixtures, state_dir: Path) -> None:
        self.fixtures = fixtures
        self.state_dir = state_dir

    def __call__(self, path: Path, profile: str, /, **overrides: Any) -> Model:
        target, _how = target_arguments(profile)
        arguments: dict[str, Any] = {
            "trust": self.fixtures.trust,
            "device_key": self.fixtures.device_key,
            "state_dir": self.state_dir,
            **target,
        }
        arguments.update(overrides)
        return edge_sdk.load(path, **arguments)

    @staticmethod
    def target(profile: str) -> tuple[dict[str, Any], str]:
        """See :func:`target_arguments`."""
        return target_arguments(profile)


@pytest.fixture
def load_bundle(device_fixtures: DeviceFixtures, tmp_path: Path) -> BundleLoader:
    """A loader with this device's keys and the test's own state directory."""
    return BundleLoader(device_fixtures, tmp_path / "state")


@pytest.fixture(scope="session")
def import_watch() -> ImportWatch:
    """The TensorFlow import attempts seen since this conftest was imported (device mode)."""
    return IMPORT_WATCH


class Report:
    """Appends one JSON line per measurement to ``$EDGE_SDK_DEVICE_REPORT`` (when set)."""

    def __init__(self, path: Path | None, backend: Backend) -> None:
        self.path = path
        self.base = {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "backend": backend.package,
            "backend_version": backend.version,
            "numpy": np.__version__,
        }

    def record(self, **fields: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({**self.base, **fields}, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def report(backend: Backend) -> Report:
    """Where tests put the figures the portability table shows."""
    given = os.environ.get(REPORT_ENV)
    writer = Report(Path(given) if given else None, backend)
    writer.record(event="environment", edge_sdk=str(Path(edge_sdk.__file__).parent))
    return writer
