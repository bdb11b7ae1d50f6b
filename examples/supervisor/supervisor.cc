// An example sandbox supervisor on the client library (sandbox_client/sandbox_client.h).
//
// It watches its sandbox's projection, lets the library verify each one against the supervisor's own
// trust store and runtime context, "applies" a verified policy by writing it (protobuf JSON) to
// --policy-out — a real supervisor would hand it to its filesystem, process and network enforcement — and
// leaves reporting LOADED / FAILED to the library. A projection that fails verification never reaches
// apply: the last good policy stays in force. SIGTERM or SIGINT stops it.
//
// Fail-closed rules it adds to the library's checks:
// - rollback across restarts: the highest policy_version applied is kept in --state-file (default
//   <policy-out>.state, 0600, replaced atomically); a projection below it is refused after a restart too.
//   A corrupt or unreadable state file, one in a folder another user can write (or that does not exist),
//   or a --policy-out without its state file, stops it at start (2).
// - context: without --sandbox-id/--user-subject a projection bound to a context (context_digest) is refused;
//   a trust store with require_context_binding needs them to start.
// - expiry: when the policy in force reaches expires_at_unix (+ --clock-skew-s) with no newer one, it is
//   reported FAILED and --policy-out is removed (no policy file: the enforcement side denies everything)
//   until a newer verified projection is applied; --keep-expired keeps it in force instead.
//
//   example-supervisor --socket ./var/sandbox.sock --handle-file handle --trust-store trust.json
//                      --sandbox-id sb-1 --user-subject alice@example.com --policy-out policy.json
#include <signal.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <vector>
#include <thread>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "sandbox_client/sandbox_client.h"
#include "trust/trust_store.h"

namespace sc = osh::sandbox_client;

namespace {

// Makes a rename or unlink in the folder of `path` durable.
absl::Status SyncFolderOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  return synced ? absl::OkStatus() : absl::InternalError("cannot sync the folder of " + path);
}

// Writes the policy where the enforcement side picks it up: whole, or not at all.
absl::Status Apply(const sc::VerifiedPolicy& verified, const std::string& path) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(*verified.policy, &json, options).ok()) {
    return absl::InternalError("cannot print the policy");
  }
  // A temporary file of its own (mkostemp: O_EXCL, never a file or link someone put at a fixed name), 0644
  // for the enforcement side, synced, then renamed over `path` and the folder synced (review 115: a fixed
  // ".tmp" name was followed if a link, and the data was not synced before the rename a power loss keeps).
  json += "\n";
  std::string temp = path + ".tmp.XXXXXX";
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return absl::InternalError("cannot create a temporary file beside " + path + ": " + std::strerror(errno));
  bool written = true;
  for (size_t done = 0; written && done < json.size();) {
    const ssize_t n = ::write(fd, json.data() + done, json.size() - done);
    if (n > 0) done += static_cast<size_t>(n);
    else written = n < 0 && errno == EINTR;
  }
  written = written && ::fchmod(fd, 0644) == 0 && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || std::rename(temp.c_str(), path.c_str()) != 0) {
    ::unlink(temp.c_str());
    return absl::InternalError("cannot write " + path + ": " + std::strerror(errno));
  }
  return SyncFolderOf(path);
}

// Fail closed when the policy in force expired: no policy file, so the enforcement side denies everything.
absl::Status Withdraw(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError("cannot remove " + path + ": " + std::strerror(errno));
  }
  return SyncFolderOf(path);
}

}  // namespace

// One event a line, written whole (stderr is unbuffered: a line written piece by piece can be read half).
static void Say(const std::string& line) { std::cerr << line + "\n" << std::flush; }

