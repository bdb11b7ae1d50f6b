#include "gateway/core/interceptor_records.h"


#include "absl/strings/str_cat.h"
#include "openshell/policy/interceptor/v1/interceptor_record.pb.h"
#include "policy/body_codec.h"
#include "policy/provider_profile.h"

namespace osh::gateway {

std::string InterceptorRecords::Key(absl::string_view workspace, absl::string_view name) {
  if (workspace.empty() || workspace == "default") return std::string(name);
  return absl::StrCat(workspace, std::string(1, store::kInterceptorKeySeparator), name);
}

std::string InterceptorRecords::Describe(absl::string_view key) {
  const auto [workspace, name] = Split(key);
  if (workspace.empty()) return absl::StrCat("'", name, "'");
  return absl::StrCat("'", name, "' (workspace '", workspace, "')");
}

std::pair<std::string, std::string> InterceptorRecords::Split(absl::string_view key) {
  const size_t separator = key.find(store::kInterceptorKeySeparator);
  if (separator == absl::string_view::npos) return {"", std::string(key)};
  return {std::string(key.substr(0, separator)), std::string(key.substr(separator + 1))};
}

std::string InterceptorRecords::Encode(RecordView record) {
  openshell::policy::interceptor::v1::InterceptorRecord stored;
  // The policy is lent to the message for the serialization, not copied into it (kilobytes of rules), and
  // taken back before the message is destroyed.
  stored.unsafe_arena_set_allocated_policy(const_cast<openshell::sandbox::v1::SandboxPolicy*>(&record.policy));
  for (const std::string& provider : record.providers) stored.add_providers(provider);
  std::string bytes = policy::SerializeDeterministic(stored);
  stored.unsafe_arena_release_policy();
  return bytes;
}

bool InterceptorRecords::Decode(const std::string& bytes, Record* record) {
  openshell::policy::interceptor::v1::InterceptorRecord stored;
  if (!stored.ParseFromString(bytes)) return false;
  record->policy = stored.policy();
  // A record is the own policy as upstream keeps it, never with a `_provider_*` entry
  // (policy::ReservedProviderKeys): one written before a sandbox's sync was stripped of them is read so too.
  policy::DropReservedProviderKeys(&record->policy);
  record->providers.assign(stored.providers().begin(), stored.providers().end());
  return true;
}

absl::Status InterceptorRecords::Put(const std::string& sandbox, RecordView record,
                                     std::optional<uint64_t> catalogue_generation,
                                     const std::optional<std::string>* previous, store::AuditEvent* event) {
  return PutEncoded(sandbox, Encode(record), catalogue_generation, previous, event);
}

absl::Status InterceptorRecords::PutEncoded(const std::string& sandbox, std::string bytes,
                                            std::optional<uint64_t> catalogue_generation,
                                            const std::optional<std::string>* previous, store::AuditEvent* event) {
  absl::MutexLock lock(&write_mu_);
  // A validate repeated: the committed record is already this one (durable as it is, written by a fenced or
  // checked write), so nothing is written, and neither `previous` nor the generation is asked: a write
  // racing this read is ordered after it, and one built from a read can only commit over these bytes.
  if (auto stored = store_->GetInterceptorRecord(sandbox); stored.ok() && stored->has_value() && **stored == bytes) {
    if (event == nullptr) return absl::OkStatus();
    // The event still commits, with the record as it is: only over these bytes, so a write made since the
    // read is never undone by writing them again.
    const std::optional<std::string> read = std::move(*stored);
    return store_->PutInterceptorRecord(sandbox, std::move(bytes), std::nullopt, &read, event);
  }
  return store_->PutInterceptorRecord(sandbox, std::move(bytes), catalogue_generation, previous, event);
}

absl::StatusOr<std::optional<InterceptorRecords::Record>> InterceptorRecords::Get(const std::string& sandbox,
                                                                                std::optional<std::string>* raw) const {
  auto stored = store_->GetInterceptorRecord(sandbox);
  if (!stored.ok()) return stored.status();
  if (raw != nullptr) *raw = *stored;
  if (!stored->has_value()) return std::optional<Record>();
  Record record;
  if (!Decode(**stored, &record)) {
    return absl::DataLossError(absl::StrCat("the interceptor's stored record of sandbox '", sandbox, "' does not decode"));
  }
  return std::optional<Record>(std::move(record));
}

absl::Status InterceptorRecords::Forget(const std::string& sandbox) {
  absl::MutexLock lock(&write_mu_);
  return store_->DeleteInterceptorRecord(sandbox);
}

}  // namespace osh::gateway
