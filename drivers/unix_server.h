// gRPC servers on Unix sockets, one way for the gateway's sockets and for the drivers shipped here.
// The socket file is created 0600; a stale one (nothing answers on it) is replaced, a live one or a
// file that is not a socket is refused. The gateway also requires its socket folder to be private (its
// own, 0700); a driver's folder need not be (the gateway, maybe another user, must reach the socket).
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace osh::drivers {

enum class SocketFolder {
  kPrivate,  // created 0700 if missing; must be owned by this user and closed to group and others
  kAsIs,     // must exist; its permissions are the operator's choice
  kGroupEnterable,  // already made by EnsureGroupEnterableDir: ours, 0710 (its group may enter, not list)
};

// Makes `path` ready for a server to bind (see above). FAILED_PRECONDITION naming the path otherwise
// (a live listener, a non-socket file, a loose private folder, a path too long for a socket).
absl::Status PrepareServerSocketPath(const std::string& path, SocketFolder folder = SocketFolder::kPrivate);

// Prepares `path`, then builds and starts `builder`'s server listening on it (services already
// registered), the socket created 0600. UNAVAILABLE when gRPC cannot listen.
// The socket is 0600, or with `group` 0660 for that group (given to the group while still 0600, then
// opened to it: never open to another group). UNAVAILABLE when it cannot listen, FAILED_PRECONDITION when
// the socket's mode or group cannot be set (the server is stopped then).
absl::StatusOr<std::unique_ptr<grpc::Server>> StartUnixServer(const std::string& path, grpc::ServerBuilder& builder,
                                                             SocketFolder folder = SocketFolder::kPrivate,
                                                             std::optional<gid_t> group = std::nullopt);

// Makes `dir` a folder `gid` may enter but not list or write: created if missing, owned by this user,
// group `gid`, mode 0710 (missing parents are created 0711; existing ones must let the group through).
// FAILED_PRECONDITION naming it when it is someone else's.
absl::Status EnsureGroupEnterableDir(const std::string& dir, gid_t gid);

// A group by name or number; INVALID_ARGUMENT naming it when there is none.
absl::StatusOr<gid_t> ResolveGroup(const std::string& group);

}  // namespace osh::drivers