int main(int argc, char** argv) {
  sc::QuietGrpcLogs();  // errors are reported as statuses with hints, not gRPC core's log lines
  CLI::App app{"example-supervisor: keep a sandbox's policy in force, verified end to end"};
  sc::ClientOptions options;
  std::string trust_store, policy_out = "policy.json", handle_file;
  options.endpoint.unix_socket = "./var/sandbox.sock";
  app.add_option("--socket", options.endpoint.unix_socket, "the gateway's sandbox socket")->capture_default_str();
  app.add_option("--server", options.endpoint.server, "host:port of the gateway's sandbox_listen instead");
  app.add_option("--ca", options.endpoint.ca_file, "CA of the gateway's certificate (TLS)");
  app.add_option("--cert", options.endpoint.cert_file, "client certificate, if the gateway asks for one");
  app.add_option("--key", options.endpoint.key_file, "its private key");
  app.add_option("--handle-file", handle_file, "file holding the sandbox handle (default: $POLICY_GATEWAY_SANDBOX_HANDLE)");
  app.add_option("--trust-store", trust_store, "the supervisor's own trust store (recommended)");
  std::string sandbox_id, user_subject;
  std::vector<std::string> attributes;
  app.add_option("--sandbox-id", sandbox_id,
                 "this sandbox's runtime context (with --user-subject), to which a bound projection must be bound; "
                 "without it, projections bound to a context are refused");
  app.add_option("--user-subject", user_subject, "runtime context: the user subject (required with --sandbox-id)");
  app.add_option("--attr", attributes, "runtime context: an attribute, key=value (repeatable)");
  app.add_option("--policy-out", policy_out, "where the policy in force is written (removed when it expires)")
      ->capture_default_str();
  std::string state_file;
  app.add_option("--state-file", state_file,
                 "where the highest policy version applied is kept, so that no older projection is applied after a "
                 "restart (default: <policy-out>.state); its folder, and each above it, must be writable by this "
                 "user or root alone, or it stops at start");
  app.add_option("--clock-skew-s", options.clock_skew_s, "tolerance for expires_at_unix and key windows, seconds")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-key", options.log_key,
                 "the gateway's verifiable-log verifier key (<origin>+<hex>+<base64>, in its start-up log): apply a "
                 "projection only with a proof that it was logged for this sandbox (needs --sandbox-id)");
  app.add_option("--witness-key", options.witness_keys, "a witness's cosignature verifier key (repeatable)");
  int witness_quorum = -1;
  app.add_option("--witness-quorum", witness_quorum,
                 "how many of the --witness-key witnesses must have cosigned the checkpoint (default: all of them)")
      ->check(CLI::Range(1, 1000));
  std::string log_state_file;
  app.add_option("--log-state-file", log_state_file,
                 "where the newest log checkpoint verified is kept (default: <policy-out>.log-state)");
  bool keep_expired = false;
  app.add_flag("--keep-expired", keep_expired,
               "keep an expired policy in force (still reported FAILED) instead of removing --policy-out");
  app.footer(
      "Exit status: 0 after SIGTERM/SIGINT; 1 when the watch ends (the handle was revoked or the sandbox deleted, "
      "or an expired policy could not be removed); 2 for a usage or start-up error (including an unreadable or "
      "corrupt state file).");
  CLI11_PARSE(app, argc, argv);
  options.witness_quorum = witness_quorum < 0 ? options.witness_keys.size() : static_cast<size_t>(witness_quorum);
  if (state_file.empty()) state_file = policy_out + ".state";
  options.state_file = state_file;
  options.require_log_proof = !options.log_key.empty();
  options.log_state_file = log_state_file.empty() ? policy_out + ".log-state" : log_state_file;
  if (keep_expired) options.on_expiry = sc::ClientOptions::OnExpiry::kKeepLastGood;

  // Signals go to one thread, which stops the watch.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto handle = sc::ReadSandboxHandle(handle_file);
  if (!handle.ok()) {
    std::cerr << "error: " << handle.status().message() << "\n";
    return 2;
  }
  options.handle = *handle;
  if (!trust_store.empty()) {
    auto store = osh::trust::TrustStore::Load(trust_store);
    if (!store.ok()) {
      std::cerr << "error: " << store.status().message() << "\n";
      return 2;
    }
    options.trust_store = std::make_shared<const osh::trust::TrustStore>(*std::move(store));
  }
  // A policy file without the state that records its version: the state was lost, and with it the
  // rollback protection. Refuse rather than start from version 0.
  struct stat st {};
  if (::stat(policy_out.c_str(), &st) == 0 && ::stat(state_file.c_str(), &st) != 0 && errno == ENOENT) {
    std::cerr << "error: " << policy_out << " exists but its state file " << state_file
              << " does not: the highest version applied is unknown (restore the state file, or remove " << policy_out
              << " to start afresh)\n";
    return 2;
  }
  if (sandbox_id.empty() != user_subject.empty() || (sandbox_id.empty() && !attributes.empty())) {
    std::cerr << "error: the runtime context needs both --sandbox-id and --user-subject\n";
    return 2;
  }
  if (!sandbox_id.empty()) {
    options.context.emplace();
    options.context->set_sandbox_id(sandbox_id);
    options.context->set_user_subject(user_subject);
    for (const std::string& pair : attributes) {
      const size_t equals = pair.find('=');
      if (equals == std::string::npos || equals == 0) {
        std::cerr << "error: --attr " << pair << ": expected key=value\n";
        return 2;
      }
      (*options.context->mutable_attributes())[pair.substr(0, equals)] = pair.substr(equals + 1);
    }
  }
  auto client = sc::SandboxClient::Connect(std::move(options));
  if (!client.ok()) {
    std::cerr << "error: " << client.status().message() << "\n";
    return 2;
  }
  std::thread stopper([&signals, watcher = client->get()] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    watcher->Stop();
  });
  stopper.detach();

  sc::SandboxClient* watching = client->get();
  const absl::Status ended = (*client)->Watch(
      [&](const sc::VerifiedPolicy& verified) { return Apply(verified, policy_out); },
      [&](const sc::WatchEvent& event) {
        // A policy a previous run left in --policy-out, which this run never applied (so Watch cannot end
        // it), while the gateway refuses the watch, or streams a projection, that is expired or no longer
        // verifies: withdrawn (fail closed). Without
        // this a restart past its expiry or its key's revocation kept it enforced (review 115).
        if (!keep_expired &&
            (event.kind == sc::WatchEvent::kDisconnected || event.kind == sc::WatchEvent::kRejected) &&
            watching->current() == nullptr &&
            sc::EndsPolicyInForce(event.status) && std::filesystem::exists(policy_out)) {
          const absl::Status withdrawn = Withdraw(policy_out);
          Say(absl::StrCat("nothing verifiable replaces the policy a previous run left in force (", event.status.message(),
                           "): ", withdrawn.ok() ? "withdrawn: fail closed" : std::string(withdrawn.message())));
        }
        switch (event.kind) {
          case sc::WatchEvent::kConnected: std::cerr << "connected\n"; break;
          case sc::WatchEvent::kApplied: Say(absl::StrCat("applied ", event.digest)); break;
          case sc::WatchEvent::kRejected:
            Say(absl::StrCat("rejected ", event.digest, ": ", event.detail, " (last good kept)"));
            break;
          case sc::WatchEvent::kDisconnected:
            Say(absl::StrCat("disconnected (", event.detail, "), retrying in ", event.retry_in.count(), " ms"));
            break;
          case sc::WatchEvent::kReportFailed: Say(absl::StrCat("report failed: ", event.detail)); break;
          case sc::WatchEvent::kExpired: Say(absl::StrCat("expired ", event.digest, ": ", event.detail)); break;
          case sc::WatchEvent::kRevoked: Say(absl::StrCat("revoked ", event.digest, ": ", event.detail)); break;
        }
      },
      [&](const sc::VerifiedPolicy&) { return Withdraw(policy_out); });
  if (!ended.ok()) {
    std::cerr << "stopped: " << ended.message() << "\n";
    return 1;
  }
  return 0;
}
