"""A signed model is verified from a private copy whatever it is called or holds.

The copy and the signature used to share one private folder, the copy under the model's own
name and the signature as ``model.sig``: a model directory called ``model.sig`` collided with it
(a raw IsADirectoryError), and a model *file* called ``model.sig`` was overwritten by the
signature before it was verified. Messages about the copy name the user's model, not the copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sdk.errors import ModelInputError
from edge_sdk.format.verify import open_bundle
from edge_sdk.host.model_signature import ModelSignatureOptions

from .conftest import KeySet
from .provenance_kit import VECTOR_MODEL, model_signing_keypair, package_tflite, sign_model


@pytest.mark.parametrize("inside", [None, "file", "dir"])
def test_a_model_directory_named_model_sig_is_a_typed_error(
    tmp_path: Path, keyset: KeySet, inside: str | None
) -> None:
    key, pub = model_signing_keypair(tmp_path, "training")
    model = tmp_path / "model.sig"
    model.mkdir()
    (model / "model.tflite").write_bytes(VECTOR_MODEL.read_bytes())
    if inside == "file":
        (model / "model.sig").write_text("notes\n")
    elif inside == "dir":
        (model / "model.sig").mkdir()
        (model / "model.sig" / "notes").write_text("notes\n")
    sig = sign_model(model, key, tmp_path / "outside.sig")
    check = ModelSignatureOptions(sig, pub)
    # Verified (no collision), then refused as what it is: a folder that is no SavedModel.
    with pytest.raises(ModelInputError, match="not a SavedModel") as caught:
        package_tflite(tmp_path / "m.edgepkg", [keyset.signer], model=model, check=check)
    assert caught.value.message.startswith(f"{model} is a directory")  # not the private copy
    assert "edge-sdk-src-" not in caught.value.message


def test_a_model_file_named_model_sig_is_verified_and_packaged(
    tmp_path: Path, keyset: KeySet
) -> None:
    key, pub = model_signing_keypair(tmp_path, "training")
    model = tmp_path / "src" / "model.sig"
    model.parent.mkdir()
    model.write_bytes(VECTOR_MODEL.read_bytes())
    sig = sign_model(model, key, tmp_path / "outside.sig")
    result = package_tflite(
        tmp_path / "m.edgepkg", [keyset.signer], model=model,
        check=ModelSignatureOptions(sig, pub),
    )  # fmt: skip
    assert open_bundle(result.path, keyset.trust(), None).model_bytes == VECTOR_MODEL.read_bytes()
