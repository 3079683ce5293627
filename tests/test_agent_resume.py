"""The TUF agent resumes an interrupted target download with HTTP Range (real nginx), and the
whole file's length and hashes are verified before use, always.

An interrupted download leaves ``downloads/<sha256>.edgepkg.partial`` (named by the signed
hash); these tests leave one exactly as a cut transfer does and poll again. A hostile server
(wrong Content-Range, more bytes than the signed length) is played by a small HTTP server in
front of the fetcher: nginx answers Range correctly.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_sdk.errors import IntegrityError, TransportError
from edge_sdk.fleet.agent import _make_fetcher, _Traffic, translate_tuf_error

from .test_tuf import Lab, lab, release, server  # noqa: F401  (fixtures)

BIG = 3 * 1024 * 1024 + 4321


def _published(lab: Lab) -> tuple[Path, Path]:  # noqa: F811
    lab.publish(1, model=os.urandom(BIG))
    target = lab.target_file(1)
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    downloads = lab.tmp / "dev0" / "state" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    return target, downloads / f"{sha}.edgepkg.partial"


def _installed(lab: Lab) -> bytes:  # noqa: F811
    current = lab.current()
    assert current is not None and current.startswith(release(1))
    return (lab.tmp / "dev0" / "install" / "digits" / current).read_bytes()


def test_an_interrupted_download_resumes_with_range(lab: Lab) -> None:  # noqa: F811
    target, partial = _published(lab)
    data = target.read_bytes()
    partial.write_bytes(data[: len(data) // 2])
    agent = lab.agent()
    result = agent.poll()
    assert [o.status for o in result.outcomes] == ["installed"], result.outcomes
    assert _installed(lab) == data
    # Metadata is a few KB; the target's first half was not fetched again.
    assert result.bytes < len(data) - len(data) // 2 + 200_000
    assert not partial.exists()


@pytest.mark.parametrize("damage", ["flip", "longer", "symlink"])
def test_a_bad_partial_is_discarded_and_the_release_still_installs(
    lab: Lab,  # noqa: F811
    damage: str,
    tmp_path: Path,
) -> None:
    target, partial = _published(lab)
    data = target.read_bytes()
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"not yours")
    if damage == "flip":
        half = bytearray(data[: len(data) // 2])
        half[1000] ^= 1
        partial.write_bytes(bytes(half))
    elif damage == "longer":
        partial.write_bytes(data + b"more")
    else:
        partial.symlink_to(decoy)
    result = lab.agent().poll()
    assert [o.status for o in result.outcomes] == ["installed"], result.outcomes
    assert _installed(lab) == data
    assert not partial.exists()
    assert decoy.read_bytes() == b"not yours"


def test_a_partial_of_another_target_is_removed(lab: Lab) -> None:  # noqa: F811
    target, partial = _published(lab)
    stranger = partial.with_name("ab" * 32 + ".edgepkg.partial")
    stranger.write_bytes(target.read_bytes()[:5000])
    result = lab.agent().poll()
    assert [o.status for o in result.outcomes] == ["installed"]
    assert not stranger.exists()
    assert result.bytes > len(target.read_bytes())  # the whole target, nothing reused


# -- a hostile server, straight against the fetcher ------------------------------------------------

BODY = os.urandom(300_000)


class _Hostile(http.server.BaseHTTPRequestHandler):
    mode = "wrong-range"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        wanted = self.headers.get("Range", "")
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        if self.mode == "genuine":
            body = BODY[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        elif self.mode == "wrong-range":
            body = BODY[start - 100 :]  # 100 bytes earlier than asked, labelled as such
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start - 100}-{len(BODY) - 1}/{len(BODY)}")
        elif self.mode == "too-long":
            body = BODY[start:] + os.urandom(200_000)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:  # "416"
            body = b""
            self.send_response(416)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/t.edgepkg"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _download(url: str, partial: Path) -> bytes:
    fetcher = _make_fetcher(5, "test", _Traffic())
    fetcher.resume = partial
    with fetcher.download_file(url, len(BODY)) as handle:
        return bytes(handle.read())


@pytest.mark.parametrize("mode", ["wrong-range", "too-long", "416"])
def test_a_hostile_range_reply_is_refused_typed_and_the_next_download_is_whole(
    hostile: str, tmp_path: Path, mode: str
) -> None:
    from tuf.api import exceptions as tx

    partial = tmp_path / ("cd" * 32 + ".edgepkg.partial")
    partial.write_bytes(BODY[:120_000])
    _Hostile.mode = mode
    with pytest.raises(tx.DownloadError) as caught:
        _download(hostile, partial)
    error = translate_tuf_error(caught.value, "downloading t.edgepkg")
    expected = TransportError if mode == "416" else IntegrityError
    assert isinstance(error, expected), error
    assert not partial.exists()  # refused bytes are never resumed from
    _Hostile.mode = "genuine"
    assert _download(hostile, partial) == BODY


def test_a_genuine_range_reply_sends_only_the_rest(hostile: str, tmp_path: Path) -> None:
    partial = tmp_path / ("ef" * 32 + ".edgepkg.partial")
    partial.write_bytes(BODY[:250_000])
    _Hostile.mode = "genuine"
    traffic = _Traffic()
    fetcher = _make_fetcher(5, "test", traffic)
    fetcher.resume = partial
    with fetcher.download_file(hostile, len(BODY)) as handle:
        assert handle.read() == BODY
    assert traffic.bytes == len(BODY) - 250_000
