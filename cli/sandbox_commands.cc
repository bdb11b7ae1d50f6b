// policyctl admit | delete | get | list | refresh | status (operator commands on the admin socket).
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "policy/policy_file.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

std::string Time(int64_t unix) {
  return unix == 0 ? "-" : absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix), absl::UTCTimeZone());
}

std::string LoadName(v1::LoadStatus status) {
  return status == v1::LOADED ? "loaded" : status == v1::FAILED ? "failed" : "not reported";
}

// The load status as an operator must read it: a report about an earlier digest than the one served is
// not "loaded" (the sandbox has not said it runs what it is served).
std::string LoadName(const v1::SandboxInfo& s) {
  if (s.load_status() == v1::LOAD_STATUS_UNSPECIFIED || !s.reported_behind()) return LoadName(s.load_status());
  return LoadName(s.load_status()) + " (an earlier digest; not yet the current one)";
}

// GetSandbox on the admin API; false after setting `exit_code` and printing why.
bool GetSandbox(const Options& options, const std::string& id, bool include_policy, v1::SandboxInfo* out, int* exit_code) {
  auto stub = AdminStub(options);
  if (!stub) {
    *exit_code = kExitUsage;
    return false;
  }
  v1::GetSandboxRequest request;
  request.set_sandbox_id(id);
  request.set_include_policy(include_policy);
  auto ctx = MakeContext(options);
  if (auto status = stub->GetSandbox(ctx.get(), request, out); !status.ok()) {
    *exit_code = ReportRpcError(status);
    return false;
  }
  return true;
}

void PrintSandbox(const v1::SandboxInfo& s) {
  std::cout << "sandbox:        " << s.context().sandbox_id() << "\n"
            << "subject:        " << s.context().user_subject() << "\n";
  for (const auto& [k, v] : s.context().attributes()) std::cout << "attribute:      " << k << "=" << v << "\n";
  std::cout << "surface:        " << s.surface_id() << "\n"
            << "policy digest:  " << s.policy_digest() << "\n"
            << "policy version: " << s.policy_version() << "\n"
            << "verification:   " << s.verification() << "\n"
            << "signing keys:   " << (s.signing_key_ids().empty() ? "-" : absl::StrJoin(s.signing_key_ids(), ", ")) << "\n"
            << "load status:    " << LoadName(s) << (s.load_error().empty() ? "" : ": " + s.load_error()) << "\n"
            << "admitted:       " << Time(s.admitted_at_unix()) << "\n"
            << "updated:        " << Time(s.updated_at_unix()) << "\n"
            << "expires:        " << Time(s.expires_at_unix()) << "\n";
  if (!s.last_refresh_error().empty()) std::cout << "refresh error:  " << s.last_refresh_error() << "\n";
  std::cout << "desired:        "
            << (s.desired_known() ? s.desired_digest().empty() ? "none" : s.desired_digest() : "(as served)")
            << (s.desired_known() ? " version " + std::to_string(s.desired_version()) + " (" + s.desired_source() + ")" : "")
            << "\n"
            << "drift:          " << s.drift_state() << (s.drift_reason().empty() ? "" : ": " + s.drift_reason()) << "\n";
}

// `list --drift`: what each drifting sandbox is served, loaded and should get, and why it drifts.
void PrintDriftTable(const v1::ListSandboxesResponse& drifting) {
  auto short_digest = [](const std::string& d) { return d.empty() ? std::string("-") : d.substr(0, 12); };
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : drifting.sandboxes()) {
    rows.push_back({s.context().sandbox_id(), s.drift_state(),
                    short_digest(s.policy_digest()) + " v" + std::to_string(s.policy_version()),
                    s.load_status() == v1::LOAD_STATUS_UNSPECIFIED
                        ? "-"
                        : short_digest(s.reported_digest()) + " " + LoadName(s.load_status()),
                    s.desired_known() ? short_digest(s.desired_digest()) + " v" + std::to_string(s.desired_version())
                                      : "(served)",
                    s.drift_reason()});
  }
  PrintTable({"SANDBOX", "DRIFT", "SERVED", "LOADED", "DESIRED", "REASON"}, rows);
  std::cout << drifting.sandboxes_size() << " drifting sandbox(es)\n";
}

}  // namespace

