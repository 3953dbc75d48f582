"""A real Docker Engine (`dockerd`) for tests: its own data root, exec root, pid file and
socket, no default bridge and no iptables rules (another dockerd may run on the same
machine), a user-defined bridge network on a subnet nobody routes, and a small image made
here, since no registry is reachable: busybox (static) with `httpd`, plus links that let a
container run the host's /usr/bin/python3 when /usr is bound into it.

`DockerDaemon.start()` raises `DockerUnavailable` when dockerd cannot run here (not root,
not installed, refused by the kernel); the fixture turns that into a skip, nothing else.
Calls go to the Engine API over the unix socket with the standard library, so they do not
depend on the code under test.
"""

from __future__ import annotations

import ctypes
import http.client
import io
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from support import free_port

IMAGE = "wakeproxy-test/busybox:1"
NETWORK = "wakeproxy-test"
_BUSYBOX_APPLETS = ("sh", "httpd", "sleep", "cat", "echo", "test", "[", "touch", "ls")
_START_GUARD = 60.0
_PR_SET_PDEATHSIG = 1


class DockerUnavailable(RuntimeError):
    """dockerd cannot run on this machine."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerDaemon:
    def __init__(self, data_root: Path) -> None:
        # Unix socket paths are short (108 bytes), and containerd's live under exec-root.
        self.run_dir = Path(tempfile.mkdtemp(prefix="wpd-", dir="/tmp"))
        self.data_root = data_root
        self.socket = str(self.run_dir / "docker.sock")
        self.log_path = data_root / "dockerd.log"
        self.subnet = ""
        self.tls_port = 0
        """Where the engine also listens over TCP with --tlsverify (0: it does not)."""
        self.tls_dir = self.run_dir / "tls"
        """ca.pem, and client.pem / client-key.pem signed by it (docker's file names)."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The engine's address as wakeproxy's --docker-host takes it."""
        return f"unix://{self.socket}"

    # -- the daemon -----------------------------------------------------------------------

    def start(self) -> None:
        binary = shutil.which("dockerd")
        if binary is None:
            raise DockerUnavailable("dockerd is not installed (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise DockerUnavailable("dockerd needs root")
        config = self.run_dir / "daemon.json"
        config.write_text("{}")
        command = [
            binary,
            *("--config-file", str(config)),
            *("--data-root", str(self.data_root / "data")),
            *("--exec-root", str(self.run_dir / "exec")),
            *("--pidfile", str(self.run_dir / "docker.pid")),
            *("-H", f"unix://{self.socket}"),
            *("--bridge", "none", "--iptables=false", "--ip6tables=false"),
            *("--storage-driver", "vfs", "--log-level", "warn", "--shutdown-timeout", "2"),
            *self._tls_flags(),
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_end_with_parent,
            )
        deadline = time.monotonic() + _START_GUARD
        while not self._answers():
            if self._process.poll() is not None:
                raise DockerUnavailable(f"dockerd exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DockerUnavailable(f"dockerd did not answer within {_START_GUARD}s")
            time.sleep(0.05)  # readiness polling, bounded by the deadline
        self._prepare()

    def _tls_flags(self) -> list[str]:
        """Also listen on 127.0.0.1 over TCP with TLS, clients verified, when trustme (a
        test dependency) can make the certificates."""
        try:
            import trustme
        except ImportError:
            return []
        ca = trustme.CA()
        self.tls_dir.mkdir()
        ca.cert_pem.write_to_path(str(self.tls_dir / "ca.pem"))
        for name, identity in (("server", "127.0.0.1"), ("client", "wakeproxy-test-client")):
            cert = ca.issue_cert(identity)
            cert.private_key_pem.write_to_path(str(self.tls_dir / f"{name}-key.pem"))
            cert.cert_chain_pems[0].write_to_path(str(self.tls_dir / f"{name}.pem"))
        self.tls_port = free_port()
        return [
            *("-H", f"tcp://127.0.0.1:{self.tls_port}", "--tlsverify"),
            *("--tlscacert", str(self.tls_dir / "ca.pem")),
            *("--tlscert", str(self.tls_dir / "server.pem")),
            *("--tlskey", str(self.tls_dir / "server-key.pem")),
        ]

    def _answers(self) -> bool:
        try:
            return self.api("GET", "/_ping", timeout=1)[0] == 200
        except OSError:
            return False

    def _prepare(self) -> None:
        """The image, and a network a test container can be reached on from the host."""
        status, body = self.api(
            "POST",
            "/images/create?"
            + urlencode({"fromSrc": "-", "repo": IMAGE.split(":")[0], "tag": "1"}),
            _rootfs(),
            content_type="application/x-tar",
            timeout=60,
        )
        if status != 200:
            raise DockerUnavailable(f"importing the test image failed: {status} {body!r}")
        try:
            self.create_network()
        except RuntimeError as exc:
            raise DockerUnavailable(f"no test network: {exc}") from exc

    def create_network(self) -> None:
        taken = _routed_networks()
        for _ in range(20):
            subnet = ipaddress.ip_network(
                f"10.{random.randint(160, 250)}.{random.randint(0, 255)}.0/24"
            )
            if any(subnet.overlaps(net) for net in taken):
                continue
            spec = {
                "Name": NETWORK,
                "Driver": "bridge",
                "IPAM": {"Config": [{"Subnet": str(subnet)}]},
                "Options": {"com.docker.network.bridge.name": f"wpt{random.randint(0, 99999)}"},
            }
            status, body = self.api("POST", "/networks/create", spec)
            if status == 201:
                self.subnet = str(subnet)
                return
        raise RuntimeError(f"could not create a bridge network: {body!r}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            try:
                for container in self.api("GET", "/containers/json?all=1")[1] or []:
                    self.api("DELETE", f"/containers/{container['Id']}?force=1", timeout=30)
            except OSError:
                pass
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.data_root / "data", ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- the Engine API -------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """One call; the answer's status and its JSON (its text when it is not JSON)."""
        status, raw = self.raw(method, path, body, content_type=content_type, timeout=timeout)
        try:
            return status, json.loads(raw) if raw.strip() else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, bytes]:
        connection = _UnixConnection(self.socket, timeout)
        try:
            payload = body if isinstance(body, bytes) else None
            if body is not None and payload is None:
                payload = json.dumps(body).encode()
            headers = {"Content-Type": content_type} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            reply = connection.getresponse()
            return reply.status, reply.read()
        finally:
            connection.close()

    def run(
        self,
        name: str,
        command: list[str],
        labels: dict[str, str],
        *,
        binds: tuple[str, ...] = (),
        publish: tuple[int, ...] = (),
        network: str = NETWORK,
        init: bool = False,
    ) -> str:
        """Create and start a container; its id."""
        spec = {
            "Image": IMAGE,
            "Cmd": command,
            "Labels": labels,
            "ExposedPorts": {f"{port}/tcp": {} for port in publish},
            "HostConfig": {
                "NetworkMode": network,
                "Init": init,  # docker-init as PID 1 passes SIGTERM on to the server
                "Binds": list(binds),
                "PortBindings": {
                    f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}] for port in publish
                },
            },
        }
        status, body = self.api("POST", f"/containers/create?name={quote(name)}", spec)
        if status != 201:
            raise RuntimeError(f"creating container {name} failed: {status} {body!r}")
        container_id = str(body["Id"])
        self.act(container_id, "start")
        return container_id

    def act(self, container_id: str, action: str, query: str = "") -> None:
        status, body = self.api("POST", f"/containers/{container_id}/{action}{query}")
        if status not in (200, 204, 304):
            raise RuntimeError(f"{action} of {container_id[:12]} failed: {status} {body!r}")

    def remove(self, container_id: str) -> None:
        status, body = self.api("DELETE", f"/containers/{container_id}?force=1")
        if status not in (204, 404):
            raise RuntimeError(f"removing {container_id[:12]} failed: {status} {body!r}")

    def status(self, container_id: str) -> str:
        status, body = self.api("GET", f"/containers/{container_id}/json")
        if status == 404:
            return "gone"
        return str(body["State"]["Status"])

    def address(self, container_id: str) -> str:
        _, body = self.api("GET", f"/containers/{container_id}/json")
        return str(body["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])

    def events(self, container_id: str, action: str, since: float) -> int:
        """How many `action` events the container had since `since` (epoch seconds)."""
        filters = json.dumps({"container": [container_id], "event": [action]})
        query = urlencode(
            {"since": f"{since:.9f}", "until": f"{time.time():.9f}", "filters": filters}
        )
        status, raw = self.raw("GET", f"/events?{query}")
        assert status == 200, raw
        return sum(1 for line in raw.splitlines() if json.loads(line).get("Action") == action)


def _end_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM if the test process dies, so
    an interrupted run leaves no engine behind (it stops its containers as it exits)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _rootfs() -> bytes:
    """busybox with the applets the tests use, a page for httpd, and the usr-merged
    links (/lib, /lib64) that make the host's python3 run when /usr is bound in."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise DockerUnavailable("busybox is not installed (apt-get install busybox-static)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "www", "tmp", "ctl", "srv", "usr", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in _BUSYBOX_APPLETS:
            _link(tar, f"bin/{applet}", "busybox")
        for name, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
            _link(tar, name, target)
        page = b"hello from a container\n"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    return buffer.getvalue()


def _link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this machine already routes (another engine's bridges too)."""
    try:
        out = subprocess.run(
            ["ip", "-4", "route", "show"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    networks = []
    for line in out.splitlines():
        first = line.split(" ", 1)[0]
        if "/" in first:
            try:
                networks.append(ipaddress.ip_network(first, strict=False))
            except ValueError:
                continue
    return [net for net in networks if isinstance(net, ipaddress.IPv4Network)]
