#!/usr/bin/python3
"""A minimal third-party PolicyDriver in Python: one policy file for every sandbox.

A teaching example of docs/driver-contract.md (the contract) and docs/driver-walkthrough.md ("A driver
in Python"). Debian 12 packages only: python3-grpcio, python3-protobuf, and stubs generated from the
installed protos with protoc and grpc_python_plugin (protobuf-compiler, protobuf-compiler-grpc):

  protoc -I share/openshell/proto --python_out=STUBS --grpc_python_out=STUBS \
      --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \
      openshell/policy/driver/v1/driver.proto openshell/sandbox/v1/sandbox.proto
  PYTHONPATH=STUBS /usr/bin/python3 driver.py --socket /run/mydriver/driver.sock --policy policy.txtpb

The policy is a protobuf text-format openshell.sandbox.v1.SandboxPolicy (policy.txtpb here is
examples/policies/restrictive-default.yaml, converted once). Projections are bound to the context,
versioned and unsigned: to sign, add an Ed25519 signature of the SPEC §3.4 signed bytes (e.g. with
python3-cryptography) in `signature` and name the trust-store key in `signing_key_id`.
"""
import argparse, base64, errno, hashlib, json, os, signal, socket, stat, struct, sys, threading, time
from concurrent import futures

import grpc
from google.protobuf import text_format
from openshell.policy.driver.v1 import driver_pb2, driver_pb2_grpc
from openshell.sandbox.v1 import sandbox_pb2

SURFACE = "openshell.sandbox.v1"


