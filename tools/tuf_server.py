"""Serve TUF repositories as static files on 127.0.0.1 with a real nginx (tests and benchmarks).

``RepoServer.start(workdir)`` writes an nginx config that serves ``workdir/www/<repo>/metadata/``
and ``…/targets/`` only (never the keys next to them), on a free high port, with an access log
recording bytes sent per request, and runs nginx in the foreground until :meth:`RepoServer.stop`.
:meth:`RepoServer.add` links a repository directory under a name, so one server can serve
several repositories: ``http://127.0.0.1:PORT/<name>``.

When nginx is not installed, a Python ``http.server`` with the same URL rules and the same log
format is used instead, and :attr:`RepoServer.kind` says so (callers announce it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: Every request: status, bytes sent (headers + body), body bytes, user agent, URI.
LOG_FORMAT = "edge_tuf '$status $bytes_sent $body_bytes_sent \"$http_user_agent\" $request_uri'"
_LINE = re.compile(r'(\d{3}) (\d+) (\d+) "([^"]*)" (\S+)')
_SERVED = re.compile(r"/([A-Za-z0-9._-]+)/(metadata|targets)/[A-Za-z0-9._/-]+")

NGINX_CONFIG = """\
{user}worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format {log_format};
    access_log {work}/access.log edge_tuf;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    types {{ application/json json; application/octet-stream edgepkg; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    server_tokens off;
    # Metadata is JSON of hex digests and repeated keys: gzip sends a device's snapshot and slip
    # bin at a quarter of their size or less (clients that do not ask get it plain).
    gzip on;
    gzip_types application/json;
    gzip_min_length 512;
    gzip_vary on;
    server {{
        listen 127.0.0.1:{port};
        root {work}/www;
        # timestamp.json is the only file that changes in place: cache it briefly.
        location ~ ^/[A-Za-z0-9._-]+/metadata/timestamp\\.json$ {{
            add_header Cache-Control "public, max-age=60";
        }}
        # Versioned metadata and hash-prefixed targets never change: cache them forever.
        location ~ ^/[A-Za-z0-9._-]+/(metadata|targets)/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        location / {{ return 404; }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Request:
    """One access-log line."""

    status: int
    bytes_sent: int
    body_bytes: int
    user_agent: str
    uri: str


class _Handler(SimpleHTTPRequestHandler):
    """The fallback: the same URL rules as the nginx config, and the same log line."""

    server_version = "edge-tuf"
    sys_version = ""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        if not _SERVED.fullmatch(path) or ".." in path:
            return "/nonexistent"
        return str(Path(self.directory) / path.lstrip("/"))

    def log_message(self, format: str, *args: object) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        length = size if isinstance(size, int) else 0
        assert isinstance(self.server, _Server)
        agent = (self.headers.get("User-Agent") or "-").replace('"', "")
        self.server.log(f'{int(code)} {length} {length} "{agent}" {self.path}\n')


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, www: Path, log: Path) -> None:
        self._log_path = log
        self._log_lock = threading.Lock()

        def handler(*args: object) -> _Handler:
            return _Handler(*args, directory=str(www))  # type: ignore[arg-type]

        super().__init__(("127.0.0.1", port), handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that stops reading (the size-limit tests) is not a server error.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def log(self, line: str) -> None:
        with self._log_lock, open(self._log_path, "a") as out:
            out.write(line)


class RepoServer:
    """nginx (or the announced fallback) serving repositories under ``http://127.0.0.1:PORT``."""

    def __init__(self, workdir: Path, port: int, kind: str) -> None:
        self.workdir = workdir
        self.port = port
        self.kind = kind
        self.www = workdir / "www"
        self.access_log = workdir / "access.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._server: _Server | None = None
        self._nginx = "nginx"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, workdir: Path, *, prefer_nginx: bool = True, port: int | None = None
    ) -> RepoServer:
        """Start serving ``workdir/www`` on a free port (or ``port``)."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "www").mkdir(exist_ok=True)
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        server = cls(
            workdir,
            port or free_port(),
            "nginx" if nginx and prefer_nginx else "python http.server",
        )
        if server.kind == "nginx":
            assert nginx is not None
            server._start_nginx(nginx)
        else:
            server._start_python()
        return server

    def _start_nginx(self, nginx: str) -> None:
        work = self.workdir
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        # Workers drop to "nobody" by default; the test trees are private to root, so keep root.
        user = "user root;\n" if os.geteuid() == 0 else ""
        config = NGINX_CONFIG.format(user=user, work=work, port=self.port, log_format=LOG_FORMAT)
        (work / "nginx.conf").write_text(config)
        self._nginx = nginx
        self._spawn_nginx()

    def _spawn_nginx(self) -> None:
        work = self.workdir
        self._process = subprocess.Popen(
            [self._nginx, "-p", str(work), "-c", str(work / "nginx.conf"),
             "-e", str(work / "error.log"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._wait_listening()

    def _start_python(self) -> None:
        self._server = _Server(self.port, self.www, self.access_log)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                log = (
                    (self.workdir / "error.log").read_text()
                    if (self.workdir / "error.log").exists()
                    else ""
                )
                raise RuntimeError(f"nginx exited: {err} {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"server did not listen on port {self.port}")

    def add(self, name: str, repo: Path) -> str:
        """Serve ``repo`` (its metadata/ and targets/ only) at ``URL/name``; returns that URL."""
        link = self.www / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(repo.resolve(), target_is_directory=True)
        return f"{self.url}/{name}"

    def mark(self) -> int:
        """A position in the access log; :meth:`requests` can start from it."""
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def requests(self, since: int = 0) -> list[Request]:
        """Requests logged after ``since`` (nginx writes a line when the response is done)."""
        out: list[Request] = []
        if not self.access_log.exists():
            return out
        with open(self.access_log, "rb") as log:
            log.seek(since)
            text = log.read().decode()
        for line in text.splitlines():
            match = _LINE.fullmatch(line)
            if match:
                status, sent, body, agent, uri = match.groups()
                out.append(Request(int(status), int(sent), int(body), agent, uri))
        return out

    def stop(self) -> None:
        """Stop serving (nginx: fast shutdown, then kill if it lingers)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self) -> None:
        """Start again on the same port and config (after :meth:`stop`)."""
        if self.kind == "nginx":
            self._spawn_nginx()
        else:
            self._start_python()
