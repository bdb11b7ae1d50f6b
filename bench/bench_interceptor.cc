// The OpenShell gateway interceptor (issue 28) on a real policy-gateway process: the interceptor on its
// Unix socket with caller authentication (an Ed25519 PEM gateway key; every call carries the same EdDSA
// bearer JWT, as the OpenShell gateway reuses one until it renews it), a trust store, a builtin signing key that signs the
// provider profiles, a signed ceiling of --ceiling-entries network rules and --profiles signed profiles.
//  1. SnapshotProviderProfiles from client threads against a bare gRPC echo (in this process, same socket
//     kind) that returns the same snapshot bytes, alternating rounds, medians: the ratio (target >= 0.8).
//  2. Evaluate, validate phase, of CreateSandbox with a --policy-entries policy and two providers (their
//     layers composed from the catalogue) against the ceiling, one call at a time: --candidates distinct
//     candidates each the first time, then each again (seen before); p50/p99 of each (targets: p99 <= 25
//     ms first time, <= 2 ms seen before), beside the echo's Evaluate of the same payload.
//  3. Admit mode (a second gateway, interceptor_mode admit, the builtin driver signing with its key):
//     CreateSandbox's modify phase — an admission through the Policy subsystem, the composed check, the
//     patch and the interception's own audit event — against AdmitSandbox through the same driver, one
//     call at a time (p50) and from client threads (calls/s), alternating rounds: the time ratio (target
//     <= 1.2).
//  4. Provider-profile changes (--records > 0): a third gateway whose database holds --records interceptor
//     records naming p-0 (--record-policies distinct policies), --changes sets of p-0 timed against the
//     catalogue's setup sets with no record, and an admission thread's latency during them; with
//     --records-database postgresql the third gateway's database is a throw-away PostgreSQL cluster's
//     (where a change also reads, inside its transaction, the records written since its first check).
// Every candidate is inside the ceiling (an allow): a deny would be a cheaper path.
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_postgres.h"
#include "bench/bench_process.h"
#include "bench/bench_support.h"
#include "openshell/gateway_interceptor/v1/gateway_interceptor.grpc.pb.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "openshell/v1/openshell_v1_subset.pb.h"
#include "openshell/policy/interceptor/v1/interceptor_record.pb.h"
#include "policy/body_codec.h"
#include "policy/policy_file.h"
#include "store/postgres_store.h"
#include "store/sqlite_store.h"
#include "absl/time/clock.h"
#include "trust/ceiling.h"
#include "trust/keys.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
namespace icv1 = openshell::gateway_interceptor::v1;
namespace os_v1 = openshell::v1;
using openshell::sandbox::v1::SandboxPolicy;
using BenchClock = std::chrono::steady_clock;