def framed(data):
    """F(x) of the contract (§4, §5): a 4-byte big-endian length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def context_digest(ctx):
    """The §5 context digest: binds a projection to the one sandbox it was issued for."""
    out = framed(b"openshell.policy.context.v1") + framed(ctx.sandbox_id.encode()) + framed(ctx.user_subject.encode())
    pairs = sorted((k.encode(), v.encode()) for k, v in ctx.attributes.items())  # keys sorted bytewise
    out += struct.pack(">I", len(pairs)) + b"".join(framed(k) + framed(v) for k, v in pairs)
    return hashlib.sha256(out).hexdigest()


class Driver(driver_pb2_grpc.PolicyDriverServicer):
    def __init__(self, policy_path, version, expires_in, handles_file):
        policy = text_format.Parse(open(policy_path).read(), sandbox_pb2.SandboxPolicy())
        # Deterministic bytes: the same policy always has the same digest (the gateway stores bodies by it).
        self.body = policy.SerializeToString(deterministic=True)
        self.digest = hashlib.sha256(self.body).hexdigest()
        self.version, self.expires_in = version, expires_in
        self.audit = {"driver": "python-example-driver", "policy_file": os.path.basename(policy_path)}
        self.issued_at = 0  # the current issuance (see GetProjection)
        self.lock = threading.Lock()  # gRPC calls arrive on several threads at once
        self.handles_file = handles_file
        self.handles = {}  # handle -> {"context": base64 of the serialized RuntimeContext, "key": idempotency key}
        if handles_file and os.path.exists(handles_file):
            self.handles = json.load(open(handles_file))  # handles MUST outlive us (§2.2)

    def _save(self):
        if self.handles_file:  # write aside, flush, rename, flush the folder: a crash leaves the old or the new
            tmp = self.handles_file + ".tmp"  # 0600: handles and contexts are no one else's to read
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a .tmp left by an earlier run keeps its mode through O_CREAT
            with os.fdopen(fd, "w") as out:
                json.dump(self.handles, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.handles_file)
            folder = os.open(os.path.dirname(os.path.abspath(self.handles_file)), os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def GetCapabilities(self, request, context):
        features = ["policy_version", "context_binding", "idempotent_acquire"] + (["expiry"] if self.expires_in else [])
        return driver_pb2.Capabilities(driver_name="python-example-driver", driver_version="1.0", api_version=1,
                                       supported_surfaces=[SURFACE], permits_mutation=False,
                                       signs_projections=False, features=features)

    def AcquireHandle(self, request, context):
        ctx = request.context
        if not ctx.sandbox_id or not ctx.user_subject:  # an empty or absent context is malformed
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "context.sandbox_id and context.user_subject are required")
        key = request.idempotency_key
        with self.lock:
            for handle, entry in self.handles.items():  # the same key gives the same live handle
                if key and entry["key"] == key:
                    return driver_pb2.AcquireHandleResponse(handle=handle)
            handle = "h_" + os.urandom(16).hex()  # opaque, unguessable, a new one per admission
            self.handles[handle] = {"context": base64.b64encode(ctx.SerializeToString()).decode(), "key": key}
            self._save()
        return driver_pb2.AcquireHandleResponse(handle=handle)

    def GetProjection(self, request, context):
        with self.lock:
            entry = self.handles.get(request.handle)
            if entry is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown handle")
            now = int(time.time())
            # Re-issue (new issued_at/expires_at) only at start and once half the lifetime is gone. A new
            # expiry on every call would make every refresh a new projection, pushed to every watcher.
            if not self.issued_at or (self.expires_in and now >= self.issued_at + self.expires_in // 2):
                self.issued_at = now
            issued_at = self.issued_at
        if request.surface_id not in ("", SURFACE):
            return driver_pb2.GetProjectionResponse(
                no_verified_policy=driver_pb2.NoVerifiedPolicy(reason=f"surface {request.surface_id!r} is not served"))
        ctx = driver_pb2.RuntimeContext.FromString(base64.b64decode(entry["context"]))
        projection = driver_pb2.Projection(
            surface_id=SURFACE, body=self.body, policy_digest=self.digest, policy_version=self.version,
            context_digest=context_digest(ctx), audit_context=self.audit, issued_at_unix=issued_at,
            expires_at_unix=issued_at + self.expires_in if self.expires_in else 0)
        return driver_pb2.GetProjectionResponse(projection=projection)

    def ReleaseHandle(self, request, context):
        with self.lock:  # idempotent: an unknown or released handle is OK too
            if self.handles.pop(request.handle, None) is not None:
                self._save()
        return driver_pb2.ReleaseHandleResponse()


def clear_stale_socket(path):
    """Replace a socket left by a dead driver, never one a live driver answers on, nor any other file."""
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        sys.exit(f"driver.py: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX) as probe:
        error = probe.connect_ex(path)
    if error == 0:
        sys.exit(f"driver.py: a driver already listens on {path}")
    # Only a refused connection means no one listens: EACCES (another user's driver) or EAGAIN (a busy
    # one, its queue full) leave the socket alone.
    if error != errno.ECONNREFUSED:
        sys.exit(f"driver.py: cannot tell whether a driver listens on {path}: {os.strerror(error)}")
    os.unlink(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket to serve on (created 0600)")
    parser.add_argument("--policy", required=True, help="text-format openshell.sandbox.v1.SandboxPolicy")
    parser.add_argument("--policy-version", type=int, default=1, help="policy_version (bump on every change)")
    parser.add_argument("--expires-in", type=int, default=0, help="projection lifetime in seconds (0: never)")
    parser.add_argument("--handles-file", help="keep live handles here, so they survive a restart")
    args = parser.parse_args()
    driver = Driver(args.policy, args.policy_version, args.expires_in, args.handles_file)
    # 0600 without a race: with this umask the socket (and the handles file) is created owner-only by
    # bind() itself; a chmod after bind() would leave a moment where it is not. Keep the folder private too.
    os.umask(0o177)
    clear_stale_socket(args.socket)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    driver_pb2_grpc.add_PolicyDriverServicer_to_server(driver, server)
    if server.add_insecure_port("unix:" + args.socket) == 0:
        sys.exit(f"driver.py: cannot listen on {args.socket}")
    server.start()
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    print(f"driver.py: serving {args.policy} (digest {driver.digest}) on {args.socket}", file=sys.stderr, flush=True)
    stopped.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
