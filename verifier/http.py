"""HTTP through the VIP: one GET per new connection, and the drill's background prober."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .logic import VERIFIER_UA


@dataclass(frozen=True)
class Reply:
    ok: bool  # HTTP 200
    status: int | None
    balancer: str | None  # X-Balancer: which balancer's nginx answered
    node: str | None  # the web node (JSON "node" of /whoami, else X-Node)
    body: dict | None  # /whoami JSON
    client_ip: str | None  # our side of the connection, as the balancer saw it
    error: str | None = None


def get(host: str, path: str = "/whoami", *, server_name: str, user_agent: str = VERIFIER_UA,
        cookie: str | None = None, timeout: float = 2.0) -> Reply:
    """GET over a fresh connection (Connection: close), never raising."""
    conn = http.client.HTTPConnection(host, 80, timeout=timeout)
    headers = {"Host": server_name, "User-Agent": user_agent, "Connection": "close", "Accept": "*/*"}
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request("GET", path, headers=headers)
        client_ip = conn.sock.getsockname()[0] if conn.sock else None
        resp = conn.getresponse()
        raw = resp.read(65536)
        body = None
        if resp.getheader("Content-Type", "").startswith("application/json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        node = (body or {}).get("node") or resp.getheader("X-Node")
        return Reply(resp.status == 200, resp.status, resp.getheader("X-Balancer"), node, body, client_ip)
    except (OSError, http.client.HTTPException) as e:
        return Reply(False, None, None, None, None, None, f"{type(e).__name__}: {e}")
    finally:
        conn.close()


@dataclass(frozen=True)
class Probe:
    t: float  # launch time (time.monotonic())
    ok: bool
    balancer: str | None
    error: str | None
    node: str | None = None  # the web node behind it (JSON "node" of /whoami)
    latency: float | None = None  # launch -> answer (or failure), seconds


class Prober:
    """GETs the VIP every `interval` seconds from a background thread, each on its own connection, with
    at most `max_in_flight` outstanding (a probe that hangs does not delay the next one). Bounded: it
    stops by itself after `max_seconds`."""

    def __init__(self, vip: str, server_name: str, interval: float = 0.1, timeout: float = 1.0,
                 max_seconds: float = 900.0, max_in_flight: int = 16):
        self.vip, self.server_name = vip, server_name
        self.interval, self.timeout, self.max_seconds = interval, timeout, max_seconds
        self.probes: list[Probe] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.Semaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="probe")
        self._thread = threading.Thread(target=self._loop, name="prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop launching, wait for the probes in flight (each bounded by its timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.max_seconds)
        self._pool.shutdown(wait=True)

    def _one(self, t: float) -> None:
        try:
            r = get(self.vip, "/whoami", server_name=self.server_name, timeout=self.timeout)
            done = time.monotonic()
            with self._lock:
                self.probes.append(Probe(t, r.ok, r.balancer, r.error or (None if r.ok else f"HTTP {r.status}"), r.node,
                                         round(done - t, 4)))
        finally:
            self._slots.release()

    def _loop(self) -> None:
        started = time.monotonic()
        next_t = started
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            if self._slots.acquire(timeout=self.interval):
                t = time.monotonic()
                self._pool.submit(self._one, t)
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def snapshot(self) -> list[Probe]:
        with self._lock:
            return sorted(self.probes, key=lambda p: p.t)
