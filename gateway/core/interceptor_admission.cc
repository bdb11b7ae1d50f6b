#include "gateway/core/interceptor_admission.h"

#include "gateway/core/gateway_core.h"
#include "gateway/core/sandbox_registry.h"

namespace osh::gateway {

absl::StatusOr<InterceptorAdmission::Admitted> CoreInterceptorAdmission::Admit(
    const openshell::policy::driver::v1::RuntimeContext& context, const AdmitCheck& also_check) {
  auto admitted = core_->Admit(context, also_check);
  if (!admitted.ok()) return admitted.status();
  // The body as the registry holds it (a refresh may already have moved it: then that one is served).
  auto current = Current(context.sandbox_id());
  if (!current.ok()) return current.status();
  if (!current->has_value()) {
    return absl::AbortedError(absl::StrCat("sandbox '", context.sandbox_id(), "' was deleted while it was admitted"));
  }
  return **std::move(current);
}

void CoreInterceptorAdmission::AdmitAsync(openshell::policy::driver::v1::RuntimeContext context,
                                          AdmitCheck also_check, AdmitDone done) {
  std::string id = context.sandbox_id();
  core_->AdmitAsync(std::move(context), std::move(also_check),
                    [this, id = std::move(id), done = std::move(done)](
                        absl::StatusOr<openshell::policy::gateway::v1::AdmitSandboxResponse> admitted) {
                      if (!admitted.ok()) return done(admitted.status());
                      // As Admit: the body as the registry holds it (a lookup in memory: nothing here blocks).
                      auto current = Current(id);
                      if (!current.ok()) return done(current.status());
                      if (!current->has_value()) {
                        return done(absl::AbortedError(
                            absl::StrCat("sandbox '", id, "' was deleted while it was admitted")));
                      }
                      done(**std::move(current));
                    });
}

absl::StatusOr<std::optional<InterceptorAdmission::Admitted>> CoreInterceptorAdmission::Current(
    const std::string& sandbox_id) const {
  // The serving rule first: what is not served to the sandbox is not what admit mode patches or pushes.
  auto served = registry_->Lookup(sandbox_id, core_->clock().NowUnix());
  if (served.status().code() == absl::StatusCode::kNotFound) return std::nullopt;
  if (!served.ok()) return served.status();
  // One sandbox of one moment: body, context and key ids all of what is served.
  const AdmittedSandbox& sandbox = **served;
  Admitted out;
  const auto header = sandbox.envelope->Header();  // digest and version of the very body served
  out.digest = header.policy_digest();
  out.version = header.policy_version();
  // The body as the projection check parsed it, when the gate still holds it (its key is the digest the
  // check recomputed from the bytes; the served envelope passed that check): not parsed again.
  out.policy = core_->gate().body_cache()->Find(out.digest);
  if (out.policy == nullptr) {
    auto parsed = std::make_shared<openshell::sandbox::v1::SandboxPolicy>();
    if (!parsed->ParseFromString(sandbox.envelope->body())) {
      return absl::DataLossError(absl::StrCat("sandbox '", sandbox_id, "': its admitted body does not parse"));
    }
    out.policy = std::move(parsed);
  }
  if (!out.context.ParseFromString(sandbox.context_bytes)) {
    return absl::DataLossError(absl::StrCat("sandbox '", sandbox_id, "': its admitted context does not parse"));
  }
  out.key_ids = sandbox.verified_by->key_ids;
  return out;
}

absl::Status CoreInterceptorAdmission::Withdraw(const std::string& sandbox_id) {
  auto deleted = core_->Delete(sandbox_id);
  return deleted.ok() ? absl::OkStatus() : deleted.status();
}

bool CoreInterceptorAdmission::permits_mutation() const { return core_->permits_mutation(); }

}  // namespace osh::gateway

namespace osh::gateway {

namespace {
constexpr char kPushRefused[] = "openshell_push_refused";
}  // namespace

absl::StatusOr<std::vector<std::string>> CoreInterceptorAdmission::AdmittedIds() const {
  std::vector<std::string> ids;
  openshell::policy::gateway::v1::ListSandboxesRequest request;
  request.set_page_size(1000);
  while (true) {
    auto page = core_->ListSandboxes(request);
    if (!page.ok()) return page.status();
    for (const auto& info : page->sandboxes()) ids.push_back(info.context().sandbox_id());
    if (page->next_page_token().empty()) return ids;
    request.set_page_token(page->next_page_token());
  }
}

absl::Status CoreInterceptorAdmission::RecordPushRefused(const std::string& sandbox_id, const std::string& detail) {
  return core_->RecordRefreshError(sandbox_id, kPushRefused, detail);
}

absl::Status CoreInterceptorAdmission::RecordPushAccepted(const std::string& sandbox_id) {
  return core_->ClearRefreshError(sandbox_id, kPushRefused);
}

}  // namespace osh::gateway
