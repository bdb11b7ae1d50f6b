#include "gateway/server/daemon.h"

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "builtin_driver/builtin_driver.h"
#include "common/descriptor_limit.h"
#include "drivers/unix_server.h"
#include "gateway/core/log.h"
#include "gateway/server/status_conversion.h"
#include "gateway/server/service_manager.h"
#include "policy/policy_file.h"
#include "store/open_store.h"
#include "trust/audit_vocabulary.h"
#include "trust/secure_path.h"

namespace osh::gateway {
namespace {

// A user setting (a name or a uid), as a uid in *out (left unset when the setting is); false, logged naming
// the setting, when there is no such user.
bool ResolveUserSetting(const char* key, const std::string& value, std::optional<uid_t>* out) {
  if (value.empty()) return true;
  auto uid = drivers::ResolveUser(value);
  if (!uid.ok()) {
    LogError(absl::StrCat(key, ": ", uid.status().message()));
    return false;
  }
  *out = *uid;
  return true;
}

constexpr char kAdmissionHealthService[] = "openshell.policy.gateway.v1.Admission";
// SERVING while the process runs, whatever the connection caps or the driver: a liveness probe asks this
// one (`""` goes NOT_SERVING at a connection cap, which any client can fill: review 110).
constexpr char kLivenessHealthService[] = "openshell.policy.gateway.v1.Liveness";

// Connections the HTTP listeners may hold open at once, taken from the descriptor budget: a few
// scrapers; the public log's readers.
constexpr size_t kMetricsListenConnections = 64;
constexpr size_t kLogListenConnections = 256;

size_t HttpListenerConnections(const Config& config) {
  const bool shared = !config.log_listen.empty() && config.log_listen == config.metrics_listen;
  size_t connections = 0;
  if (!config.metrics_listen.empty()) connections += shared ? kLogListenConnections : kMetricsListenConnections;
  if (!config.log_listen.empty() && !shared) connections += kLogListenConnections;
  return connections;
}

}  // namespace

ConnectionCaps ConnectionCapsFor(size_t descriptors, const Limits& limits, size_t http_connections) {
  constexpr size_t kFiles = 512;  // the database, the driver, the trust store, logs
  const size_t reserved = kFiles + http_connections;
  const size_t room = descriptors > reserved ? descriptors - reserved : 0;
  ConnectionCaps caps;
  std::vector<std::string> lowered;
  const size_t admin_most = std::max<size_t>(16, room / 2);
  caps.admin = limits.max_admin_connections != 0 ? limits.max_admin_connections : std::clamp<size_t>(descriptors / 8, 16, 256);
  if (caps.admin > admin_most) {
    lowered.push_back(absl::StrCat("max_admin_connections ", caps.admin, " lowered to ", admin_most));
    caps.admin = admin_most;
  }
  const size_t sandbox_most = room > caps.admin ? room - caps.admin : 64;
  caps.sandbox = limits.max_sandbox_connections != 0 ? limits.max_sandbox_connections : sandbox_most;
  if (caps.sandbox > sandbox_most) {
    lowered.push_back(absl::StrCat("max_sandbox_connections ", caps.sandbox, " lowered to ", sandbox_most));
    caps.sandbox = sandbox_most;
  }
  if (!lowered.empty()) {
    caps.lowered = absl::StrCat(absl::StrJoin(lowered, ", "), ": the descriptor limit is ", descriptors, " and ", kFiles,
                                " stay for files and the driver",
                                http_connections == 0 ? "" : absl::StrCat(", ", http_connections, " for the HTTP listeners"),
                                " (raise LimitNOFILE)");
  }
  return caps;
}

Daemon::Started Daemon::Start(const Config& config, const store::Clock* clock, std::function<void()> on_serving) {
  std::unique_ptr<Daemon> daemon(new Daemon(config, clock));
  daemon->on_serving_ = std::move(on_serving);
  for (int (Daemon::*step)() : {&Daemon::Build, &Daemon::PrepareTls, &Daemon::StartDriver, &Daemon::Serve}) {
    if (const int exit_code = (daemon.get()->*step)(); exit_code != 0) return {nullptr, exit_code};
  }
  return {std::move(daemon), 0};
}

int Daemon::Build() {
  trust::AcceptGroupWritableFolders(std::nullopt);  // this daemon's fs_group alone (tests run several)
  if (!config_.fs_group.empty()) {
    // Before any ownership check (the state folder's, the database's): a group the gateway runs with, never
    // root's, whose write permission on folders counts as the gateway's own.
    auto gid = drivers::ResolveGroup(config_.fs_group);
    if (!gid.ok()) {
      LogError(absl::StrCat("fs_group: ", gid.status().message()));
      return kExitConfig;
    }
    if (*gid == 0 || !trust::ProcessHasGroup(*gid)) {
      LogError(absl::StrCat("fs_group ", config_.fs_group, " (gid ", *gid, "): ",
                            *gid == 0 ? "root's group is never accepted" : "not a group this process runs with"));
      return kExitConfig;
    }
    trust::AcceptGroupWritableFolders(*gid);
    LogInfo(absl::StrCat("fs_group: folders group ", config_.fs_group, " (gid ", *gid,
                         ") may write count as the gateway's own"));
  }
  if (auto status = trust::EnsurePrivateDir(config_.state_dir); !status.ok()) {
    LogError(std::string(status.message()));
    return kExitStartup;
  }
  // The store takes the one-gateway lock and checks its folder (SQLite), and refuses a rolled-back
  // database unless the operator accepted it (both); see store::StoreOptions.
  store::StoreOptions options;
  options.clock = clock_;
  options.role = store::StoreRole::kGateway;
  options.exclusive = true;
  options.anchor_path = store::AnchorPathFor(config_.database, config_.state_dir);
  options.accept_state_rollback = config_.accept_state_rollback;
  options.notice = [](const std::string& notice) { LogWarning(notice); };
  options.commit_observer = [this](absl::Duration took) { metrics_.ObserveStoreCommit(took); };
  auto store = store::OpenStore(config_.database, options);
  if (!store.ok()) {
    LogError(absl::StrCat("database ", store::DisplayName(config_.database), ": ", store.status().message()));
    return kExitStartup;
  }
  store_ = *std::move(store);
  if (!config_.log_signing_key.empty()) {
    auto pem = trust::ReadPrivateKeyFile(config_.log_signing_key, "log_signing_key");
    if (!pem.ok()) {
      LogError(std::string(pem.status().message()));
      return kExitStartup;
    }
    LogSequencerOptions log_options;
    log_options.dir = (std::filesystem::path(config_.state_dir) / "log").string();
    log_options.origin = config_.log_origin;
    log_options.signing_key_pem = *std::move(pem);
    log_options.interval = absl::Milliseconds(config_.log_integrate_interval_ms);
    if (!config_.log_witnesses.empty()) {
      std::vector<LogWitnessConfig> witnesses;
      for (const std::string& item : config_.log_witnesses) witnesses.push_back(*ParseLogWitness(item));  // checked by ResolveConfig
      LogWitnesses::Options witness_options;
      witness_options.timeout = absl::Milliseconds(config_.log_witness_timeout_ms);
      auto created = LogWitnesses::Create(witnesses, witness_options);
      if (!created.ok()) {
        LogError(absl::StrCat("log_witnesses: ", created.status().message()));
        return kExitStartup;
      }
      (*created)->set_on_change([](const std::string& change) { LogWarning(absl::StrCat("verifiable log: ", change)); });
      log_options.witnesses = *std::move(created);
    }
    auto log = LogSequencer::Open(&store_->audit(), std::move(log_options));
    if (!log.ok()) {
      LogError(absl::StrCat("verifiable log (", config_.state_dir, "/log): ", log.status().message()));
      return kExitStartup;
    }
    log_ = *std::move(log);
    const LogSequencer::Published published = log_->current();
    LogInfo(absl::StrCat("verifiable log '", config_.log_origin, "': ", published.size, " entries, verifier key ",
                         log_->verifier_key(), config_.log_witnesses.empty() ? "" :
                         absl::StrCat(", ", config_.log_witnesses.size(), " witness(es)")));
    log_->Start([](const absl::Status& failed) { LogError(absl::StrCat("verifiable log: ", failed.message())); });
  }
  if (!config_.trust_store.empty()) {
    auto loaded = trust::TrustStore::Load(config_.trust_store);
    if (!loaded.ok()) {
      LogError(std::string(loaded.status().message()));
      return kExitStartup;
    }
    trust_store_ = std::make_shared<const trust::TrustStore>(*std::move(loaded));
    LogInfo(absl::StrCat("trust store ", config_.trust_store, ": ", trust_store_->keys().size(), " key(s), threshold ",
                         trust_store_->threshold()));
  } else {
    LogWarning("no trust store configured: projections are admitted with verification = none");
  }
  return 0;
}

int Daemon::PrepareTls() {
  if (config_.tls_cert.empty()) return 0;
  if (!config_.tls_client_ca.empty() && !config_.sandbox_client_ca.empty()) {
    // Config validation compares the paths; the same bundle under two names is refused here.
    auto admin_ca = policy::ReadFileToString(config_.tls_client_ca);
    auto sandbox_ca = policy::ReadFileToString(config_.sandbox_client_ca);
    if (admin_ca.ok() && sandbox_ca.ok() && *admin_ca == *sandbox_ca) {
      LogError(absl::StrCat("sandbox_client_ca ", config_.sandbox_client_ca, " holds the same CA bundle as tls_client_ca ",
                            config_.tls_client_ca,
                            ": any supervisor's certificate would be an operator's on admin_listen; give supervisors "
                            "a CA of their own"));
      return kExitConfig;
    }
  }
  struct Side {
    const std::string& listen;
    const std::string& client_ca;
    const char* ca_key;
    const char* name;
    std::unique_ptr<TlsListenerCredentials>* out;
  };
  static const std::string kNoClientCa;
  for (const Side& side : {Side{config_.admin_listen, config_.tls_client_ca, "tls_client_ca", "admin", &admin_tls_},
                           Side{config_.sandbox_listen, config_.sandbox_client_ca, "sandbox_client_ca", "sandbox",
                                &sandbox_tls_},
                           // The OpenShell gateway authenticates with its extension token, not a certificate.
                           Side{config_.interceptor_listen, kNoClientCa, "", "interceptor", &interceptor_tls_}}) {
    if (side.listen.empty()) continue;
    auto credentials = TlsListenerCredentials::Create({config_.tls_cert, config_.tls_key, side.client_ca},
                                                      absl::StrCat(config_.state_dir, "/tls/", side.name));
    if (!credentials.ok()) {
      LogError(absl::StrCat("TLS (", side.name, " listener): ", credentials.status().message()));
      return kExitConfig;
    }
    *side.out = *std::move(credentials);
    const TlsSummary& summary = (*side.out)->initial_summary();
    LogInfo(absl::StrCat("TLS (", side.name, " listener): certificate ", summary.subject, ", valid until ",
                         absl::FormatTime(absl::RFC3339_sec, absl::FromUnixSeconds(summary.not_after_unix), absl::UTCTimeZone()),
                         summary.client_certificates_required ? absl::StrCat("; client certificates required (", side.ca_key, ")")
                                                              : std::string("; no client certificate asked for")));
    if (summary.not_after_unix != 0 && summary.not_after_unix < clock_->NowUnix()) {
      LogWarning(absl::StrCat("TLS: the certificate in ", config_.tls_cert, " has expired: clients will refuse it"));
    }
  }
  return 0;
}

int Daemon::StartDriver() {
  if (!config_.driver_socket.empty()) {
    if (!config_.builtin_signing_key.empty()) {
      LogError("builtin_signing_key is for the builtin driver; it cannot be used with driver_socket");
      return kExitConfig;
    }
    drivers::RemoteDriverOptions options;
    options.socket_path = config_.driver_socket;
    options.connect_timeout_ms = config_.driver_connect_timeout_ms;
    options.call_timeout_ms = config_.driver_call_timeout_ms;
    if (!ResolveUserSetting("driver_socket_owner", config_.driver_socket_owner, &options.socket_owner)) {
      return kExitConfig;
    }
    options.accepted_surfaces = config_.accepted_surfaces;
    options.gateway_version = OSH_VERSION;
    LogInfo(absl::StrCat("connecting to the policy driver on ", config_.driver_socket, " (up to ",
                         config_.driver_connect_timeout_ms, " ms)"));
    auto started = drivers::RemoteDriver::Start(options);
    if (!started.ok()) {
      LogError(absl::StrCat("policy driver: ", started.status().message()));
      return kExitStartup;
    }
    remote_ = started->get();
    if (auto caps = remote_->GetCapabilities(); caps.ok()) {
      LogInfo(absl::StrCat("policy driver '", caps->driver_name(), "' ", caps->driver_version(), ": permits_mutation=",
                           caps->permits_mutation() ? "true" : "false", ", signs_projections=",
                           caps->signs_projections() ? "true" : "false"));
      if (trust_store_ == nullptr && !caps->signs_projections()) {
        LogWarning("the driver does not sign and no trust store is configured: nothing proves where policies come from");
      }
    } else {
      startup_driver_error_ = std::string(caps.status().message());
      LogError(absl::StrCat("POLICY DRIVER UNAVAILABLE at start-up (", config_.driver_socket, ": ",
                            startup_driver_error_, "): starting degraded; admissions fail closed until it answers"));
    }
    driver_ = *std::move(started);
    return 0;
  }
  std::optional<builtin_driver::SigningKey> signing_key;
  if (!config_.builtin_signing_key.empty()) {
    auto pem = trust::ReadPrivateKeyFile(config_.builtin_signing_key, "builtin_signing_key");
    if (!pem.ok()) {
      LogError(std::string(pem.status().message()));
      return kExitStartup;
    }
    auto key = trust::PrivateKey::FromPem(*pem);
    if (!key.ok()) {
      LogError(absl::StrCat("builtin_signing_key ", config_.builtin_signing_key, ": ", key.status().message()));
      return kExitStartup;
    }
    profile_signing_key_ = *key;
    signing_key = builtin_driver::SigningKey{*std::move(key), config_.builtin_signing_key_id};
  }
  auto builtin = builtin_driver::BuiltinDriver::Create(&store_->revisions(), std::move(signing_key),
                                                       config_.builtin_context_binding, clock_);
  if (!builtin.ok()) {
    LogError(absl::StrCat("builtin driver: ", builtin.status().message()));
    return kExitStartup;
  }
  driver_ = *std::move(builtin);
  return 0;
}

int Daemon::Serve() {
  core_ = std::make_unique<GatewayCore>(config_, store_.get(), driver_.get(), &registry_, trust_store_, clock_);
  if (profile_signing_key_.has_value()) core_->provider_profiles().SetSigningKey(*profile_signing_key_);
  auto loaded = core_->LoadAdmitted();
  if (!loaded.ok()) {
    LogError(absl::StrCat("loading admitted sandboxes: ", loaded.status().message()));
    return kExitStartup;
  }
  loaded_ = *loaded;
  if (!startup_driver_error_.empty() && !driver_->available()) {
    core_->OnDriverState(false, absl::StrCat("not reachable at start-up: ", startup_driver_error_));
  }
  core_->DeliverPendingReleases();

  pool_ = std::make_unique<WorkerPool>(8);
  driver_pool_ = std::make_unique<WorkerPool>(8);  // refreshes, reloads, admissions' refusals: they wait on the driver
  core_->SetBlockingPool(driver_pool_.get());  // admissions themselves are callbacks (GatewayCore::AdmitAsync)
  decisions_ = std::make_unique<EgressDecisions>(&registry_, &core_->clock());
  explainer_ = std::make_unique<ChangeExplainer>(&registry_, &core_->clock(), [core = core_.get()](const auto& r) {
    return core->GetPolicy(r);
  });
  admin_service_ =
      std::make_unique<AdminService>(core_.get(), pool_.get(), driver_pool_.get(), decisions_.get(), explainer_.get());
  // EvaluateEgress never ties up the pool every other admin call uses: two threads of its own, 256 waiting
  // at most, and a decision not started within 10 s is DEADLINE_EXCEEDED.
  decisions_pool_ = std::make_unique<WorkerPool>(2);
  admin_service_->SetDecisionsPool(decisions_pool_.get(), 256, absl::Seconds(10));
  reload_pool_ = std::make_unique<WorkerPool>(1);
  admin_service_->SetReloadPool(reload_pool_.get(), [this] { ReloadTls(); });
  mutation_pool_ = std::make_unique<WorkerPool>(2);  // policy changes: each waits for the re-projection before it
  admin_service_->SetMutationPool(mutation_pool_.get());
  registry_.SetWatchLimits(config_.limits.max_watchers_per_sandbox, config_.limits.max_watchers);
  sandbox_service_ =
      std::make_unique<SandboxService>(&registry_, core_.get(), pool_.get(), config_.limits.watch_backlog,
                                       absl::Seconds(config_.limits.watch_stall_s));
  admin_service_->SetMetrics(&metrics_);
  AuditFeed::Options feed_options;  // WatchAuditEvents (docs/audit.md, "The event stream")
  feed_options.backlog = config_.limits.audit_stream_backlog;
  feed_options.max_subscriptions = config_.limits.max_audit_streams;
  feed_options.stall = absl::Seconds(config_.limits.audit_stream_stall_s);
  audit_feed_ = std::make_unique<AuditFeed>(&store_->audit(), feed_options);
  admin_service_->SetAuditFeed(audit_feed_.get());
  if (config_.audit_syslog) {
    auto syslog = AuditSyslog::Start(audit_feed_.get(), &store_->audit(), config_.audit_syslog_socket);
    if (!syslog.ok()) {
      LogError(std::string(syslog.status().message()));
      return kExitStartup;
    }
    audit_syslog_ = *std::move(syslog);
  }
  admin_service_->SetLog(log_.get());
  admin_service_->SetInterceptorRecords(&store_->interceptor_records());
  admin_service_->SetStatusExtension([this](gateway_v1::GetStatusResponse* response) {
    if (const InterceptorListener* interceptor = interceptor_status_.load(); interceptor != nullptr) {
      interceptor->FillStatus(response->mutable_interceptor());
      if (const OpenShellPush* push = openshell_push_status_.load(); push != nullptr) {
        const OpenShellPush::Counts counts = push->counts();
        auto* out = response->mutable_interceptor();
        out->set_push_endpoint(config_.interceptor_openshell_endpoint);
        out->set_pushes_accepted(counts.pushed);
        out->set_pushes_refused(counts.refused);
        out->set_pushes_retried(counts.retried);
        out->set_pushes_in_flight(counts.in_flight);
      }
    }
  });
  // Who calls: the peer's uid on the admin socket (SO_PEERCRED, kept by the acceptor per descriptor),
  // the client certificate's subject, issuer and serial on admin_listen.
  admin_service_->SetCallerIdentity([this](const grpc::GenericCallbackServerContext& context) -> std::string {
    const std::string peer = context.peer();
    if (absl::StartsWith(peer, "fd:") && admin_.acceptor != nullptr) {
      int fd = -1;
      if (absl::SimpleAtoi(peer.substr(3), &fd)) {
        if (auto uid = admin_.acceptor->PeerUid(fd)) return absl::StrCat("uid:", *uid);
      }
    }
    if (auto auth = context.auth_context(); auth != nullptr) {
      if (const auto pem = auth->FindPropertyValues("x509_pem_cert"); !pem.empty()) {
        std::string actor = CertificateActor(std::string_view(pem.front().data(), pem.front().size()));
        if (!actor.empty()) return actor;
      }
      for (const char* property : {"x509_subject", "x509_common_name"}) {
        const auto values = auth->FindPropertyValues(property);
        if (!values.empty()) return absl::StrCat("x509:", std::string(values.front().data(), values.front().size()));
      }
    }
    return peer;
  });
  sandbox_service_->SetMetrics(&metrics_);
  sandbox_service_->SetLog(log_.get());
  if (log_ != nullptr) {
    log_->SetPublishedListener([service = sandbox_service_.get()](int64_t) { service->OnCheckpoint(); });
  }
  if (remote_ != nullptr) {
    remote_->SetCallObserver([this](const char* method, grpc::StatusCode code, absl::Duration took) {
      metrics_.ObserveDriverCall(method, StatusCodeName(code), took);
    });
  }
  // Server reflection (grpc.reflection.v1alpha) on the admin socket only (ServeHealth leaves it out of the
  // listeners that answer peers without credentials). It lists the typed services (health, reflection);
  // PolicyGateway is served generically, so it is not listed but is resolved by name (`grpcurl … describe
  // openshell.policy.gateway.v1.PolicyGateway`), as is every other service of the gateway's, SandboxService's too.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Connections are accepted by our own UnixAcceptor (see its header: gRPC 1.51's listener dies on
  // EMFILE), capped within the descriptor limit, raised to its hard limit first.
  const size_t descriptors = common::RaiseDescriptorLimit();
  const ConnectionCaps caps = ConnectionCapsFor(descriptors, config_.limits, HttpListenerConnections(config_));
  if (!caps.lowered.empty()) LogWarning(caps.lowered);
  const size_t admin_cap = caps.admin, sandbox_cap = caps.sandbox;
  const int idle_ms = static_cast<int>(config_.limits.connection_idle_timeout_s * 1000);
  const auto PerPeer = [this](size_t cap) {
    return config_.limits.max_connections_per_peer != 0 ? config_.limits.max_connections_per_peer
                                                        : std::max<size_t>(1, cap / 4);
  };
  auto listen = [this, idle_ms, PerPeer](const std::string& socket_path, const std::string& tcp_listen, grpc::Service* typed,
                                grpc::CallbackGenericService* generic, size_t cap, bool sandbox, Listener* out) {
    std::optional<gid_t> group;
    if (sandbox && !config_.sandbox_socket_group.empty()) {
      auto gid = drivers::ResolveGroup(config_.sandbox_socket_group);
      if (!gid.ok()) {
        LogError(absl::StrCat("sandbox_socket_group: ", gid.status().message()));
        return false;
      }
      group = *gid;
      const std::string folder = std::filesystem::absolute(socket_path).lexically_normal().parent_path().string();
      if (auto made = drivers::EnsureGroupEnterableDir(folder, *group); !made.ok()) {
        LogError(std::string(made.message()));
        return false;
      }
    }
    if (auto prepared = drivers::PrepareServerSocketPath(socket_path, group.has_value()
                                                                          ? drivers::SocketFolder::kGroupEnterable
                                                                          : drivers::SocketFolder::kPrivate);
        !prepared.ok()) {
      LogError(std::string(prepared.message()));
      return false;
    }
    grpc::ServerBuilder builder;
    if (typed != nullptr) builder.RegisterService(typed);
    out->health = std::make_unique<HealthService>();
    // The Admission health service answers from the first connection on (not "unknown service" until
    // UpdateHealth below runs): a client that waits for the socket and then asks gets SERVING or NOT_SERVING.
    out->health->Set("", true);
    out->health->Set(kAdmissionHealthService, driver_->available() && store_->replication().reachable());
    out->health->Set(kLivenessHealthService, true);
    ServeHealth(builder, out->health.get(), /*reflection=*/!sandbox);
    if (generic != nullptr) builder.RegisterCallbackGenericService(generic);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, idle_ms);  // idle peers are let go
    // What one unauthenticated peer can make gRPC hold (issue 25.6): a handshake deadline, a bound on
    // streams per connection, a memory quota per listener, and (sandbox API) requests no larger than a report.
    builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                               static_cast<int>(config_.limits.handshake_timeout_s * 1000));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                               static_cast<int>(config_.limits.max_streams_per_connection));
    builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 16 * 1024);
    // Keepalive (review 113): clients ping a quiet watch (sandbox_client/endpoint.h, every 20 s by default);
    // gRPC's server default takes a ping more often than every 5 minutes without data for a strike and
    // closes the connection at the third. One every 2.5 s is accepted: half the client's shortest interval
    // (5 s), so a ping a timer sends a little early is never a strike (review 116). The gateway pings too, while a call
    // is open: a watch whose peer vanished without a reset is ended (its stream and memory freed) within
    // 80 s instead of held until TCP gives up.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 2500);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    grpc::ResourceQuota quota(sandbox ? "sandbox-api" : "admin-api");
    quota.Resize(config_.limits.max_transport_memory_mb << 20);
    builder.SetResourceQuota(quota);
    if (sandbox) builder.SetMaxReceiveMessageSize(static_cast<int>(config_.limits.sandbox_request_bytes()));
    // gRPC sets SO_REUSEPORT by default: a second gateway could then bind the same port and the kernel
    // would split connections between them. Off: a taken port is an error at start.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    int relay_port = 0;
    TlsListenerCredentials* tls = sandbox ? sandbox_tls_.get() : admin_tls_.get();
    if (tls != nullptr && !sandbox) {
      // A client certificate is checked at the handshake only: an admin_listen connection made before the
      // client CA was rotated (or a certificate expired) stayed authorized for as long as it lived (review
      // 117). Asked to go after max_connection_age_s (GOAWAY): calls open on it go on (no grace limit: an
      // audit stream is not cut), new calls open a new connection and meet the CA in force then. Not on
      // sandbox_listen: a supervisor is its handle's holder, and each GOAWAY would leave it a second
      // connection beside its watch's (against max_connections_per_peer).
      builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                                 static_cast<int>(std::min<int64_t>(config_.limits.max_connection_age_s * 1000, INT32_MAX)));
    }
    std::string relay_socket;
    if (!tcp_listen.empty()) {
      // TCP is accepted by our TcpFront (see its header: caps, per-peer share, EMFILE-safe, no SO_REUSEPORT),
      // which relays each connection to gRPC's TLS listener on a private Unix socket in the state folder.
      auto front = TcpFront::Bind(tcp_listen);
      if (!front.ok()) {
        LogError(absl::StrCat(sandbox ? "sandbox_listen: " : "admin_listen: ", front.status().message()));
        listen_error_ = kExitConfig;  // a taken or bad address: the operator's to fix
        return false;
      }
      out->front = *std::move(front);
      relay_socket = absl::StrCat(std::filesystem::absolute(config_.state_dir).lexically_normal().string(), "/",
                                  sandbox ? "sandbox" : "admin", "-tcp.sock");
      if (auto prepared = drivers::PrepareServerSocketPath(relay_socket); !prepared.ok()) {
        LogError(std::string(prepared.message()));
        return false;
      }
      // Config validation guarantees: TLS whenever tls_cert is set, else a loopback sandbox listener.
      builder.AddListeningPort("unix:" + relay_socket,
                               tls != nullptr ? tls->credentials() : grpc::InsecureServerCredentials(), &relay_port);
    }
    out->path = std::filesystem::absolute(socket_path).lexically_normal().string();
    out->server = builder.BuildAndStart();
    if (out->server == nullptr || (!tcp_listen.empty() && relay_port == 0)) {
      LogError(absl::StrCat("cannot start the server for ", out->path,
                            tcp_listen.empty() ? "" : absl::StrCat(" and ", relay_socket)));
      return false;
    }
    if (!tcp_listen.empty()) {
      ::chmod(relay_socket.c_str(), 0600);
      TcpFront::Options front_options;
      // Each relayed connection costs three descriptors (two in the front, one in gRPC): the socket's
      // share of the descriptor budget is split between its Unix socket and its TCP front.
      front_options.max_connections = std::max<size_t>(16, cap / 6);
      front_options.max_per_peer = PerPeer(front_options.max_connections);
      // The sandbox API takes no certificate (unless sandbox_client_ca): bound what one address can send
      // (rapid reset). The admin API needs a client certificate before any HTTP/2 frame is read.
      if (sandbox) front_options.max_bytes_per_peer_per_s = config_.limits.max_sandbox_peer_kib_per_s * 1024;
      if (sandbox) front_options.on_state = [this](bool accepting) { SetSandboxListenerHealth(accepting, /*tcp=*/true); };
      if (auto started = out->front->Start(relay_socket, std::move(front_options)); !started.ok()) {
        LogError(absl::StrCat(tcp_listen, ": ", started.message()));
        return false;
      }
      cap = std::max<size_t>(16, cap / 2);
      out->tcp = out->front->address();
      if (tls != nullptr) {
        const std::string& ca = sandbox ? config_.sandbox_client_ca : config_.tls_client_ca;
        LogInfo(absl::StrCat(sandbox ? "sandbox" : "admin", " API: listening on ", out->tcp, " with TLS",
                             ca.empty() ? "" : (sandbox ? " and client certificates (sandbox_client_ca)"
                                                        : " and client certificates (tls_client_ca)")));
      } else {
        LogWarning(absl::StrCat("sandbox API: listening on ", out->tcp,
                                " in PLAINTEXT (loopback, no tls_cert): for development only; sandbox handles cross "
                                "this connection unencrypted"));
      }
    }
    UnixAcceptor::Options options;
    options.max_connections = cap;
    options.max_per_peer = PerPeer(cap);
    options.group = group;
    if (group.has_value()) {
      LogInfo(absl::StrCat("sandbox socket ", out->path, ": 0660 for group ", config_.sandbox_socket_group, " (gid ",
                           *group, ")"));
    }
    if (sandbox) options.on_state = [this](bool accepting) { SetSandboxListenerHealth(accepting, /*tcp=*/false); };
    auto acceptor = UnixAcceptor::Start(out->path, out->server.get(), std::move(options));
    if (!acceptor.ok()) {
      LogError(std::string(acceptor.status().message()));
      return false;
    }
    out->acceptor = *std::move(acceptor);
    return true;
  };
  if (on_serving_) on_serving_();
  if (!listen(config_.admin_socket, config_.admin_listen, nullptr, admin_service_.get(), admin_cap, false, &admin_) ||
      !listen(config_.sandbox_socket, config_.sandbox_listen, sandbox_service_.get(), nullptr, sandbox_cap, true,
              &sandbox_)) {
    return listen_error_;  // the destructor stops what did start
  }
  if (!config_.interceptor_socket.empty() || !config_.interceptor_listen.empty()) {
    InterceptorListener::Options interceptor_options;
    interceptor_options.max_connections = admin_cap;
    interceptor_options.max_per_peer = PerPeer(std::max<size_t>(16, admin_cap / 6));
    if (!config_.interceptor_listen.empty()) {
      auto front = TcpFront::Bind(config_.interceptor_listen);
      if (!front.ok()) {
        LogError(absl::StrCat("interceptor_listen: ", front.status().message()));
        return kExitConfig;  // a taken or bad address: the operator's to fix
      }
      interceptor_options.front = *std::move(front);
      interceptor_options.tls = interceptor_tls_.get();
    }
    if (config_.interceptor_mode == "admit") {
      interceptor_admission_ = std::make_unique<CoreInterceptorAdmission>(core_.get(), &registry_);
      interceptor_options.admission = interceptor_admission_.get();
    }
    auto interceptor = InterceptorListener::Start(config_, &core_->gate().ceiling(), &store_->audit(),
                                                 &store_->interceptor_records(), &core_->provider_profiles(), clock_,
                                                 &metrics_, std::move(interceptor_options));
    if (!interceptor.ok()) {
      LogError(absl::StrCat("interceptor: ", interceptor.status().message()));
      return interceptor.status().code() == absl::StatusCode::kInvalidArgument ? kExitConfig : kExitStartup;
    }
    interceptor_ = *std::move(interceptor);
    interceptor_status_.store(interceptor_.get());
    if (config_.interceptor_mode == "admit" && config_.interceptor_openshell_endpoint.empty()) {
      LogWarning("interceptor: admit mode without interceptor_openshell_endpoint: a sandbox whose projection changes "
                 "keeps its old policy in the OpenShell gateway (nothing is pushed)");
    } else if (config_.interceptor_mode == "admit") {
      OpenShellPush::Options push_options;
      push_options.endpoint = config_.interceptor_openshell_endpoint;
      push_options.token_file = config_.interceptor_openshell_token_file;
      if (!ResolveUserSetting("interceptor_openshell_socket_owner", config_.interceptor_openshell_socket_owner,
                              &push_options.socket_owner)) {
        return kExitConfig;
      }
      push_options.ca = config_.interceptor_openshell_ca;
      push_options.client_cert = config_.interceptor_openshell_client_cert;
      push_options.client_key = config_.interceptor_openshell_client_key;
      push_options.metrics = &metrics_;
      push_options.record_pushed = [evaluator = interceptor_->evaluator()](
                                       const std::string& key, const openshell::sandbox::v1::SandboxPolicy& pushed) {
        return evaluator->RecordPushed(key, pushed);
      };
      auto push = OpenShellPush::Start(std::move(push_options), interceptor_admission_.get(),
                                       &store_->interceptor_records());
      if (!push.ok()) {
        LogError(absl::StrCat("interceptor: ", push.status().message()));
        return push.status().code() == absl::StatusCode::kInvalidArgument ? kExitConfig : kExitStartup;
      }
      openshell_push_ = *std::move(push);
      openshell_push_status_.store(openshell_push_.get());
      registry_.SetProjectionObserver([push = openshell_push_.get()](const std::string& id) { push->Notify(id); });
      openshell_push_->CatchUp();  // after the observer: no change falls between the two
      LogInfo(absl::StrCat("interceptor: changed projections are pushed to the OpenShell gateway at ",
                           config_.interceptor_openshell_endpoint));
    }
  }
  LogInfo(absl::StrCat("connections: at most ", sandbox_cap, " on the sandbox socket and ", admin_cap,
                       " on the admin socket (descriptor limit ", descriptors, "), of which one peer process may hold ",
                       PerPeer(sandbox_cap), " and ", PerPeer(admin_cap), "; idle ones close after ",
                       config_.limits.connection_idle_timeout_s, " s"));
  if (remote_ != nullptr) {
    // Runs on the monitor thread, or on the thread whose driver call found it gone. The queued releases
    // go to a worker: delivered here, the admission that reconnected the driver (or the monitor, its probe
    // and its retries) waited for the whole queue, each release up to a call timeout (review 109).
    remote_->SetStateListener([this](bool available, const std::string& detail) {
      UpdateHealth();
      core_->OnDriverState(available, detail);
      // At most one delivery queued: each "back" while one waits would hold another of the admissions'
      // workers on the delivery's lock (review 111). One that starts takes everything queued by then; the
      // refresh scheduler's tick catches what comes later.
      if (available && !release_delivery_queued_.exchange(true)) {
        driver_pool_->Submit([this] {
          core_->DeliverPendingReleases();
          release_delivery_queued_ = false;  // after: one queued or running at a time (review 112)
        });
      }
    });
  }
  store_->replication().SetReachabilityListener([this](bool reachable) {
    if (reachable) {
      LogInfo(absl::StrCat("database ", store::DisplayName(config_.database), ": reachable again; admitting"));
    } else {
      LogError(absl::StrCat("database ", store::DisplayName(config_.database),
                            ": unreachable; admissions and changes are refused until it answers (fetches go on)"));
    }
    UpdateHealth();
  });
  UpdateHealth();
  scheduler_ = std::make_unique<RefreshScheduler>(core_.get(), &registry_, driver_.get(), config_.refresh_interval_s);
  // Loaded sandboxes are served as soon as the sockets answer, each re-verified on first use; this pass
  // re-verifies the rest in the background.
  verifier_ = std::thread([this] { core_->VerifyLoaded(); });
  // Once a minute: handle-guessing (sandbox calls refused for a wrong handle) is logged and audited, so
  // it never goes unseen.
  housekeeping_thread_ = std::thread([this] {
    absl::Time last_report = absl::Now();
    while (!stop_housekeeping_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      core_->AuditPendingDriverState();
      core_->AuditHeldMutationRefusals();
      if (const size_t cancelled = sandbox_service_->CancelStalledWatches(absl::Now()); cancelled > 0) {
        LogInfo(absl::StrCat("watch streams: cancelled ", cancelled, " watch stream(s) ended while a write waited ",
                             config_.limits.watch_stall_s, " s or more on a reader that took nothing"));
      }
      if (absl::Now() - last_report >= kAuthFailureWindow) {
        ReportAuthFailures(absl::Now() - last_report);
        last_report = absl::Now();
      }
    }
    ReportAuthFailures(absl::Now() - last_report);
    core_->AuditHeldMutationRefusals(/*at_stop=*/true);  // the servers are down: the last count is final
  });
  const std::string log_dir = (std::filesystem::path(config_.state_dir) / "log").string();
  const bool log_shares_metrics = !config_.log_listen.empty() && config_.log_listen == config_.metrics_listen;
  if (!config_.metrics_listen.empty()) {
    MetricsServer::Options metrics_options;
    metrics_options.allow = absl::StrSplit(config_.metrics_allow, ',', absl::SkipWhitespace());
    metrics_options.max_connections = log_shares_metrics ? kLogListenConnections : kMetricsListenConnections;
    if (log_shares_metrics) metrics_options.log_dir = log_dir;
    auto started = MetricsServer::Start(config_.metrics_listen, [this] { return RenderMetrics(); }, metrics_options);
    if (!started.ok()) {
      LogError(std::string(started.status().message()));
      return kExitConfig;  // a taken or bad address: the operator's to fix (exit 2, as a taken TCP listener)
    }
    metrics_server_ = *std::move(started);
    LogInfo(absl::StrCat("metrics: serving ", metrics_server_->url(), log_shares_metrics ? " and the verifiable log" : ""));
  }
  if (!config_.log_listen.empty() && !log_shares_metrics) {
    MetricsServer::Options log_options;  // public: anyone may audit the log
    log_options.log_dir = log_dir;
    log_options.max_connections = kLogListenConnections;
    log_options.name = "log_listen";
    auto started = MetricsServer::Start(config_.log_listen, nullptr, log_options);
    if (!started.ok()) {
      LogError(std::string(started.status().message()));
      return kExitConfig;
    }
    log_server_ = *std::move(started);
    LogInfo(absl::StrCat("verifiable log: serving ", log_server_->url(), "checkpoint and tile/..."));
  }
  const std::string serving = absl::StrCat("serving: driver ", driver_->kind(), ", ", loaded_,
                                           " admitted sandbox(es), admin ", admin_.path,
                                           admin_.tcp.empty() ? "" : absl::StrCat(" and ", admin_.tcp), ", sandbox ", sandbox_.path,
                                           sandbox_.tcp.empty() ? "" : absl::StrCat(" and ", sandbox_.tcp),
                                           interceptor_ == nullptr ? "" : absl::StrCat(", interceptor ", interceptor_->Describe()),
                                           ", database ", store::DisplayName(config_.database));
  LogInfo(serving);
  NotifyReady(serving);  // a Type=notify unit is active from here
  core_->CatchUpReprojections();
  return 0;
}