// The baseline: a callback server that answers with prebuilt messages, nothing else (no token check).
class EchoInterceptor final : public icv1::GatewayInterceptor::CallbackService {
 public:
  EchoInterceptor(icv1::ProviderProfileSnapshot snapshot, icv1::InterceptorResult result)
      : snapshot_(std::move(snapshot)), result_(std::move(result)) {}
  grpc::ServerUnaryReactor* SnapshotProviderProfiles(grpc::CallbackServerContext* context,
                                                     const icv1::ProviderProfileSnapshotRequest*,
                                                     icv1::ProviderProfileSnapshot* response) override {
    *response = snapshot_;
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerUnaryReactor* Evaluate(grpc::CallbackServerContext* context, const icv1::InterceptorEvaluation*,
                                     icv1::InterceptorResult* response) override {
    *response = result_;
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const icv1::ProviderProfileSnapshot snapshot_;
  const icv1::InterceptorResult result_;
};

std::string B64(absl::string_view bytes) { return absl::WebSafeBase64Escape(bytes); }

// The OpenShell gateway's bearer token (shared/interceptor/README.md §2): EdDSA, typ openshell-ext+jwt.
std::string MintInterceptorToken(const osh::trust::PrivateKey& key, int64_t now) {
  const std::string header = B64(R"({"alg":"EdDSA","typ":"openshell-ext+jwt","kid":"bench-gateway"})");
  const std::string claims = B64(absl::StrCat(
      R"({"iss":"openshell-gateway:openshell","aud":"urn:openshell:extension:interceptor:policy-gateway",)",
      R"("sub":"openshell-gateway:openshell","iat":)", now, R"(,"exp":)", now + 3600,
      R"(,"jti":"00000000-0000-4000-8000-000000000000","caller_kind":"gateway"})"));
  auto signature = key.Sign(absl::StrCat(header, ".", claims));
  if (!signature.ok()) return "";
  return absl::StrCat(header, ".", claims, ".", B64(*signature));
}

// Network rule i of the ceiling: its host and binary (a profile's layer and a candidate's rules use them).
std::string RuleHost(int i) { return absl::StrCat("svc-", i, ".bench.example"); }
std::string RuleBinary(int i) { return absl::StrCat("/usr/bin/tool-", i); }

void AddRule(SandboxPolicy* policy, const std::string& name, int i) {
  auto& rule = (*policy->mutable_network_policies())[name];
  rule.set_name(name);
  auto* endpoint = rule.add_endpoints();
  endpoint->set_host(RuleHost(i));
  endpoint->set_port(443);
  rule.add_binaries()->set_path(RuleBinary(i));
}

SandboxPolicy BasePolicy() {
  SandboxPolicy policy;
  policy.set_version(1);
  policy.mutable_filesystem()->set_include_workdir(true);
  policy.mutable_filesystem()->add_read_only("/usr");
  policy.mutable_filesystem()->add_read_only("/etc");
  policy.mutable_filesystem()->add_read_write("/sandbox");
  policy.mutable_landlock()->set_compatibility("best_effort");
  policy.mutable_process()->set_run_as_user("sandbox");
  policy.mutable_process()->set_run_as_group("sandbox");
  return policy;
}

// Candidate `k`: `entries` rules inside the ceiling's, under names of its own (so each candidate, and its
// digest, is distinct), with providers p-a and p-b.
google::protobuf::Struct CreateSandboxPayload(int k, int entries, int ceiling_entries, const std::string& provider_a,
                                              const std::string& provider_b) {
  os_v1::CreateSandboxRequest request;
  request.set_name(absl::StrCat("bench-", k));
  (*request.mutable_labels())["team"] = "bench";
  auto* spec = request.mutable_spec();
  spec->mutable_template_()->set_image("ghcr.io/example/agent:1.4");
  SandboxPolicy policy = BasePolicy();
  for (int i = 0; i < entries; ++i) AddRule(&policy, absl::StrCat("c", k, "-r", i), (i + k) % ceiling_entries);
  *spec->mutable_policy() = policy;
  spec->add_providers(provider_a);
  spec->add_providers(provider_b);
  std::string json;
  google::protobuf::Struct payload;
  if (!google::protobuf::util::MessageToJsonString(request, &json).ok() ||
      !google::protobuf::util::JsonStringToMessage(json, &payload).ok()) {
    std::fprintf(stderr, "cannot build the CreateSandbox payload\n");
    std::exit(1);
  }
  return payload;
}

icv1::InterceptorEvaluation ValidateOf(const google::protobuf::Struct& payload) {
  icv1::InterceptorEvaluation evaluation;
  evaluation.set_interceptor_name("policy-gateway");
  evaluation.set_binding_id("pg-create-sandbox");
  evaluation.set_service("openshell.v1.OpenShell");
  evaluation.set_method("CreateSandbox");
  (*evaluation.mutable_principal())["kind"] = "user";
  (*evaluation.mutable_principal())["subject"] = "bench@example.com";
  *evaluation.mutable_validate()->mutable_proposed_operation() = payload;
  return evaluation;
}

// The policy-gateway binary the benchmark starts (--gateway: another build's, for an A/B in one run).
std::string gateway_binary = OSH_GATEWAY_BINARY;

// A policy-gateway on `state` with the interceptor on `socket`, the trust store, signing key and caller key
// written in `dir`, and `extra` arguments; -1 (said on stderr) when it did not start.
pid_t StartInterceptorGateway(const std::string& dir, const std::string& state, const std::string& socket,
                              const std::string& log, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {gateway_binary, "--state-dir", state, "--trust-store", dir + "/trust.json",
                                   "--builtin-signing-key", dir + "/gateway.key", "--builtin-signing-key-id",
                                   "gateway-key", "--interceptor-socket", socket, "--interceptor-gateway-keys",
                                   dir + "/caller.pem"};
  args.insert(args.end(), extra.begin(), extra.end());
  const pid_t pid = osh::bench::Spawn(args, dir + "/" + log);
  if (pid < 0 || !osh::bench::WaitForChannel(state + "/admin.sock") || !osh::bench::WaitForChannel(socket)) {
    std::fprintf(stderr, "the gateway did not start (see %s/%s)\n", dir.c_str(), log.c_str());
    return -1;
  }
  return pid;
}

void StopProcess(pid_t pid) {
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

bool WriteFile(const std::string& path, const std::string& text) {
  return osh::policy::CreateFileAtomically(path, text, 0600).ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "The OpenShell interceptor at a real gateway: SnapshotProviderProfiles calls/s against a bare gRPC echo of "
      "the same snapshot, and Evaluate validate latency of CreateSandbox (first time and seen before)"};
  int threads = 4, rounds = 3, profiles = 50, ceiling_entries = 200, policy_entries = 200, candidates = 200,
      admissions = 200;
  double seconds = 2.0;
  app.add_option("--threads", threads, "client threads for the call rates")->capture_default_str();
  app.add_option("--gateway", gateway_binary, "policy-gateway binary")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds per round and server")->capture_default_str();
  app.add_option("--rounds", rounds, "alternating rounds (medians reported)")->capture_default_str();
  app.add_option("--profiles", profiles, "signed provider profiles in the catalogue (at least 2)")
      ->capture_default_str()
      ->check(CLI::Range(2, 10000));
  app.add_option("--ceiling-entries", ceiling_entries, "network rules in the signed ceiling (at least --profiles)")
      ->capture_default_str();
  app.add_option("--policy-entries", policy_entries, "network rules in each CreateSandbox policy")->capture_default_str();
  app.add_option("--candidates", candidates, "distinct candidates validated (each then once more, seen before)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--admissions", admissions, "admit mode: sandboxes admitted one at a time per path and round")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  int seen_rounds = 1;
  app.add_option("--seen-rounds", seen_rounds, "passes over the candidates seen before (p50/p99 over all of them)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  int records = 2000, record_policies = 20, changes = 5;
  app.add_option("--records", records, "profile changes: interceptor records naming the changed profile (0: skip)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--record-policies", record_policies, "profile changes: distinct policies among the records")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--changes", changes, "profile changes: changes timed")->capture_default_str()->check(CLI::PositiveNumber);
  std::string records_database = "sqlite";
  app.add_option("--records-database", records_database,
                 "profile changes: the third gateway's database (postgresql: a throw-away cluster, as bench_replicas)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sqlite", "postgresql"}));
  CLI11_PARSE(app, argc, argv);
  if (ceiling_entries < profiles) {
    std::fprintf(stderr, "--ceiling-entries must be at least --profiles (each profile's layer is a ceiling rule)\n");
    return 2;
  }

  char pattern[] = "/tmp/bench-interceptor-XXXXXX";
  const std::string dir = ::mkdtemp(pattern);
  auto authority = osh::trust::PrivateKey::Generate("ed25519");
  auto signer = osh::trust::PrivateKey::Generate("ed25519");
  auto caller = osh::trust::PrivateKey::Generate("ed25519");
  if (!authority.ok() || !signer.ok() || !caller.ok()) return 1;
  // The trust store: the ceiling's authority and the gateway's profile-signing key.
  std::string trust_json;
  {
    google::protobuf::Struct store;
    auto* keys = (*store.mutable_fields())["keys"].mutable_list_value();
    for (const auto& [id, pem] : {std::pair<std::string, std::string>{"authority", authority->PublicKeyPem()},
                                  {"gateway-key", signer->PublicKeyPem()}}) {
      auto* key = keys->add_values()->mutable_struct_value();
      (*key->mutable_fields())["key_id"].set_string_value(id);
      (*key->mutable_fields())["public_key_pem"].set_string_value(pem);
    }
    (void)google::protobuf::util::MessageToJsonString(store, &trust_json);
  }
  if (!WriteFile(dir + "/trust.json", trust_json) || !WriteFile(dir + "/gateway.key", signer->ToPem()) ||
      !WriteFile(dir + "/caller.pem", caller->PublicKeyPem())) {
    std::fprintf(stderr, "cannot write the keys\n");
    return 1;
  }
  const std::string state = dir + "/state", socket = dir + "/interceptor.sock";
  const pid_t gateway = StartInterceptorGateway(dir, state, socket, "gateway.log", {});
  if (gateway < 0) return 1;
  auto stop_gateway = [&] { StopProcess(gateway); };
  auto admin = gw::PolicyGateway::NewStub(osh::bench::ChannelWithId(state + "/admin.sock", 1000));

  // The signed ceiling: the base policy and `ceiling_entries` network rules.
  SandboxPolicy ceiling_policy = BasePolicy();
  for (int i = 0; i < ceiling_entries; ++i) AddRule(&ceiling_policy, absl::StrCat("r", i), i);
  {
    gw::SetCeilingRequest request;
    *request.mutable_ceiling() = osh::trust::MakeCeiling(ceiling_policy, "bench-max", 1, "bench", std::time(nullptr));
    if (!osh::trust::SignCeiling(request.mutable_ceiling(), *authority, "authority").ok()) return 1;
    gw::SetCeilingResponse response;
    grpc::ClientContext ctx;
    const grpc::Status set = admin->SetCeiling(&ctx, request, &response);
    if (!set.ok()) {
      std::fprintf(stderr, "SetCeiling failed: %s\n", set.error_message().c_str());
      stop_gateway();
      return 1;
    }
  }
  // The catalogue: profile p-<i> reaches rule i's host with rule i's binary (inside the ceiling).
  // `description` varies what is signed and stored, not the layer.
  auto set_profile = [&](gw::PolicyGateway::Stub& stub, int i, const std::string& description, double* ms) {
    gw::SetProviderProfileRequest request;
    auto* profile = request.mutable_profile();
    profile->set_id(absl::StrCat("p-", i));
    profile->set_display_name(absl::StrCat("Provider ", i));
    profile->set_description(description);
    auto* endpoint = profile->add_endpoints();
    endpoint->set_host(RuleHost(i));
    endpoint->set_port(443);
    profile->add_binaries()->set_path(RuleBinary(i));
    gw::ProviderProfileInfo info;
    grpc::ClientContext ctx;
    const auto start = BenchClock::now();
    const grpc::Status set = stub.SetProviderProfile(&ctx, request, &info);
    if (ms != nullptr) *ms = std::chrono::duration<double, std::milli>(BenchClock::now() - start).count();
    if (!set.ok()) std::fprintf(stderr, "SetProviderProfile failed: %s\n", set.error_message().c_str());
    return set.ok();
  };
  std::vector<double> empty_change_ms;  // profile sets with no interceptor record: the baseline of (4)
  for (int i = 0; i < profiles; ++i) {
    double ms = 0;
    if (!set_profile(*admin, i, "a bench provider: one API host for one tool", &ms)) {
      stop_gateway();
      return 1;
    }
    empty_change_ms.push_back(ms);
  }

  auto interceptor_channel = [&](const std::string& path, int id) { return osh::bench::ChannelWithId(path, id); };
  // One token for every call, as the OpenShell gateway reuses its token (README §2, "Reuse").
  const std::string authorization = "Bearer " + MintInterceptorToken(*caller, std::time(nullptr));
  auto context_for = [&] {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", authorization);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));  // upstream's default
    return ctx;
  };
  // What the gateway serves, and one validate result: the echo answers with the same bytes.
  auto probe = icv1::GatewayInterceptor::NewStub(interceptor_channel(socket, 2000));
  icv1::ProviderProfileSnapshot snapshot;
  if (const grpc::Status s = probe->SnapshotProviderProfiles(context_for().get(), {}, &snapshot);
      !s.ok() || snapshot.profiles_size() != profiles) {
    std::fprintf(stderr, "SnapshotProviderProfiles failed: %s\n", s.error_message().c_str());
    stop_gateway();
    return 1;
  }
  const icv1::InterceptorEvaluation warm = ValidateOf(CreateSandboxPayload(candidates, policy_entries, ceiling_entries, "p-0", "p-1"));
  icv1::InterceptorResult warm_result;
  if (const grpc::Status s = probe->Evaluate(context_for().get(), warm, &warm_result); !s.ok() || !warm_result.allowed()) {
    std::fprintf(stderr, "the warm-up validate was not allowed: %s %s\n", s.error_message().c_str(),
                 warm_result.reason().c_str());
    stop_gateway();
    return 1;
  }
  EchoInterceptor echo_service(snapshot, warm_result);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + dir + "/echo.sock", grpc::InsecureServerCredentials());
  builder.RegisterService(&echo_service);
  auto echo_server = builder.BuildAndStart();

