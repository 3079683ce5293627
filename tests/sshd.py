"""Real OpenSSH servers for tests, and a TCP proxy that cuts connections on purpose.

Reusable by any test (deploy, audits over SSH) and by benchmarks under ``tools/``::

    client = make_keypair(tmp / "client")
    with SshServer.start(tmp / "sshd", authorized=[client.public]) as server:
        server.write_known_hosts(tmp / "known_hosts")
        ...  # ssh://root@127.0.0.1:{server.port}/some/dir, identity=client.private

The server is ``/usr/sbin/sshd -D -e`` with a generated config: 127.0.0.1 only, a free high port,
a throwaway ed25519 host key, one authorized_keys file, no passwords, no PAM, ``StrictModes no``
(temp dirs have loose modes), root login by key only, internal SFTP. Needs the Debian package
``openssh-server`` (``apt-get install -y openssh-server``), which also brings ``ssh-keygen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """None when a test sshd can run here, else the reason it cannot (for pytest.skip)."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not found (apt-get install -y openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not found (apt-get install -y openssh-client)"
    return None


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Terminate a server the tests started; kill it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class KeyPair:
    """An OpenSSH key pair on disk: ``private`` path and the one-line ``public`` key."""

    private: Path
    public: str


def make_keypair(path: Path, *, comment: str = "edge-sdk-test") -> KeyPair:
    """Generate an unencrypted ed25519 key at ``path`` (and ``path.pub``) with ssh-keygen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    public = path.with_name(path.name + ".pub").read_text().strip()
    return KeyPair(path, public)


@dataclass
class SshServer:
    """A running sshd. Stop it with :meth:`stop` or use it as a context manager."""

    workdir: Path
    port: int
    host_key: KeyPair
    process: subprocess.Popen[bytes] = field(repr=False)
    host: str = "127.0.0.1"

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        authorized: Iterable[str],
        host_key: KeyPair | None = None,
        extra_config: Iterable[str] = (),
        timeout: float = 10.0,
    ) -> SshServer:
        """Start sshd in ``workdir`` accepting the given public keys (OpenSSH one-liners).

        Raises:
            RuntimeError: sshd exited or did not answer within ``timeout`` (its log is included).
        """
        workdir.mkdir(parents=True, exist_ok=True)
        host_key = host_key or make_keypair(workdir / "ssh_host_ed25519_key", comment="host")
        (workdir / "authorized_keys").write_text("".join(f"{k}\n" for k in authorized))
        if os.geteuid() == 0:
            # sshd refuses to start without its privilege separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key.private}",
                    f"PidFile {workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UseDNS no",
                    "PrintMotd no",
                    # Tests open many connections at once; the default 10:30:100 drops some.
                    "MaxStartups 200",
                    "MaxSessions 50",
                    "Subsystem sftp internal-sftp",
                    # Debian's bash sources ~/.bashrc for commands run over SSH when SHLVL < 2;
                    # a developer's .bashrc (pyenv init...) then adds ~80 ms to every command.
                    # Boards run commands through a plain shell; so should the tests.
                    "SetEnv SHLVL=2",
                    "LogLevel ERROR",
                    *extra_config,
                ]
            )
            + "\n"
        )
        log = open(workdir / "sshd.log", "wb")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        server = cls(workdir, port, host_key, process)
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1) as sock,
            ):
                if sock.recv(64).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log()}")

    def log(self) -> str:
        """What sshd wrote to stderr so far."""
        try:
            return (self.workdir / "sshd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def known_hosts_line(self) -> str:
        """This server's entry as OpenSSH writes it in known_hosts."""
        return f"[{self.host}]:{self.port} {' '.join(self.host_key.public.split()[:2])}"

    def write_known_hosts(
        self, path: Path, *, append: bool = True, port: int | None = None
    ) -> Path:
        """Record this server's host key in ``path`` (under ``port`` when reached via a proxy)."""
        line = self.known_hosts_line
        if port is not None:
            line = f"[{self.host}]:{port} {' '.join(self.host_key.public.split()[:2])}"
        with open(path, "a" if append else "w") as handle:
            handle.write(line + "\n")
        return path

    def uri(self, root: Path | str, user: str = "root") -> str:
        """``ssh://user@127.0.0.1:port/root`` for a directory on this (local) machine."""
        return f"ssh://{user}@{self.host}:{self.port}{root}"

    def stop(self) -> None:
        """Terminate sshd (and, with it, its listener; running sessions end with it)."""
        stop_process(self.process)

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DropProxy:
    """A loopback TCP proxy that cuts each connection after ``limit`` bytes (both directions).

    ``rate`` (bytes per second, each direction) throttles it to look like a real link to a board.

    ``limit=None`` forwards everything and just counts (``last_total`` is the byte count of the
    last finished connection), which tells a test how long a full session is. When the limit is
    hit, both sides are aborted (TCP RST) or closed (FIN), at random via ``abort``.

    Run it inside the event loop of the code under test::

        async with DropProxy(server.port) as proxy:
            proxy.limit = 12345
            await deploy_async(..., f"ssh://root@127.0.0.1:{proxy.port}/...")
    """

    def __init__(
        self, upstream_port: int, upstream_host: str = "127.0.0.1", *, rate: float | None = None
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rate = rate
        self.limit: int | None = None
        self.abort = True
        self.port = 0
        self.last_total = 0
        self.dropped = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> DropProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Abort rather than cancel the handlers: asyncio logs cancelled stream handler tasks.
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        self._writers |= {writer, up_writer}
        state = {"total": 0}
        limit = self.limit
        abort = self.abort
        pair = (writer, up_writer)

        def hang_up() -> None:
            # Both directions at once: a pump blocked reading the other side must wake up.
            for w in pair:
                if abort:
                    w.transport.abort()
                else:
                    w.close()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    data = await src.read(16384)
                    if not data:
                        break
                    if limit is not None and state["total"] + len(data) >= limit:
                        allowed = max(0, limit - state["total"])
                        state["total"] += allowed
                        if allowed:
                            dst.write(data[:allowed])
                            with contextlib.suppress(ConnectionError):
                                await dst.drain()
                        break
                    state["total"] += len(data)
                    if self.rate:
                        await asyncio.sleep(len(data) / self.rate)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                hang_up()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self.last_total = state["total"]
            if limit is not None and state["total"] >= limit:
                self.dropped += 1
            hang_up()
            self._writers -= set(pair)
            self._tasks.discard(task)
