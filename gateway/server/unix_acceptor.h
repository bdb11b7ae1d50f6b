// Accepts connections on a gateway Unix socket itself and hands each to a gRPC server
// (grpc::AddInsecureChannelFromFd). gRPC 1.51's own listener stops accepting for good after a single
// EMFILE (tcp_server_posix "Failed accept4: Too many open files"), so one peer holding idle connections
// could shut every sandbox out until a restart. Here:
//   - open connections are capped (`max_connections`); at the cap the acceptor pauses — the kernel's
//     backlog holds new ones — and resumes as connections close;
//   - an accept that fails for lack of descriptors is retried, never fatal;
//   - `on_state(false)` / `on_state(true)` report pausing and resuming (health says NOT_SERVING between);
//   - one peer process (by SO_PEERCRED pid) holds at most `max_per_peer` of them: a connection past its
//     share is accepted and closed at once, so one local peer cannot stall every sandbox by filling the cap.
// Connections the server closed are noticed by a sweep (fstat of each handed-over descriptor, compared by
// inode) before every accept at the cap and at least once a second. Thread-safe; one thread of its own.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gateway/server/peer_share.h"

namespace osh::gateway {

class UnixAcceptor {
 public:
  struct Options {
    size_t max_connections = 1024;
    size_t max_per_peer = 0;  // connections one peer process may hold open; 0: no share beyond the cap
    std::function<void(bool accepting)> on_state;  // called from the acceptor's thread; may be empty
    std::optional<gid_t> group;  // set: the socket is 0660 and owned by this group (else 0600)
  };
  // Binds `path` (already prepared: see drivers::PrepareServerSocketPath) with mode 0600 (0660 for
  // `options.group`) and starts
  // accepting for `server` (started, and outliving the acceptor). UNAVAILABLE naming the path on failure.
  static absl::StatusOr<std::unique_ptr<UnixAcceptor>> Start(const std::string& path, grpc::Server* server,
                                                             Options options);
  ~UnixAcceptor();  // stops accepting, closes the listening socket and removes its file

  size_t open_connections() const { return open_.load(); }
  // The uid of the peer on an accepted connection, by its descriptor (gRPC names such a peer "fd:<n>");
  // nullopt for a descriptor this acceptor did not hand over. Thread-safe.
  std::optional<uid_t> PeerUid(int fd) const;
  bool accepting() const { return accepting_.load(); }

 private:
  UnixAcceptor(std::string path, int listen_fd, int wake_fd, grpc::Server* server, Options options);
  void Run();
  void Sweep();

  struct Handed {
    int fd;
    ino_t inode;
    pid_t peer;  // 0: unknown
  };
  const std::string path_;
  const int listen_fd_;
  const int wake_fd_;  // an eventfd: written to stop the thread
  grpc::Server* const server_;
  const Options options_;
  std::vector<Handed> handed_;  // the acceptor thread's own
  absl::flat_hash_map<pid_t, size_t> per_peer_;  // open connections by peer process (the acceptor thread's own)
  ShareRefusals share_refusals_;  // the acceptor thread's own
  mutable absl::Mutex peers_mu_;
  absl::flat_hash_map<int, uid_t> peer_uids_ ABSL_GUARDED_BY(peers_mu_);  // by descriptor, set as each is accepted
  std::atomic<size_t> open_{0};
  std::atomic<bool> accepting_{true};
  std::thread thread_;
};

}  // namespace osh::gateway