  // 1. SnapshotProviderProfiles: the gateway against the echo, alternating rounds.
  std::vector<std::unique_ptr<icv1::GatewayInterceptor::Stub>> gateway_stubs, echo_stubs;
  for (int t = 0; t < threads; ++t) {
    gateway_stubs.push_back(icv1::GatewayInterceptor::NewStub(interceptor_channel(socket, t)));
    echo_stubs.push_back(icv1::GatewayInterceptor::NewStub(interceptor_channel(dir + "/echo.sock", 100 + t)));
  }
  std::vector<double> echo_rates, snapshot_rates;
  uint64_t errors = 0;
  for (int round = 0; round < rounds; ++round) {
    const auto echoed = osh::bench::RunLoad(threads, seconds, [&](int t) {
      icv1::ProviderProfileSnapshot out;
      return echo_stubs[t]->SnapshotProviderProfiles(context_for().get(), {}, &out).ok() &&
             out.profiles_size() == profiles;
    });
    const auto served = osh::bench::RunLoad(threads, seconds, [&](int t) {
      icv1::ProviderProfileSnapshot out;
      return gateway_stubs[t]->SnapshotProviderProfiles(context_for().get(), {}, &out).ok() &&
             out.profiles_size() == profiles;
    });
    echo_rates.push_back(echoed.calls_per_second);
    snapshot_rates.push_back(served.calls_per_second);
    errors += echoed.errors + served.errors;
  }
  const double echo_rate = osh::bench::Median(echo_rates), snapshot_rate = osh::bench::Median(snapshot_rates);