std::string Daemon::RenderMetrics() {
  Metrics::Snapshot snapshot;
  const std::optional<gateway_v1::GetStatusResponse> status =
      metrics_status_.Get([this]() -> std::optional<gateway_v1::GetStatusResponse> {
        auto fresh = core_->GetStatus();
        if (!fresh.ok()) return std::nullopt;
        return *std::move(fresh);
      });
  if (status.has_value()) {
    snapshot.admitted_sandboxes = status->admitted_sandboxes();
    snapshot.watchers = status->watchers();
    snapshot.driver_up = driver_->available();
    snapshot.pending_releases = status->pending_releases();
    snapshot.reprojections_pending = status->reprojections_pending();
    snapshot.refresh_errors = status->refresh_errors();
    snapshot.revoked_sandboxes = status->revoked_sandboxes();
    snapshot.possibly_leaked_handles = status->possibly_leaked_handles();
    snapshot.database_reachable = status->database_reachable();
    snapshot.live_replicas = status->live_replicas();
    snapshot.feed_changes_behind = status->feed_changes_behind();
    snapshot.feed_read_age_ms = status->feed_read_age_ms();
    snapshot.sandboxes_by_drift = drift_counts_.Get([this] { return core_->CountByDrift(); });
    snapshot.audit_streams = audit_feed_ != nullptr ? audit_feed_->subscriptions() : 0;
    for (const auto& key : status->trust_keys()) {
      snapshot.trust_keys.push_back({key.key_id(), key.not_after_unix(), key.revoked()});
    }
  }
  const store::StoreStats stats = store_->Stats();
  snapshot.audit_head_seq = stats.audit_head_seq;
  snapshot.store_transactions = stats.transactions;
  snapshot.store_writes = stats.writes;
  return metrics_.Render(snapshot);
}

