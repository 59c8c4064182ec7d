#!/usr/bin/env python3
"""Opens N keep-alive HTTP/1.1 connections to a loopback server, sends one request on each
(x-user-id user-00000 ... varied), and keeps them open and idle.

Protocol with bench/run-memory.sh, one line each on stdout:
  "holding N"   every connection got a 200 and is idle now
  (waits for a line or EOF on stdin)
  "closed N server_closed=K"   all closed; K were closed by the server while held
Exits 1 with a message on stderr when a connection fails or the time limit passes.
Standard library only.
"""

import argparse
import selectors
import socket
import sys
import time

WINDOW = 64  # connections connecting or waiting for their response at once


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--path", default="/", help="the path requested on each connection")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to open them all")
    a = p.parse_args()
    if not a.host.startswith("127."):
        p.error("loopback addresses only (127.x.x.x)")
    if not a.path.startswith("/"):
        p.error("--path must start with /")
    if not 1 <= a.connections <= 60000:
        p.error("--connections must be 1..60000")
    return a


def response_complete(data):
    """Whether `data` holds one whole response; raises on anything but a 200."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = data[:head_end].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[0]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    if headers.get("connection", "").lower() == "close":
        raise RuntimeError("the server answered with Connection: close")
    body = data[head_end + 4 :]
    if "content-length" in headers:
        return len(body) >= int(headers["content-length"])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return body.endswith(b"0\r\n\r\n")
    raise RuntimeError("response without Content-Length or chunked body")


def open_all(args):
    sel = selectors.DefaultSelector()
    held, started, deadline = [], 0, time.monotonic() + args.timeout
    pending = {}  # socket -> bytes received so far

    def start(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((args.host, args.port))
        request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nx-user-id: user-{i:05d}\r\n\r\n"
        sel.register(s, selectors.EVENT_WRITE, request.encode())
        pending[s] = b""

    while len(held) < args.connections:
        while started < args.connections and len(pending) < WINDOW:
            start(started)
            started += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(held)} of {args.connections} connections open after {args.timeout} s")
        for key, events in sel.select(timeout=1.0):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise RuntimeError(f"connect failed: {err}")
                s.sendall(key.data)  # one small request fits the empty send buffer
                sel.modify(s, selectors.EVENT_READ)
                continue
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection before answering")
            pending[s] += chunk
            if response_complete(pending[s]):
                del pending[s]
                sel.unregister(s)
                held.append(s)
    sel.close()
    return held


def closed_by_server(held):
    """Connections the server closed (readable at EOF) while they were held idle."""
    sel = selectors.DefaultSelector()
    for s in held:
        sel.register(s, selectors.EVENT_READ)
    ready = sel.select(timeout=0)
    sel.close()
    return sum(1 for key, _ in ready if key.fileobj.recv(1, socket.MSG_PEEK) == b"")


def main():
    args = parse_args()
    try:
        held = open_all(args)
    except (OSError, RuntimeError) as e:
        print(f"hold-connections: {e}", file=sys.stderr)
        return 1
    print(f"holding {len(held)}", flush=True)
    sys.stdin.readline()
    gone = closed_by_server(held)
    for s in held:
        s.close()
    print(f"closed {len(held)} server_closed={gone}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
