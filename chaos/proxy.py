"""A TCP fault proxy for loopback services: pass traffic, cut every connection, or black-hole it.

The relay reaches Postgres through this proxy in the fault suite, so a network fault can be injected between
the two without touching either process. (Kafka clients follow advertised listeners, so Kafka-side network
faults are injected by SIGSTOP of the brokers instead: the same black-hole semantics.)
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from enum import Enum


class Mode(Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"  # connections stay open but no byte moves: the client sees timeouts
    REFUSE = "refuse"  # existing connections are reset and new ones are closed at once


class FaultProxy:
    def __init__(self, target_port: int, listen_port: int = 0, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._srv = socket.create_server((host, listen_port))
        self.port = int(self._srv.getsockname()[1])
        self.mode = Mode.PASS
        self.faults = 0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is not Mode.PASS:
            self.faults += 1
        if mode is Mode.REFUSE:
            with self._lock:
                for s in list(self._conns):
                    with contextlib.suppress(OSError):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        s.close()
                self._conns.clear()

    def close(self) -> None:
        self._stop.set()
        self._srv.close()
        self.set_mode(Mode.REFUSE)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            if self.mode is Mode.REFUSE:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.2)
                if self.mode is Mode.BLACKHOLE:
                    continue  # leave bytes in the kernel buffers: nothing moves
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()