void Daemon::SetSandboxListenerHealth(bool accepting, bool tcp) {
  absl::MutexLock lock(&health_mu_);
  (tcp ? sandbox_tcp_accepting_ : sandbox_unix_accepting_) = accepting;
  accepting = sandbox_tcp_accepting_ && sandbox_unix_accepting_;
  for (auto* health : {admin_.health.get(), sandbox_.health.get()}) {
    if (health != nullptr) health->Set("", accepting);
  }
}

void Daemon::UpdateHealth() {
  absl::MutexLock lock(&health_mu_);
  for (auto* health : {admin_.health.get(), sandbox_.health.get()}) {
    if (health != nullptr) health->Set(kAdmissionHealthService, driver_->available() && store_->replication().reachable());
  }
}

int Daemon::ServeUntilStopped() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  for (;;) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      RequestTrustStoreReload();
      continue;
    }
    LogInfo(absl::StrCat(signal_number == SIGTERM ? "SIGTERM" : "SIGINT", ": draining"));
    NotifyStopping();
    break;
  }
  Stop();
  LogInfo("stopped");
  return 0;
}

void Daemon::RequestTrustStoreReload() {
  // Coalesced: at most one reload runs and one more is pending, however many SIGHUPs arrive — a burst
  // of them must not occupy the worker pool that admin calls and shutdown need.
  if (reloads_requested_.fetch_add(1) > 0) {
    LogInfo("SIGHUP: a trust-store reload is already under way; one more will follow it");
    return;
  }
  const bool tls = admin_tls_ != nullptr || sandbox_tls_ != nullptr || interceptor_tls_ != nullptr;
  if (config_.trust_store.empty()) {
    // Said either way: an operator who sent SIGHUP sees what it did.
    LogInfo(tls ? "SIGHUP: no trust store is configured (trust_store is unset); reloading the TLS certificates"
                : "SIGHUP: no trust store is configured (trust_store is unset) and no TLS listener: nothing to reload");
  } else {
    LogInfo(tls ? "SIGHUP: reloading the trust store and the TLS certificates" : "SIGHUP: reloading the trust store");
  }
  reload_pool_->Submit([this] {
    NotifyReloading();
    uint64_t seen = 0;
    std::string outcome;
    do {
      seen = reloads_requested_.load();
      std::vector<std::string> parts;
      if (!config_.trust_store.empty()) {
        const auto reloaded = core_->ReloadTrustStore();  // logs and audits either way
        parts.push_back(reloaded.ok() ? "trust store reloaded"
                                      : absl::StrCat("trust store NOT reloaded, the last good stays: ",
                                                     reloaded.status().message()));
      }
      if (const int failed = ReloadTls(); failed > 0) {
        parts.push_back(absl::StrCat("TLS reload failed for ", failed, " listener(s), the last good certificate stays"));
      } else if (admin_tls_ != nullptr || sandbox_tls_ != nullptr || interceptor_tls_ != nullptr) {
        parts.push_back("TLS reloaded");
      }
      outcome = parts.empty() ? "nothing to reload" : absl::StrJoin(parts, "; ");
    } while (reloads_requested_.fetch_sub(seen) != seen);
    // systemd shows this (`systemctl status`): a refused reload is said, not reported as done (review 110).
    NotifyReloaded(absl::StrCat("serving (", outcome, ")"));
  });
}