  // 2. Evaluate validate: distinct candidates the first time, then each again; the echo's of the same payloads.
  std::vector<icv1::InterceptorEvaluation> evaluations;
  for (int k = 0; k < candidates; ++k) {
    evaluations.push_back(ValidateOf(CreateSandboxPayload(k, policy_entries, ceiling_entries,
                                                          absl::StrCat("p-", (2 * k) % profiles),
                                                          absl::StrCat("p-", (2 * k + 1) % profiles))));
  }
  auto timed = [&](icv1::GatewayInterceptor::Stub& stub, const icv1::InterceptorEvaluation& evaluation,
                   std::vector<double>* ms) {
    auto ctx = context_for();
    icv1::InterceptorResult result;
    const auto start = BenchClock::now();
    const grpc::Status status = stub.Evaluate(ctx.get(), evaluation, &result);
    ms->push_back(std::chrono::duration<double, std::milli>(BenchClock::now() - start).count());
    if (!status.ok() || !result.allowed()) {
      if (errors++ == 0) std::fprintf(stderr, "Evaluate: %s %s\n", status.error_message().c_str(), result.reason().c_str());
    }
  };
  std::vector<double> first_ms, again_ms, echo_ms;
  for (const auto& evaluation : evaluations) timed(*gateway_stubs[0], evaluation, &first_ms);
  std::fprintf(stderr, "Evaluate: %d candidates seen before, %d pass(es)\n", candidates, seen_rounds);
  for (int pass = 0; pass < seen_rounds; ++pass) {
    for (const auto& evaluation : evaluations) timed(*gateway_stubs[0], evaluation, &again_ms);
  }
  std::fprintf(stderr, "Evaluate: the echo\n");
  for (const auto& evaluation : evaluations) timed(*echo_stubs[0], evaluation, &echo_ms);

