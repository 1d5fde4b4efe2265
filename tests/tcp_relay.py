"""A tiny ProxyCommand for the tests: relay stdin/stdout to HOST:PORT (what ``nc HOST PORT`` does).

``python tests/tcp_relay.py 127.0.0.1 %p`` as ``ssh_proxy_command`` makes any node address (a moto
instance's IP) reach the real sshd on 127.0.0.1. Exits when either side closes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(host: str, port: int) -> None:
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)

    def upstream() -> None:
        try:
            while data := os.read(0, 65536):
                sock.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while data := sock.recv(65536):
            _write_all(1, data)
    except OSError:
        pass


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("127.0.0.1", "localhost"):
        raise SystemExit("usage: tcp_relay.py 127.0.0.1 PORT (loopback only)")
    main(sys.argv[1], int(sys.argv[2]))