int Daemon::ReloadTls() {
  int failed = 0;
  for (auto [tls, name] : {std::pair{admin_tls_.get(), "admin"}, std::pair{sandbox_tls_.get(), "sandbox"},
                           std::pair{interceptor_tls_.get(), "interceptor"}}) {
    if (tls == nullptr) continue;
    auto reloaded = tls->Reload();
    if (!reloaded.ok()) {
      LogError(absl::StrCat("TLS reload failed, the last good certificate stays in use (", name, " listener): ",
                            reloaded.status().message()));
      ++failed;
      continue;
    }
    LogInfo(absl::StrCat("TLS reloaded: certificate ", reloaded->subject, " (", name, " listener), valid until ",
                         absl::FormatTime(absl::RFC3339_sec, absl::FromUnixSeconds(reloaded->not_after_unix),
                                          absl::UTCTimeZone()),
                         " (new connections use it within a second; open ones keep theirs)"));
  }
  return failed;
}

void Daemon::Stop() {
  if (stopped_) return;
  stopped_ = true;
  metrics_server_.reset();  // scrapes read the core: they end first
  log_server_.reset();
  for (Listener* listener : {&admin_, &sandbox_}) {  // no new connections
    listener->acceptor.reset();
    // The TCP front's open connections are relayed until the servers are done with them (below).
    if (listener->front != nullptr) listener->front->StopAccepting();
  }
  // One deadline for every server: calls in progress get 5 s in all, not 5 s per server.
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  registry_.SetProjectionObserver(nullptr);
  if (openshell_push_ != nullptr) openshell_push_->Stop();  // cancels its calls (they may wait on our own interceptor)
  if (interceptor_ != nullptr) interceptor_->Stop(deadline);  // drains its calls: they read the ceiling and append to the audit log
  if (store_ != nullptr) store_->replication().SetReachabilityListener(nullptr);  // it updates the servers' health
  // The sequencer outlives the sandbox service: it tells it of checkpoints no more.
  if (log_ != nullptr) log_->SetPublishedListener(nullptr);
  registry_.CloseAllWatchers();
  if (audit_feed_ != nullptr) audit_feed_->Close();  // audit streams end UNAVAILABLE gateway_stopping
  audit_syslog_.reset();
  for (auto* server : {admin_.server.get(), sandbox_.server.get()}) {
    if (server != nullptr) server->Shutdown(deadline);
  }
  for (auto* server : {admin_.server.get(), sandbox_.server.get()}) {
    if (server != nullptr) server->Wait();
  }
  // The servers closed their side of every connection; the fronts pass on what is still in flight to the
  // TCP clients (a response, the final GOAWAY) before they close: until then, or a short grace past the
  // drain's deadline.
  for (Listener* listener : {&admin_, &sandbox_}) {
    if (listener->front != nullptr) listener->front->AwaitConnectionsClosed(deadline);
    listener->front.reset();
  }
  interceptor_status_.store(nullptr);  // no GetStatus runs any more
  openshell_push_status_.store(nullptr);
  interceptor_.reset();
  openshell_push_.reset();
  // Quiesce every thread that may still touch the servers, the core or the driver, in order.
  if (core_ != nullptr) core_->StopVerifying();
  if (verifier_.joinable()) verifier_.join();
  scheduler_.reset();
  if (remote_ != nullptr) {
    remote_->Stop();
    remote_->SetStateListener(nullptr);
    if (const int64_t left = remote_->async_calls_under_way(); left > 0) {
      LogError(absl::StrCat("policy driver: ", left,
                            " call(s) still unanswered past their deadlines at shutdown; exiting without them"));
    }
  }
  if (driver_pool_ != nullptr) driver_pool_->Shutdown();
  if (decisions_pool_ != nullptr) decisions_pool_->Shutdown();
  if (reload_pool_ != nullptr) reload_pool_->Shutdown();
  if (mutation_pool_ != nullptr) mutation_pool_->Shutdown();
  if (pool_ != nullptr) pool_->Shutdown();
  if (housekeeping_thread_.joinable()) {
    stop_housekeeping_.Notify();
    housekeeping_thread_.join();
  }
}

void Daemon::ReportAuthFailures(absl::Duration window) {
  if (sandbox_service_ == nullptr || core_ == nullptr) return;
  const SandboxService::AuthFailures failed = sandbox_service_->TakeAuthFailures();
  if (failed.total() == 0) return;
  const std::string what =
      absl::StrCat(failed.total(), " sandbox call(s) refused for a wrong, revoked or missing handle in the last ",
                   absl::ToInt64Seconds(window), " s (GetProjection ", failed.get, ", WatchProjection ", failed.watch,
                   ", ReportPolicyStatus ", failed.report, ")");
  LogWarning(what);
  core_->RecordAuthenticationFailures(what);
}

Daemon::~Daemon() { Stop(); }

}  // namespace osh::gateway
