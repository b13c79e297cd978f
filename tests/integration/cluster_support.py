"""Real Redis Clusters of Debian's ``redis-server`` for tests: one node holding every slot,
or three masters with a replica each, and the faults a test does to them (``kill -9`` or
SIGSTOP of a master, a restart) with waits for the cluster's own state (no sleeps: CLUSTER
INFO and CLUSTER NODES are polled until a deadline).

Every node fsyncs its append-only file on every write (``appendfsync always``) and the
failure detection is short (``cluster-node-timeout`` 1500 ms), so a killed master's
replica is promoted within a few seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from redis.crc import key_slot

from livecandle.runtime.redis_server import find_redis_server, free_port

NODE_TIMEOUT_MS = 1500


def redis_cli(port: int, *args: str, timeout_s: float = 5.0) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, timeout=timeout_s
    )
    return out.stdout.decode(errors="replace")


def poll(check: Callable[[], bool], within_s: float, what: str, every_s: float = 0.05) -> float:
    """Seconds until ``check()`` is true; AssertionError naming ``what`` after ``within_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"{what}: not within {within_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - started


@dataclass
class Node:
    port: int
    bus_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                find_redis_server(),
                "--port",
                str(self.port),
                # the default bus port (port + 10000) is out of range above 55535
                "--cluster-port",
                str(self.bus_port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.data_dir / "nodes.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll(self.answers, 10, f"redis-server on port {self.port} answering PING")

    def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"redis-server on port {self.port} is not running")
        try:
            return redis_cli(self.port, "ping", timeout_s=1).strip() == "PONG"
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """``kill -9``: no final write, the process is gone at once."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def info(self) -> dict[str, str]:
        out = {}
        for line in redis_cli(self.port, "cluster", "info").splitlines():
            name, _, value = line.strip().partition(":")
            out[name] = value
        return out

    def role(self) -> str:
        lines = redis_cli(self.port, "role").splitlines()
        return lines[0].strip() if lines else ""


@dataclass
class Cluster:
    """``masters`` masters, each with ``replicas_per_master`` replicas, on free ports."""

    root: Path
    masters: int = 3
    replicas_per_master: int = 1
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any node will do: the client discovers the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> Cluster:
        count = self.masters * (1 + self.replicas_per_master)
        for i in range(count):
            node = Node(free_port(), free_port(), self.root / f"node{i}")
            self.nodes.append(node)
            node.start()
        if count == 1:
            assert redis_cli(self.nodes[0].port, "cluster", "addslotsrange", "0", "16383").strip()
        else:
            out = subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas_per_master),
                    "--cluster-yes",
                ],
                capture_output=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
        self.wait_healthy()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------------

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None]

    def topology(self) -> dict[int, tuple[str, str]]:
        """port -> (role ``master``/``slave``, link/fail flags) as a running node sees it."""
        for node in self.running():
            with contextlib.suppress(subprocess.TimeoutExpired):
                out = redis_cli(node.port, "cluster", "nodes", timeout_s=1)
                if out.strip():
                    break
        else:
            return {}
        seen = {}
        for line in out.splitlines():
            parts = line.split()
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            flags = parts[2].split(",")
            role = "master" if "master" in flags else "slave"
            state = "fail" if ("fail" in flags or "fail?" in flags) else parts[7]
            seen[port] = (role, state)
        return seen

    def masters_now(self) -> list[Node]:
        top = self.topology()
        return [n for n in self.running() if top.get(n.port, ("", ""))[0] == "master"]

    def replicas_now(self) -> list[Node]:
        top = self.topology()
        return [n for n in self.running() if top.get(n.port, ("", ""))[0] == "slave"]

    def state_ok(self) -> bool:
        """Every running node says ``cluster_state:ok`` and agrees on the masters."""
        try:
            return all(n.info().get("cluster_state") == "ok" for n in self.running())
        except subprocess.TimeoutExpired:
            return False

    def replicas_in_sync(self) -> bool:
        """Every running replica's link to its master is up and its initial sync done."""
        for node in self.replicas_now():
            info = redis_cli(node.port, "info", "replication")
            if "master_link_status:up" not in info or "master_sync_in_progress:0" not in info:
                return False
        return True

    def wait_healthy(self, within_s: float = 30) -> float:
        """Seconds until the cluster is ok with ``masters`` masters and every replica in sync."""

        def healthy() -> bool:
            return (
                self.state_ok()
                and len(self.masters_now()) == self.masters
                and self.replicas_in_sync()
            )

        return poll(healthy, within_s, "cluster ok, every master up, every replica in sync")

    # -- faults -----------------------------------------------------------------------------

    def master(self) -> Node:
        """A running master that has a replica (one whose slots a failover can save)."""
        masters = self.masters_now()
        assert masters, "no master"
        return masters[0]

    def master_of(self, key: str) -> Node:
        """The running master serving ``key``'s slot (as CLUSTER NODES says)."""
        slot = key_slot(key.encode())
        for node in self.running():
            out = redis_cli(node.port, "cluster", "nodes")
            for line in out.splitlines():
                parts = line.split()
                if "master" not in parts[2] or "fail" in parts[2]:
                    continue
                for r in parts[8:]:
                    lo, _, hi = r.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                        return next(n for n in self.nodes if n.port == port)
            break
        raise AssertionError(f"no master serves slot {slot}")

    def replica_of(self, master: Node) -> Node:
        """A running replica of ``master``."""
        lines = [line.split() for line in redis_cli(master.port, "cluster", "nodes").splitlines()]
        me = next(p[0] for p in lines if "myself" in p[2])
        for p in lines:
            if "slave" in p[2] and p[3] == me:
                port = int(p[1].split("@")[0].rsplit(":", 1)[1])
                return next(n for n in self.running() if n.port == port)
        raise AssertionError(f"port {master.port} has no replica")

    def kill_master(self, key: str | None = None) -> Node:
        node = self.master() if key is None else self.master_of(key)
        node.kill()
        return node

    def wait_failover(self, dead: Node, within_s: float = 30) -> float:
        """Seconds until a replica replaced ``dead`` (killed or paused): the cluster is ok
        again with ``masters`` masters, none of them ``dead``."""

        def promoted() -> bool:
            masters = [n.port for n in self.masters_now()]
            live = [n for n in self.running() if n is not dead]
            try:
                ok = all(n.info().get("cluster_state") == "ok" for n in live)
            except subprocess.TimeoutExpired:
                return False
            return ok and dead.port not in masters and len(masters) >= self.masters

        return poll(promoted, within_s, f"a replica promoted in place of port {dead.port}")

    def restart(self, node: Node, within_s: float = 30) -> float:
        """Start a killed node again on its data; seconds until it rejoined (as a replica:
        its slots have a new master) and the cluster is healthy."""
        node.start()
        started = time.monotonic()
        self.wait_healthy(within_s)
        return time.monotonic() - started


@contextlib.contextmanager
def cluster(root: Path, masters: int = 3, replicas_per_master: int = 1) -> Iterator[Cluster]:
    with Cluster(root, masters, replicas_per_master) as c:
        yield c
