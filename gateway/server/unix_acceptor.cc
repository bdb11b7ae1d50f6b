#include "gateway/server/unix_acceptor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <grpcpp/server_posix.h>

#include "absl/strings/str_cat.h"
#include "gateway/core/log.h"

namespace osh::gateway {

absl::StatusOr<std::unique_ptr<UnixAcceptor>> UnixAcceptor::Start(const std::string& path, grpc::Server* server,
                                                                   Options options) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", path, ": the path is too long for a socket"));
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", path, ": ", std::strerror(errno)));
  const mode_t old_mask = ::umask(0177);  // the socket file is created 0600
  const int bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  const int bind_error = errno;
  ::umask(old_mask);
  if (bound != 0 || ::listen(fd, SOMAXCONN) != 0) {
    const int error = bound != 0 ? bind_error : errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", path, ": ", std::strerror(error)));
  }
  if (options.group.has_value()) {
    if (::chown(path.c_str(), static_cast<uid_t>(-1), *options.group) != 0 || ::chmod(path.c_str(), 0660) != 0) {
      const int error = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return absl::UnavailableError(absl::StrCat("cannot give ", path, " to group ", *options.group, ": ", std::strerror(error)));
    }
  } else {
    ::chmod(path.c_str(), 0600);
  }
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", path, ": eventfd: ", std::strerror(errno)));
  }
  std::unique_ptr<UnixAcceptor> acceptor(new UnixAcceptor(path, fd, wake, server, std::move(options)));
  acceptor->thread_ = std::thread([raw = acceptor.get()] { raw->Run(); });
  return acceptor;
}

UnixAcceptor::UnixAcceptor(std::string path, int listen_fd, int wake_fd, grpc::Server* server, Options options)
    : path_(std::move(path)), listen_fd_(listen_fd), wake_fd_(wake_fd), server_(server), options_(std::move(options)) {}

UnixAcceptor::~UnixAcceptor() {
  const uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
  ::unlink(path_.c_str());
}

void UnixAcceptor::Sweep() {
  size_t kept = 0;
  per_peer_.clear();
  for (const Handed& h : handed_) {
    struct stat st;
    if (::fstat(h.fd, &st) == 0 && st.st_ino == h.inode && S_ISSOCK(st.st_mode)) {
      handed_[kept++] = h;
      if (h.peer != 0) ++per_peer_[h.peer];
    }
  }
  handed_.resize(kept);
  open_ = handed_.size();
}

void UnixAcceptor::Run() {
  auto last_sweep = std::chrono::steady_clock::now();
  bool warned_full = false;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_sweep >= std::chrono::seconds(1) || handed_.size() >= options_.max_connections) {
      Sweep();
      last_sweep = now;
    }
    const bool full = handed_.size() >= options_.max_connections;
    if (full != !accepting_.load()) {
      accepting_ = !full;
      if (full) {
        LogWarning(absl::StrCat(path_, ": ", handed_.size(), " connections open, the cap (", options_.max_connections,
                                "): not accepting until some close"));
      } else {
        LogInfo(absl::StrCat(path_, ": accepting connections again (", handed_.size(), " open)"));
      }
      if (options_.on_state) options_.on_state(!full);
    }
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {listen_fd_, static_cast<short>(full ? 0 : POLLIN), 0}};
    const int ready = ::poll(fds, 2, full ? 100 : 1000);
    if (ready < 0 && errno != EINTR) {
      LogError(absl::StrCat(path_, ": poll: ", std::strerror(errno)));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (fds[0].revents != 0) return;  // stopping
    if ((fds[1].revents & POLLIN) == 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        if (!warned_full) LogWarning(absl::StrCat(path_, ": accept: ", std::strerror(errno), "; retrying"));
        warned_full = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      continue;  // EAGAIN, ECONNABORTED, EINTR: nothing to do
    }
    warned_full = false;
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      continue;
    }
    ucred peer{};
    socklen_t peer_size = sizeof(peer);
    const bool known = ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) == 0;
    if (known && options_.max_per_peer != 0 && peer.pid != 0) {
      size_t& held = per_peer_[peer.pid];
      if (held >= options_.max_per_peer) {
        // Counts may be up to a second stale (closed connections are found by the sweep): sweep once
        // before refusing.
        Sweep();
        last_sweep = std::chrono::steady_clock::now();
      }
      if (per_peer_[peer.pid] >= options_.max_per_peer) {
        ::close(fd);
        share_refusals_.Refused(path_, absl::StrCat("process ", peer.pid, " (uid ", peer.uid, ")"),
                                per_peer_[peer.pid]);
        continue;
      }
      ++per_peer_[peer.pid];
    }
    handed_.push_back({fd, st.st_ino, known ? peer.pid : 0});
    open_ = handed_.size();
    {
      absl::MutexLock lock(&peers_mu_);
      if (known) {
        peer_uids_[fd] = peer.uid;
      } else {
        peer_uids_.erase(fd);
      }
    }
    grpc::AddInsecureChannelFromFd(server_, fd);  // the server owns the descriptor from here
  }
}

std::optional<uid_t> UnixAcceptor::PeerUid(int fd) const {
  absl::MutexLock lock(&peers_mu_);
  auto it = peer_uids_.find(fd);
  if (it == peer_uids_.end()) return std::nullopt;
  return it->second;
}


}  // namespace osh::gateway