void AddSandboxCommands(CLI::App& app, const Options& options, int& exit_code) {
  // admit
  {
    auto* cmd = app.add_subcommand("admit", "Admit a sandbox: fetch, check and store its projection; print its handle");
    auto context = std::make_shared<openshell::policy::driver::v1::RuntimeContext>();
    auto attrs = std::make_shared<std::vector<std::string>>();
    cmd->add_option("--sandbox", *context->mutable_sandbox_id(), "sandbox id")->required();
    cmd->add_option("--subject", *context->mutable_user_subject(), "user subject")->required();
    cmd->add_option("--attr", *attrs, "attribute key=value (repeatable), e.g. tenant_id=acme");
    cmd->callback([&options, &exit_code, context, attrs] {
      if (auto status = ParsePairs(*attrs, "--attr", context->mutable_attributes()); !status.ok()) {
        exit_code = ReportLocalError(status);
        return;
      }
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::AdmitSandboxRequest request;
      *request.mutable_context() = *context;
      v1::AdmitSandboxResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->AdmitSandbox(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        std::cout << "sandbox:        " << response.sandbox_id() << "\n"
                  << "sandbox handle: " << response.sandbox_handle() << "   (shown once: give it to the sandbox)\n"
                  << "surface:        " << response.surface_id() << "\n"
                  << "policy digest:  " << response.policy_digest() << "\n"
                  << "policy version: " << response.policy_version() << "\n"
                  << "verification:   " << response.verification() << "\n"
                  << "signing keys:   " << (response.signing_key_ids().empty() ? "-" : absl::StrJoin(response.signing_key_ids(), ", ")) << "\n";
      }
      exit_code = kExitOk;
    });
  }
  // delete
  {
    auto* cmd = app.add_subcommand("delete", "Delete a sandbox: revoke its handle, release its driver handle (idempotent)");
    auto id = std::make_shared<std::string>();
    cmd->add_option("--sandbox", *id, "sandbox id")->required();
    cmd->callback([&options, &exit_code, id] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::DeleteSandboxRequest request;
      request.set_sandbox_id(*id);
      v1::DeleteSandboxResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->DeleteSandbox(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) std::cout << ToJson(response) << "\n";
      else std::cout << (response.deleted() ? "deleted " : "no such sandbox (nothing to do): ") << *id << "\n";
      exit_code = kExitOk;
    });
  }
  // get
  {
    auto* cmd = app.add_subcommand("get", "Show one admitted sandbox");
    auto id = std::make_shared<std::string>();
    cmd->add_option("--sandbox", *id, "sandbox id")->required();
    cmd->callback([&options, &exit_code, id] {
      v1::SandboxInfo response;
      if (!GetSandbox(options, *id, /*include_policy=*/false, &response, &exit_code)) return;
      if (options.json()) std::cout << ToJson(response) << "\n";
      else PrintSandbox(response);
      exit_code = kExitOk;
    });
  }
  // show
  {
    auto* cmd = app.add_subcommand(
        "show", "Show the policy a sandbox enforces, as YAML, with its digest, version, signing keys and verification");
    auto id = std::make_shared<std::string>();
    cmd->add_option("--sandbox", *id, "sandbox id")->required();
    cmd->callback([&options, &exit_code, id] {
      v1::SandboxInfo response;
      if (!GetSandbox(options, *id, /*include_policy=*/true, &response, &exit_code)) return;
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        // "policy_version", not "version": the YAML's own `version:` below is the schema's version.
        std::cout << "# sandbox " << *id << "\n# digest " << response.policy_digest() << "\n# policy_version "
                  << response.policy_version() << "\n# verification " << response.verification()
                  << (response.signing_key_ids().empty() ? std::string()
                                                         : " by " + absl::StrJoin(response.signing_key_ids(), ", "))
                  << "\n# load status " << LoadName(response.load_status())
                  << (response.load_error().empty() ? "" : ": " + response.load_error()) << "\n"
                  << policy::PolicyToYaml(response.policy());
      }
      exit_code = kExitOk;
    });
  }
  // list
  {
    auto* cmd = app.add_subcommand("list", "List admitted sandboxes (all pages)");
    auto drift = std::make_shared<bool>(false);
    cmd->add_flag("--drift", *drift,
                  "only sandboxes that do not run what they should (not in_sync), with the reason");
    cmd->callback([&options, &exit_code, drift] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::ListSandboxesResponse all;
      v1::ListSandboxesRequest request;
      request.set_page_size(1000);
      for (;;) {
        v1::ListSandboxesResponse page;
        auto ctx = MakeContext(options);
        if (auto status = stub->ListSandboxes(ctx.get(), request, &page); !status.ok()) {
          exit_code = ReportRpcError(status);
          return;
        }
        for (auto& s : *page.mutable_sandboxes()) {
          if (!*drift || s.drift() != v1::DRIFT_IN_SYNC) *all.add_sandboxes() = std::move(s);
        }
        if (page.next_page_token().empty()) break;
        request.set_page_token(page.next_page_token());
      }
      if (options.json()) {
        std::cout << ToJson(all) << "\n";
      } else if (*drift) {
        PrintDriftTable(all);
      } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& s : all.sandboxes()) {
          rows.push_back({s.context().sandbox_id(), s.context().user_subject(), s.policy_digest().substr(0, 12),
                          std::to_string(s.policy_version()), s.verification(),
                          s.reported_behind() && s.load_status() != v1::LOAD_STATUS_UNSPECIFIED
                              ? LoadName(s.load_status()) + " (behind)"
                              : LoadName(s.load_status())});
        }
        PrintTable({"SANDBOX", "SUBJECT", "DIGEST", "VERSION", "VERIFICATION", "LOAD"}, rows);
        std::cout << all.sandboxes_size() << " sandbox(es)\n";
      }
      exit_code = kExitOk;
    });
  }
  // refresh
  {
    auto* cmd = app.add_subcommand("refresh", "Fetch a sandbox's projection again and admit it if it passes every check");
    auto id = std::make_shared<std::string>();
    cmd->add_option("--sandbox", *id, "sandbox id")->required();
    cmd->callback([&options, &exit_code, id] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::RefreshSandboxRequest request;
      request.set_sandbox_id(*id);
      v1::RefreshSandboxResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->RefreshSandbox(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) std::cout << ToJson(response) << "\n";
      else std::cout << (response.changed() ? "admitted new projection " : "unchanged ") << response.policy_digest()
                     << " version " << response.policy_version() << "\n";
      exit_code = kExitOk;
    });
  }
  // status
  {
    auto* cmd = app.add_subcommand("status", "Show the gateway's driver, trust store and counts");
    cmd->callback([&options, &exit_code] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::GetStatusResponse s;
      auto ctx = MakeContext(options);
      if (auto status = stub->GetStatus(ctx.get(), v1::GetStatusRequest(), &s); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) {
        std::cout << ToJson(s) << "\n";
      } else {
        std::cout << "gateway version:    " << s.gateway_version() << "\n"
                  << "driver:             " << s.driver_kind() << " (" << s.capabilities().driver_name() << " "
                  << s.capabilities().driver_version() << "), " << s.driver_state()
                  << (s.driver_state_detail().empty() ? "" : " (" + s.driver_state_detail() + ")") << "\n"
                  << "permits mutation:   " << (s.capabilities().permits_mutation() ? "yes" : "no") << "\n"
                  << "signs projections:  " << (s.capabilities().signs_projections() ? "yes" : "no") << "\n"
                  << "accepted surfaces:  " << absl::StrJoin(s.accepted_surfaces(), ", ") << "\n"
                  << "verification:       " << s.verification()
                  << (s.trust_store().empty() ? "" : " (" + s.trust_store() + ")") << "\n";
        if (!s.trust_keys().empty()) std::cout << "trust threshold:    " << s.trust_threshold() << "\n";
        for (const auto& k : s.trust_keys()) {
          std::cout << "trust key:          " << k.key_id() << " " << k.algorithm() << " " << k.fingerprint().substr(0, 16)
                    << " " << Time(k.not_before_unix()) << ".." << Time(k.not_after_unix()) << (k.revoked() ? " REVOKED" : "")
                    << "\n";
        }
        std::cout << "database:           " << (s.database_kind().empty() ? "sqlite" : s.database_kind());
        if (s.database_kind() == "postgresql") {
          // Unreachable, the number of live replicas is unknown (not 0: this one is live).
          if (s.database_reachable()) {
            std::cout << ", reachable; replica " << s.replica_id() << " of " << s.live_replicas() << " live";
          } else {
            std::cout << ", UNREACHABLE; replica " << s.replica_id() << " (live replicas unknown)";
          }
        }
        std::cout << "\n"
                  << "admitted sandboxes: " << s.admitted_sandboxes() << "\n"
                  << "policy scopes:      " << s.policy_scopes() << "\n"
                  << "watchers:           " << s.watchers() << "\n"
                  << "pending releases:   " << s.pending_releases() << "\n"
                  << "refresh errors:     " << s.refresh_errors() << "\n";
        if (s.reprojections_pending() > 0) {
          std::cout << "re-projections:     " << s.reprojections_pending()
                    << " scope(s) queued (a failed one retries; one another replica changed waits for its "
                       "re-projection; see the gateway's log)\n";
        }
        if (s.database_kind() == "postgresql" && s.database_reachable()) {
          std::cout << "change feed:        " << s.feed_changes_behind() << " change(s) not read yet; last read "
                    << absl::StrFormat("%.1f", static_cast<double>(s.feed_read_age_ms()) / 1000.0) << " s ago\n";
        }
        if (s.possibly_leaked_handles() > 0) {
          std::cout << "possibly leaked:    " << s.possibly_leaked_handles()
                    << " driver handle(s) (the driver ignores idempotency keys)\n";
        }
        if (s.has_ceiling()) {
          std::cout << "ceiling:            " << s.ceiling().ceiling_id() << " version " << s.ceiling().version()
                    << (s.ceiling().audit_label().empty() ? "" : " '" + s.ceiling().audit_label() + "'") << " signed by "
                    << absl::StrJoin(s.ceiling().key_ids(), ", ") << "\n";
        } else {
          std::cout << "ceiling:            none\n";
        }
        if (s.has_interceptor()) {
          const v1::InterceptorStatus& i = s.interceptor();
          std::vector<std::string> listeners;
          if (!i.socket().empty()) listeners.push_back(i.socket());
          if (!i.listen().empty()) listeners.push_back(i.listen() + " (TLS)");
          std::cout << "interceptor:        " << absl::StrJoin(listeners, " and ") << ", mode " << i.mode() << ", "
                    << (i.callers_authenticated() ? "callers authenticated by token" : "no caller token asked") << "\n"
                    << "interceptor calls:  Evaluate " << i.evaluate_allowed() << " allowed, " << i.evaluate_patched()
                    << " patched, " << i.evaluate_denied() << " denied; " << i.unauthenticated()
                    << " unauthenticated";
          if (i.evaluate_overloaded() + i.evaluate_admissions_full() + i.evaluate_expired() > 0) {
            std::cout << "; not decided: " << i.evaluate_overloaded() << " overloaded, " << i.evaluate_admissions_full()
                      << " with max_interceptor_admissions reached, " << i.evaluate_expired() << " expired";
          }
          std::cout << " (since start)\n";
          if (!i.push_endpoint().empty()) {
            std::cout << "interceptor push:   " << i.push_endpoint() << ": " << i.pushes_accepted() << " accepted, "
                      << i.pushes_refused() << " refused, " << i.pushes_retried() << " retried, "
                      << i.pushes_in_flight() << " in flight (since start)\n";
          }
        } else {
          std::cout << "interceptor:        off\n";
        }
      }
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
