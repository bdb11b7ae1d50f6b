#include "drivers/driver_kit/driver_service.h"

#include <openssl/rand.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "drivers/unix_server.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "trust/encoding.h"

namespace osh::driver_kit {
namespace {

constexpr char kSurface[] = "openshell.sandbox.v1";

std::string NewHandle() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();
  return absl::StrCat("h_", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes))));
}

void Log(const std::string& line) { std::cerr << line << std::endl; }


}  // namespace

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, grpc::Status status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

DriverService::DriverService(DriverOptions options, PolicySource source, SubjectCheck serves)
    : options_(std::move(options)), source_(std::move(source)), serves_(std::move(serves)) {
  ReadHandlesFile();
}

void DriverService::AddHandleLocked(const std::string& handle, const driver_v1::RuntimeContext& context,
                                    const std::string& key) {
  handles_[handle] = context;
  by_context_[trust::ContextDigest(context)] = handle;
  if (!key.empty() && options_.honour_idempotency_key) {
    by_key_[key] = handle;
    key_of_[handle] = key;
  }
}

void DriverService::ReadHandlesFile() {
  if (options_.handles_file.empty()) return;
  std::ifstream in(options_.handles_file);
  absl::MutexLock lock(&mu_);
  size_t restored = 0;
  // One handle per line: "<handle> <sandbox id, for people> <context, base64url> <idempotency key or ->",
  // read line by line: a line that is not four fields is skipped alone, never read out of step.
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::vector<std::string> fields = absl::StrSplit(line, ' ');
    std::string bytes;
    driver_v1::RuntimeContext context;
    if (fields.size() != 4 || fields[0].empty() || !absl::WebSafeBase64Unescape(fields[2], &bytes) ||
        !context.ParseFromString(bytes)) {
      Log(absl::StrCat("handles file ", options_.handles_file, ":", number, ": skipping an unreadable line"));
      continue;
    }
    AddHandleLocked(fields[0], context, fields[3] == "-" ? "" : fields[3]);
    ++restored;
  }
  if (restored > 0) Log(absl::StrCat("restored ", restored, " live handle(s) from ", options_.handles_file));
}

grpc::ServerUnaryReactor* DriverService::GetCapabilities(grpc::CallbackServerContext* ctx,
                                                         const driver_v1::GetCapabilitiesRequest*,
                                                         driver_v1::Capabilities* response) {
  response->set_driver_name(options_.driver_name);
  response->set_driver_version(options_.driver_version);
  response->set_api_version(1);
  response->add_supported_surfaces(kSurface);
  response->set_permits_mutation(false);
  response->set_signs_projections(options_.signing_key.has_value());
  if (options_.versioned) response->add_features("policy_version");
  if (options_.bind_context) response->add_features("context_binding");
  if (options_.expires_in_s > 0) response->add_features("expiry");
  if (options_.honour_idempotency_key) response->add_features("idempotent_acquire");
  return Finish(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* DriverService::AcquireHandle(grpc::CallbackServerContext* ctx,
                                                       const driver_v1::AcquireHandleRequest* request,
                                                       driver_v1::AcquireHandleResponse* response) {
  const auto& context = request->context();
  if (context.sandbox_id().empty() || context.user_subject().empty()) {
    return Finish(ctx, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "context.sandbox_id and context.user_subject are required"));
  }
  if (absl::Status served = serves_ ? serves_(context) : absl::OkStatus(); !served.ok()) {
    Log(absl::StrCat("acquire refused: sandbox=", context.sandbox_id(), " subject=", context.user_subject(), ": ",
                     served.message()));
    return Finish(ctx, grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(served.message())));
  }
  const std::string& key = request->idempotency_key();
  absl::MutexLock lock(&mu_);
  std::string handle;
  bool existing = false;
  if (!key.empty() && options_.honour_idempotency_key) {
    if (auto it = by_key_.find(key); it != by_key_.end()) {
      handle = it->second;
      existing = true;
    }
  }
  if (!existing && !options_.handle_per_acquire) {
    if (auto it = by_context_.find(trust::ContextDigest(context)); it != by_context_.end()) {
      handle = it->second;
      existing = true;
    }
  }
  if (!existing) {
    handle = NewHandle();
    AddHandleLocked(handle, context, key);
    WriteHandlesFileLocked();
  }
  response->set_handle(handle);
  Log(absl::StrCat("acquire: handle=", handle, " sandbox=", context.sandbox_id(), existing ? " (existing)" : "",
                   key.empty() ? "" : absl::StrCat(" key=", key)));
  return Finish(ctx, grpc::Status::OK);
}

absl::StatusOr<driver_v1::Projection> DriverService::Envelope(const SourcedPolicy& sourced,
                                                              const driver_v1::RuntimeContext& context) const {
  driver_v1::Projection p;
  p.set_surface_id(kSurface);
  p.set_body(policy::SerializeDeterministic(sourced.policy));
  p.set_policy_digest(policy::Sha256Hex(p.body()));
  p.set_policy_version(sourced.version);
  if (options_.bind_context) p.set_context_digest(trust::ContextDigest(context));
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  int64_t issued = now;
  if (options_.expires_in_s > 0) {
    // Re-issued at start and once half the lifetime is gone, not on every call (see issued_).
    const std::string key = absl::StrCat(trust::ContextDigest(context), " ", p.policy_digest(), " ", sourced.version);
    absl::MutexLock lock(&issued_mu_);
    auto it = issued_.find(key);
    if (it != issued_.end() && it->second <= now && now < it->second + options_.expires_in_s / 2) {
      issued = it->second;
    } else {
      if (issued_.size() >= 100000) issued_.clear();  // bounded: a cleared entry is only issued afresh
      issued_[key] = now;
    }
  }
  p.set_issued_at_unix(issued);
  if (options_.expires_in_s > 0) p.set_expires_at_unix(issued + options_.expires_in_s);
  for (const auto& [k, v] : sourced.audit_context) (*p.mutable_audit_context())[k] = v;
  if (options_.signing_key) {
    auto signature = options_.signing_key->Sign(trust::SignedBytes(p));
    if (!signature.ok()) return signature.status();
    p.set_signature(*signature);
    p.set_signing_key_id(options_.signing_key_id);
  }
  return p;
}

