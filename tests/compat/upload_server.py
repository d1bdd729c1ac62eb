#!/usr/bin/env python3
"""HTTP/1.1 server for tests/compat/curl.sh: GET serves files from DIR, PUT /NAME stores
the request body as DIR/NAME and answers 201 with "sha256 HEX BYTES" of what it received.

usage: upload_server.py DIR PORT   (binds 127.0.0.1:PORT, prints "listening PORT")
"""
import hashlib
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    # HTTP/1.1 so that curl's "Expect: 100-continue" is answered at once.
    protocol_version = "HTTP/1.1"

    def do_PUT(self):
        name = os.path.basename(self.path)
        length = self.headers.get("Content-Length")
        if not name or length is None:
            self.send_error(411 if length is None else 400)
            return
        remaining = int(length)
        digest = hashlib.sha256()
        with open(os.path.join(self.directory, name), "wb") as out:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break  # the client went away early: the size check below says so
                out.write(chunk)
                digest.update(chunk)
                remaining -= len(chunk)
        got = int(length) - remaining
        if remaining:
            self.send_error(400, f"body ended after {got} of {length} bytes")
            return
        body = f"sha256 {digest.hexdigest()} {got}\n".encode()
        self.send_response(201)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    directory, port = sys.argv[1], int(sys.argv[2])

    def handler(*args, **kwargs):
        return Handler(*args, directory=directory, **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"listening {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