  using osh::bench::Percentile;
  std::printf("interceptor at a real gateway (SQLite, Unix socket, JWT auth; %d signed profiles, %d-rule signed ceiling)\n",
              profiles, ceiling_entries);
  std::printf("SnapshotProviderProfiles (%d profiles, %zu bytes), %d client threads, median of %d:\n", profiles,
              snapshot.ByteSizeLong(), threads, rounds);
  std::printf("  bare gRPC echo:                  %8.0f calls/s\n", echo_rate);
  std::printf("  gateway:                         %8.0f calls/s   ratio to echo %.3f (target >= 0.8)\n", snapshot_rate,
              snapshot_rate / echo_rate);
  std::printf("Evaluate validate CreateSandbox (%d-rule policy + 2 provider layers, %zu-byte request), one at a time:\n",
              policy_entries, evaluations.front().ByteSizeLong());
  std::printf("  bare gRPC echo:    p50 %6.2f ms   p99 %6.2f ms\n", Percentile(echo_ms, 0.5), Percentile(echo_ms, 0.99));
  std::printf("  first time (%d):  p50 %6.2f ms   p99 %6.2f ms   max %6.2f ms   (target p99 <= 25 ms)\n", candidates,
              Percentile(first_ms, 0.5), Percentile(first_ms, 0.99), Percentile(first_ms, 1.0));
  std::printf("  seen before (%d): p50 %6.2f ms   p99 %6.2f ms   max %6.2f ms   (target p99 <= 2 ms)\n",
              candidates * seen_rounds,
              Percentile(again_ms, 0.5), Percentile(again_ms, 0.99), Percentile(again_ms, 1.0));
  echo_server->Shutdown();
  stop_gateway();

