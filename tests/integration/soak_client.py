#!/usr/bin/env python3
"""One soak worker: until --seconds have passed (or --max-connections), open a connection
to the echo server at --port, send a random payload of random size, half-close, read the
echo to EOF and compare SHA-256; every --probe-every connections also try --probe-port,
which the policy under reload either allows (echo checked the same way) or denies with
EACCES. Prints one summary line; exit 0 when every connection either verified or (probe
port only) was denied with EACCES, 1 on the first other outcome (printed)."""
import argparse
import errno
import hashlib
import os
import random
import socket
import sys
import time


def echo_once(port, size, rng, timeout):
    payload = rng.randbytes(size)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        view = memoryview(payload)
        got = hashlib.sha256()
        received = 0
        s.setblocking(True)
        s.settimeout(timeout)
        sent = 0
        # Interleave sending and reading so large payloads do not deadlock on full buffers.
        while sent < len(payload):
            n = s.send(view[sent:sent + 65536])
            sent += n
            s.setblocking(False)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise RuntimeError("early EOF from the echo server")
                    got.update(chunk)
                    received += len(chunk)
            except BlockingIOError:
                pass
            s.settimeout(timeout)
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got.update(chunk)
            received += len(chunk)
    if received != size or got.digest() != hashlib.sha256(payload).digest():
        raise RuntimeError(f"echo mismatch: sent {size} bytes, got {received}")
    return size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--probe-port", type=int, required=True)
    ap.add_argument("--probe-every", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-connections", type=int, default=100000)
    ap.add_argument("--max-size", type=int, default=128 * 1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default="worker")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    deadline = time.monotonic() + a.seconds
    ok = denied = probe_ok = nbytes = 0
    n = 0
    while time.monotonic() < deadline and n < a.max_connections:
        n += 1
        probe = n % a.probe_every == 0
        port = a.probe_port if probe else a.port
        size = rng.randint(1, a.max_size)
        try:
            nbytes += echo_once(port, size, rng, timeout=20)
            if probe:
                probe_ok += 1
            else:
                ok += 1
        except OSError as e:
            if probe and e.errno == errno.EACCES:
                denied += 1
                continue
            name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
            print(f"{a.name}: connection {n} to port {port} failed: {name} ({e})", flush=True)
            return 1
        except RuntimeError as e:
            print(f"{a.name}: connection {n} to port {port}: {e}", flush=True)
            return 1
    print(f"{a.name}: connections {n} verified {ok} probe_verified {probe_ok} "
          f"probe_denied {denied} bytes {nbytes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
