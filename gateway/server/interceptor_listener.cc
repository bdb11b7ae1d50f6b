#include "gateway/server/interceptor_listener.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "drivers/unix_server.h"
#include "gateway/core/log.h"

namespace osh::gateway {

absl::StatusOr<std::unique_ptr<InterceptorListener>> InterceptorListener::Start(const Config& config,
                                                                                const CeilingGuard* ceiling,
                                                                                store::AuditLog* audit,
                                                                                store::InterceptorRecordStore* records,
                                                                                const ProviderProfileCatalogue* profiles,
                                                                                const store::Clock* clock,
                                                                                Metrics* metrics, Options options) {
  std::unique_ptr<InterceptorListener> listener(new InterceptorListener());
  listener->mode_ = config.interceptor_mode;
  if (options.front != nullptr && options.tls == nullptr) {
    return absl::InvalidArgumentError("interceptor_listen: TLS needs tls_cert and tls_key");
  }
  if (!config.interceptor_gateway_keys.empty()) {
    auto verifier = InterceptorTokenVerifier::Load(
        config.interceptor_gateway_keys, {config.interceptor_gateway_id, config.interceptor_audience});
    if (!verifier.ok()) return absl::InvalidArgumentError(absl::StrCat("interceptor_gateway_keys: ", verifier.status().message()));
    listener->verifier_ = *std::move(verifier);
  } else if (options.front != nullptr) {
    // Config validation refuses this; a TCP listener never serves without tokens.
    return absl::InvalidArgumentError("interceptor_listen: requires interceptor_gateway_keys");
  }
  if (config.interceptor_mode == "admit" && options.admission == nullptr) {
    return absl::InvalidArgumentError("interceptor_mode admit: no Policy subsystem to admit through");
  }
  listener->evaluator_ = std::make_unique<InterceptorEvaluator>(
      ceiling, audit, records,
      InterceptorEvaluator::Options{config.interceptor_audience, profiles,
                                    config.interceptor_mode == "admit" ? options.admission : nullptr,
                                    config.limits.context});
  listener->pool_ = std::make_unique<WorkerPool>(4);
  listener->service_ = std::make_unique<InterceptorService>(listener->evaluator_.get(), listener->verifier_.get(),
                                                            listener->pool_.get(), clock,
                                                            config.limits.max_interceptor_admissions);
  if (metrics != nullptr) {
    listener->service_->SetObserver([metrics](absl::string_view method, absl::string_view phase,
                                              absl::string_view decision, absl::Duration took) {
      metrics->ObserveInterceptorCall(method, phase, decision, took);
    });
  }

  std::optional<gid_t> group;
  const std::string& socket_path = config.interceptor_socket;
  if (!socket_path.empty()) {
    if (!config.interceptor_socket_group.empty()) {
      auto gid = drivers::ResolveGroup(config.interceptor_socket_group);
      if (!gid.ok()) return absl::InvalidArgumentError(absl::StrCat("interceptor_socket_group: ", gid.status().message()));
      group = *gid;
      const std::string folder = std::filesystem::absolute(socket_path).lexically_normal().parent_path().string();
      if (auto made = drivers::EnsureGroupEnterableDir(folder, *group); !made.ok()) return made;
    }
    if (auto prepared = drivers::PrepareServerSocketPath(
            socket_path, group.has_value() ? drivers::SocketFolder::kGroupEnterable : drivers::SocketFolder::kPrivate);
        !prepared.ok()) {
      return prepared;
    }
  }
  grpc::ServerBuilder builder;
  builder.RegisterService(listener->service_.get());
  listener->health_.Set("", true);
  ServeHealth(builder, &listener->health_, /*reflection=*/false);  // health and reflection need no token
  // README §1: pings every 10 s, also while idle, on one connection held for the OpenShell gateway's life.
  // The same over TCP: the settings are the server's, whichever listener a connection came in on.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, static_cast<int>(config.limits.handshake_timeout_s * 1000));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(config.limits.max_streams_per_connection));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 16 * 1024);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // An intercepted request is at most 1 MiB + 5 bytes upstream; its Struct envelope adds a little.
  builder.SetMaxReceiveMessageSize(2 << 20);
  grpc::ResourceQuota quota("interceptor-api");
  quota.Resize(config.limits.max_transport_memory_mb << 20);
  builder.SetResourceQuota(quota);
  int relay_port = 0;
  std::string relay_socket;
  if (options.front != nullptr) {
    // gRPC's TLS listener on a private Unix socket; the TcpFront relays each TCP connection to it byte for byte.
    relay_socket = absl::StrCat(std::filesystem::absolute(config.state_dir).lexically_normal().string(),
                                "/interceptor-tcp.sock");
    if (auto prepared = drivers::PrepareServerSocketPath(relay_socket); !prepared.ok()) return prepared;
    builder.AddListeningPort("unix:" + relay_socket, options.tls->credentials(), &relay_port);
  }
  if (!socket_path.empty()) listener->path_ = std::filesystem::absolute(socket_path).lexically_normal().string();
  listener->server_ = builder.BuildAndStart();
  if (listener->server_ == nullptr || (options.front != nullptr && relay_port == 0)) {
    return absl::UnavailableError(absl::StrCat("cannot start the server for ",
                                               listener->path_.empty() ? relay_socket : listener->path_));
  }
  if (options.front != nullptr) {
    ::chmod(relay_socket.c_str(), 0600);
    listener->front_ = std::move(options.front);
    TcpFront::Options front_options;
    // Each relayed connection costs three descriptors (two in the front, one in gRPC), as on admin_listen.
    front_options.max_connections = std::max<size_t>(16, options.max_connections / 6);
    front_options.max_per_peer = options.max_per_peer;
    // No byte rate per peer: the OpenShell gateway is one peer that sends every intercepted request.
    if (auto started = listener->front_->Start(relay_socket, std::move(front_options)); !started.ok()) {
      return absl::UnavailableError(absl::StrCat("interceptor_listen ", listener->front_->address(), ": ", started.message()));
    }
    listener->tcp_ = listener->front_->address();
  }
  const std::string mode = group.has_value() ? absl::StrCat("0660 for group ", config.interceptor_socket_group) : "0600";
  if (!socket_path.empty()) {
    UnixAcceptor::Options unix_options;
    unix_options.max_connections = options.max_connections;
    unix_options.max_per_peer = options.max_connections;
    unix_options.group = group;
    auto acceptor = UnixAcceptor::Start(listener->path_, listener->server_.get(), std::move(unix_options));
    if (!acceptor.ok()) return acceptor.status();
    listener->acceptor_ = *std::move(acceptor);
    LogInfo(absl::StrCat("interceptor: serving openshell.gateway_interceptor.v1.GatewayInterceptor on ", listener->path_,
                         " (", mode, "), mode ", config.interceptor_mode));
  }
  if (!listener->tcp_.empty()) {
    LogInfo(absl::StrCat("interceptor: serving openshell.gateway_interceptor.v1.GatewayInterceptor on ", listener->tcp_,
                         " with TLS (no client certificate asked: the token authenticates), mode ",
                         config.interceptor_mode));
  }
  if (listener->verifier_ != nullptr) {
    LogInfo(absl::StrCat("interceptor: callers must present the OpenShell gateway's extension token (iss ",
                         listener->verifier_->issuer(), ", aud ", config.interceptor_audience, "), verified with ",
                         listener->verifier_->summary(), " from ", config.interceptor_gateway_keys));
  } else {
    LogWarning(absl::StrCat("interceptor: interceptor_gateway_keys is unset: no caller token is asked; only the Unix "
                            "socket serves and its permissions (", mode, ") are the only check of who calls"));
  }
  return listener;
}

std::string InterceptorListener::Describe() const {
  if (tcp_.empty()) return path_;
  const std::string tcp = absl::StrCat(tcp_, " (TLS)");
  return path_.empty() ? tcp : absl::StrCat(path_, " and ", tcp);
}

void InterceptorListener::FillStatus(openshell::policy::gateway::v1::InterceptorStatus* out) const {
  out->set_mode(mode_);
  out->set_socket(path_);
  out->set_listen(tcp_);
  out->set_callers_authenticated(verifier_ != nullptr);
  const InterceptorService::EvaluateCounts counts = service_->evaluate_counts();
  out->set_evaluate_allowed(counts.allowed);
  out->set_evaluate_patched(counts.patched);
  out->set_evaluate_denied(counts.denied);
  out->set_unauthenticated(service_->unauthenticated());
  out->set_evaluate_overloaded(service_->overloaded());
  out->set_evaluate_admissions_full(service_->admissions_full());
  out->set_evaluate_expired(service_->expired());
}

void InterceptorListener::Stop(std::chrono::system_clock::time_point deadline) {
  acceptor_.reset();  // no new connections
  if (front_ != nullptr) front_->StopAccepting();  // its open connections are relayed until the drain ends
  if (server_ != nullptr) {
    server_->Shutdown(deadline);
    server_->Wait();
    server_.reset();
  }
  if (front_ != nullptr) {  // what the server wrote last reaches the TCP clients (a grace past the deadline)
    front_->AwaitConnectionsClosed(deadline);
  }
  front_.reset();
  if (pool_ != nullptr) pool_->Shutdown();
}

InterceptorListener::~InterceptorListener() { Stop(std::chrono::system_clock::now() + std::chrono::seconds(5)); }

}  // namespace osh::gateway