grpc::ServerUnaryReactor* DriverService::GetProjection(grpc::CallbackServerContext* ctx,
                                                       const driver_v1::GetProjectionRequest* request,
                                                       driver_v1::GetProjectionResponse* response) {
  driver_v1::RuntimeContext context;
  {
    absl::MutexLock lock(&mu_);
    auto it = handles_.find(request->handle());
    if (it == handles_.end()) return Finish(ctx, grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown handle"));
    context = it->second;
  }
  if (!request->surface_id().empty() && request->surface_id() != kSurface) {
    response->mutable_no_verified_policy()->set_reason(absl::StrCat("surface '", request->surface_id(), "' is not served"));
    return Finish(ctx, grpc::Status::OK);
  }
  auto sourced = source_(context);
  if (!sourced.ok()) {
    response->mutable_no_verified_policy()->set_reason(std::string(sourced.status().message()));
    return Finish(ctx, grpc::Status::OK);
  }
  auto projection = Envelope(*sourced, context);
  if (!projection.ok()) return Finish(ctx, grpc::Status(grpc::StatusCode::INTERNAL, std::string(projection.status().message())));
  *response->mutable_projection() = *std::move(projection);
  return Finish(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* DriverService::ReleaseHandle(grpc::CallbackServerContext* ctx,
                                                       const driver_v1::ReleaseHandleRequest* request,
                                                       driver_v1::ReleaseHandleResponse*) {
  absl::MutexLock lock(&mu_);
  auto it = handles_.find(request->handle());
  if (it == handles_.end()) {
    Log(absl::StrCat("release: handle=", request->handle(), " (unknown)"));
    return Finish(ctx, grpc::Status::OK);  // idempotent
  }
  if (auto by = by_context_.find(trust::ContextDigest(it->second)); by != by_context_.end() && by->second == it->first) {
    by_context_.erase(by);
  }
  if (auto k = key_of_.find(it->first); k != key_of_.end()) {
    by_key_.erase(k->second);
    key_of_.erase(k);
  }
  handles_.erase(it);
  WriteHandlesFileLocked();
  Log(absl::StrCat("release: handle=", request->handle()));
  return Finish(ctx, grpc::Status::OK);
}

void DriverService::WriteHandlesFileLocked() {
  if (options_.handles_file.empty()) return;
  std::string text;
  for (const auto& [handle, context] : handles_) {
    const auto key = key_of_.find(handle);
    // Fields never hold a space or a line break: the sandbox id (for people; any bytes but controls) has
    // its spaces, controls and '%' percent-encoded; a key that is not one plain word is not kept (the
    // handle is, without idempotency).
    const bool plain_key = key != key_of_.end() && !key->second.empty() &&
                           key->second.find_first_of(" \t\r\n") == std::string::npos;
    std::string id;
    for (const unsigned char c : context.sandbox_id()) {
      if (c <= 0x20 || c == '%' || c == 0x7f) {
        absl::StrAppend(&id, absl::StrFormat("%%%02X", c));
      } else {
        id += static_cast<char>(c);
      }
    }
    absl::StrAppend(&text, handle, " ", id, " ",
                    absl::WebSafeBase64Escape(context.SerializeAsString()), " ", plain_key ? key->second : "-", "\n");
  }
  // 0600 (handles and contexts are no one else's to read), flushed, renamed over, the folder flushed: a
  // crash leaves the old table or the new one, and an acknowledged handle survives it.
  if (absl::Status written = policy::WriteFileAtomically(options_.handles_file, text, 0600); !written.ok()) {
    Log(absl::StrCat("handles file: ", written.message(), " (live handles may be lost at a restart)"));
  }
}

absl::StatusOr<std::unique_ptr<grpc::Server>> ServeOnUnixSocket(const std::string& path, grpc::Service* service,
                                                                const std::string& socket_group) {
  std::optional<gid_t> group;
  if (!socket_group.empty()) {
    auto gid = drivers::ResolveGroup(socket_group);
    if (!gid.ok()) return gid.status();
    group = *gid;
  }
  grpc::ServerBuilder builder;
  builder.RegisterService(service);
  // The folder is the operator's: the gateway (perhaps another user) must reach the socket.
  return drivers::StartUnixServer(path, builder, drivers::SocketFolder::kAsIs, group);
}

void BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

void RunUntilStopped(grpc::Server* server, const std::string& name) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  Log(absl::StrCat(name, ": stopping"));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

absl::StatusOr<trust::PrivateKey> LoadPrivateKey(const std::string& path) {
  auto pem = policy::ReadFileToString(path);
  if (!pem.ok()) return pem.status();
  auto key = trust::PrivateKey::FromPem(*pem);
  if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", key.status().message()));
  return key;
}

}  // namespace osh::driver_kit