  // 3. Admit mode: a second gateway on its own state, the builtin driver's "default" policy inside the ceiling.
  const std::string admit_state = dir + "/admit-state", admit_socket = dir + "/admit-interceptor.sock";
  const pid_t admit_gateway =
      StartInterceptorGateway(dir, admit_state, admit_socket, "admit-gateway.log", {"--interceptor-mode", "admit"});
  if (admit_gateway < 0) return 1;
  auto stop_admit = [&] { StopProcess(admit_gateway); };
  auto admit_admin = gw::PolicyGateway::NewStub(osh::bench::ChannelWithId(admit_state + "/admin.sock", 3000));
  {
    gw::SetCeilingRequest ceiling;
    *ceiling.mutable_ceiling() = osh::trust::MakeCeiling(ceiling_policy, "bench-max", 1, "bench", std::time(nullptr));
    gw::SetPolicyRequest policy;
    policy.set_scope("default");
    *policy.mutable_policy() = BasePolicy();
    for (int i = 0; i < 20; ++i) AddRule(policy.mutable_policy(), absl::StrCat("d", i), i);
    gw::SetCeilingResponse set_ceiling;
    gw::PolicyRevision revision;
    grpc::ClientContext ctx1, ctx2;
    if (!osh::trust::SignCeiling(ceiling.mutable_ceiling(), *authority, "authority").ok() ||
        !admit_admin->SetCeiling(&ctx1, ceiling, &set_ceiling).ok() ||
        !admit_admin->SetPolicy(&ctx2, policy, &revision).ok()) {
      std::fprintf(stderr, "the admit-mode gateway refused its ceiling or policy\n");
      stop_admit();
      return 1;
    }
  }
  std::atomic<int> next_id{0};
  auto admit_direct = [&](gw::PolicyGateway::Stub& stub, std::string id = {}) {
    gw::AdmitSandboxRequest request;
    request.mutable_context()->set_sandbox_id(id.empty() ? absl::StrCat("direct-", next_id++) : std::move(id));
    request.mutable_context()->set_user_subject("bench@example.com");
    (*request.mutable_context()->mutable_attributes())["team"] = "bench";
    gw::AdmitSandboxResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return stub.AdmitSandbox(&ctx, request, &response).ok();
  };
  // The OpenShell gateway holds its request as a Struct already: each client thread converts the
  // CreateSandbox request once, outside the timed calls, and only names each call's sandbox (converting it
  // through JSON on every call would time the bench's own conversion, not the interceptor).
  auto create_template = [] {
    os_v1::CreateSandboxRequest request;
    request.set_name("created");
    (*request.mutable_labels())["team"] = "bench";
    request.mutable_spec()->mutable_template_()->set_image("ghcr.io/example/agent:1.4");
    *request.mutable_spec()->mutable_policy() = BasePolicy();
    std::string json;
    icv1::InterceptorEvaluation evaluation;
    (void)google::protobuf::util::MessageToJsonString(request, &json);
    (void)google::protobuf::util::JsonStringToMessage(json, evaluation.mutable_modify_operation()->mutable_proposed_operation());
    evaluation.set_interceptor_name("policy-gateway");
    evaluation.set_binding_id("pg-create-sandbox");
    evaluation.set_service("openshell.v1.OpenShell");
    evaluation.set_method("CreateSandbox");
    (*evaluation.mutable_principal())["kind"] = "user";
    (*evaluation.mutable_principal())["subject"] = "bench@example.com";
    return evaluation;
  };
  std::vector<icv1::InterceptorEvaluation> create_requests(threads, create_template());
  auto admit_create = [&](icv1::GatewayInterceptor::Stub& stub, int t) {
    icv1::InterceptorEvaluation& evaluation = create_requests[t];
    (*evaluation.mutable_modify_operation()->mutable_proposed_operation()->mutable_fields())["name"].set_string_value(
        absl::StrCat("created-", next_id++));
    icv1::InterceptorResult result;
    const grpc::Status status = stub.Evaluate(context_for().get(), evaluation, &result);
    if ((!status.ok() || !result.allowed() || result.patches_size() != 2) && errors++ == 0) {
      std::fprintf(stderr, "admit-mode CreateSandbox: %s %s\n", status.error_message().c_str(), result.reason().c_str());
    }
    return status.ok() && result.allowed();
  };
  std::vector<std::unique_ptr<gw::PolicyGateway::Stub>> admin_stubs;
  std::vector<std::unique_ptr<icv1::GatewayInterceptor::Stub>> admit_stubs;
  for (int t = 0; t < threads; ++t) {
    admin_stubs.push_back(gw::PolicyGateway::NewStub(osh::bench::ChannelWithId(admit_state + "/admin.sock", 3100 + t)));
    admit_stubs.push_back(icv1::GatewayInterceptor::NewStub(interceptor_channel(admit_socket, 3200 + t)));
  }
  std::vector<double> direct_ms, create_ms, direct_rates, create_rates;
  auto time_one = [&](const std::function<bool()>& call, std::vector<double>* ms) {
    const auto start = BenchClock::now();
    if (!call()) ++errors;
    ms->push_back(std::chrono::duration<double, std::milli>(BenchClock::now() - start).count());
  };
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < admissions; ++i) time_one([&] { return admit_direct(*admin_stubs[0]); }, &direct_ms);
    for (int i = 0; i < admissions; ++i) time_one([&] { return admit_create(*admit_stubs[0], 0); }, &create_ms);
    const auto direct = osh::bench::RunLoad(threads, seconds, [&](int t) { return admit_direct(*admin_stubs[t]); });
    const auto created = osh::bench::RunLoad(threads, seconds, [&](int t) { return admit_create(*admit_stubs[t], t); });
    direct_rates.push_back(direct.calls_per_second);
    create_rates.push_back(created.calls_per_second);
    errors += direct.errors + created.errors;
  }
  stop_admit();
  const double direct_rate = osh::bench::Median(direct_rates), create_rate = osh::bench::Median(create_rates);
  std::printf("admit mode (builtin driver, signed, SQLite; %d sandboxes one at a time per path and round, median of %d):\n",
              admissions, rounds);
  std::printf("  AdmitSandbox:               p50 %6.2f ms   %8.0f calls/s (%d threads)\n", Percentile(direct_ms, 0.5),
              direct_rate, threads);
  std::printf("  CreateSandbox modify:       p50 %6.2f ms   %8.0f calls/s (%d threads)\n", Percentile(create_ms, 0.5),
              create_rate, threads);
  std::printf("  time ratio: one at a time %.2f, under load %.2f (target <= 1.2)\n",
              Percentile(create_ms, 0.5) / Percentile(direct_ms, 0.5), direct_rate / create_rate);
  if (records > 0) {
    // 4. A provider-profile change with `records` interceptor records naming it (written to the database
    // before the gateway starts), against the same change with none (the catalogue's setup above); and how
    // long an admission (a write of the same database) waits while a change is checked and committed.
    const std::string records_state = dir + "/records-state";
    std::filesystem::create_directories(records_state);
    std::filesystem::permissions(records_state, std::filesystem::perms::owner_all);  // the gateway's socket folder
    std::unique_ptr<osh::bench::Cluster> cluster;
    std::vector<std::string> database_args;  // the gateway's --database (none: SQLite in its state folder)
    {
      absl::StatusOr<std::unique_ptr<osh::store::Database>> store;
      if (records_database == "postgresql") {
        char pg_pattern[] = "/tmp/bench-interceptor-pg-XXXXXX";
        cluster = std::make_unique<osh::bench::Cluster>(::mkdtemp(pg_pattern));
        if (!cluster->ok()) {
          std::fprintf(stderr, "PostgreSQL did not start (Debian's postgresql is needed)\n");
          return 1;
        }
        const std::string url = cluster->CreateDatabase("records");
        database_args = {"--database", url};
        store = osh::store::PostgresStore::Open(url, osh::store::Clock::System(), /*replica=*/false);
      } else {
        store = osh::store::SqliteStore::Open(records_state + "/gateway.db");
      }
      if (!store.ok()) {
        std::fprintf(stderr, "cannot open the records' database: %s\n", store.status().ToString().c_str());
        return 1;
      }
      std::vector<SandboxPolicy> policies;
      for (int d = 0; d < record_policies; ++d) {
        SandboxPolicy policy = BasePolicy();
        for (int i = 0; i < policy_entries; ++i) AddRule(&policy, absl::StrCat("d", d, "-r", i), (i + d) % ceiling_entries);
        policies.push_back(std::move(policy));
      }
      for (int k = 0; k < records; ++k) {
        // Every record names p-0; the other provider follows its policy, so there are record_policies
        // distinct candidates.
        openshell::policy::interceptor::v1::InterceptorRecord record;
        *record.mutable_policy() = policies[k % record_policies];
        record.add_providers("p-0");
        record.add_providers(absl::StrCat("p-", 1 + (k % record_policies) % (profiles - 1)));
        // Encoded as the gateway encodes a record (deterministically: one policy, one byte string).
        if (!(*store)->interceptor_records().PutInterceptorRecord(absl::StrCat("rec-", k),
                                                                  osh::policy::SerializeDeterministic(record)).ok()) {
          return 1;
        }
      }
    }
    const pid_t records_gateway = StartInterceptorGateway(dir, records_state, dir + "/records-interceptor.sock",
                                                          "records-gateway.log", database_args);
    if (records_gateway < 0) return 1;
    auto records_admin = gw::PolicyGateway::NewStub(osh::bench::ChannelWithId(records_state + "/admin.sock", 4000));
    auto writer_admin = gw::PolicyGateway::NewStub(osh::bench::ChannelWithId(records_state + "/admin.sock", 4001));
    bool ready = true;
    {
      gw::SetCeilingRequest ceiling;
      *ceiling.mutable_ceiling() = osh::trust::MakeCeiling(ceiling_policy, "bench-max", 1, "bench", std::time(nullptr));
      gw::SetPolicyRequest policy;
      policy.set_scope("default");
      *policy.mutable_policy() = BasePolicy();
      gw::SetCeilingResponse set_ceiling;
      gw::PolicyRevision revision;
      grpc::ClientContext ctx1, ctx2;
      ready = osh::trust::SignCeiling(ceiling.mutable_ceiling(), *authority, "authority").ok() &&
              records_admin->SetCeiling(&ctx1, ceiling, &set_ceiling).ok() &&
              records_admin->SetPolicy(&ctx2, policy, &revision).ok();
      for (int i = 0; ready && i < profiles; ++i) ready = set_profile(*records_admin, i, "first", nullptr);
    }
    if (!ready) {
      std::fprintf(stderr, "the records gateway refused its ceiling, policy or profiles\n");
      StopProcess(records_gateway);
      return 1;
    }
    // Admissions one at a time throughout; a change every so often (its description only: the layer, and
    // so every candidate, is the one checked before, as for a change that renames or re-signs a profile).
    std::atomic<bool> changing{false}, done{false};
    std::vector<double> quiet_ms, during_ms, change_ms;
    uint64_t writer_errors = 0;
    std::thread writer([&] {
      for (int n = 0; !done.load(); ++n) {
        const bool during = changing.load();
        const auto start = BenchClock::now();
        if (!admit_direct(*writer_admin, absl::StrCat("stall-", n))) ++writer_errors;
        const double ms = std::chrono::duration<double, std::milli>(BenchClock::now() - start).count();
        (during || changing.load() ? during_ms : quiet_ms).push_back(ms);
      }
    });
    absl::SleepFor(absl::Milliseconds(300));
    for (int c = 0; c < changes; ++c) {
      double ms = 0;
      changing = true;
      if (!set_profile(*records_admin, 0, absl::StrCat("change ", c), &ms)) ++errors;
      changing = false;
      change_ms.push_back(ms);
      absl::SleepFor(absl::Milliseconds(300));
    }
    done = true;
    writer.join();
    errors += writer_errors;
    StopProcess(records_gateway);
    std::printf("profile change with %d interceptor records naming it (%d distinct policies of %d rules, %s), %d changes:\n",
                records, record_policies, policy_entries, records_database.c_str(), changes);
    std::printf("  with no record:        p50 %8.2f ms   (the catalogue's setup, %d sets)\n", Percentile(empty_change_ms, 0.5),
                profiles);
    std::printf("  with the records:      p50 %8.2f ms   max %8.2f ms   ratio %.1f\n", Percentile(change_ms, 0.5),
                Percentile(change_ms, 1.0), Percentile(change_ms, 0.5) / Percentile(empty_change_ms, 0.5));
    std::printf("  an admission meanwhile: p50 %6.2f ms max %8.2f ms (%zu) vs otherwise p50 %6.2f ms max %8.2f ms (%zu)\n",
                during_ms.empty() ? 0.0 : Percentile(during_ms, 0.5), during_ms.empty() ? 0.0 : Percentile(during_ms, 1.0),
                during_ms.size(), Percentile(quiet_ms, 0.5), Percentile(quiet_ms, 1.0), quiet_ms.size());
  }
  std::printf("errors: %llu\n", static_cast<unsigned long long>(errors));
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return errors == 0 ? 0 : 1;
}
