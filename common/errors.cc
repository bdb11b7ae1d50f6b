#include "common/errors.h"

#include <optional>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"

namespace osh::common {
namespace {

std::optional<google::rpc::ErrorInfo> ErrorInfoOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kErrorInfoTypeUrl);
  if (!payload) return std::nullopt;
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) return std::nullopt;
  return info;
}

void Attach(absl::Status* status, const google::rpc::ErrorInfo& info) {
  status->SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
}

bool LooksLikeReason(absl::string_view word) {
  if (word.empty() || word.size() > 40) return false;
  for (char c : word) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
  }
  return true;
}

}  // namespace

absl::Status Refused(absl::StatusCode code, absl::string_view reason, absl::string_view detail) {
  absl::Status status(code, absl::StrCat(reason, ": ", detail));
  return WithReason(std::move(status), reason);
}

absl::Status StorageError(absl::StatusCode code, absl::string_view backend, absl::string_view full_detail) {
  absl::Status status(code, full_detail);
  if (status.ok()) return status;
  google::rpc::ErrorInfo info;
  info.set_reason(kStorageErrorReason);
  info.set_domain(kErrorDomain);
  (*info.mutable_metadata())["backend"] = std::string(backend);
  Attach(&status, info);
  return status;
}

bool IsStorageError(const absl::Status& status) {
  const auto info = ErrorInfoOf(status);
  return info && info->reason() == kStorageErrorReason;
}

std::string ReasonOf(const absl::Status& status) {
  if (status.ok()) return "";
  if (const auto info = ErrorInfoOf(status)) return info->reason();
  const absl::string_view message = status.message();
  const size_t colon = message.find(':');
  if (colon == absl::string_view::npos) return "";
  return LooksLikeReason(message.substr(0, colon)) ? std::string(message.substr(0, colon)) : "";
}

absl::Status WithReason(absl::Status status, absl::string_view reason) {
  if (status.ok() || reason.empty()) return status;
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(reason));
  info.set_domain(kErrorDomain);
  Attach(&status, info);
  return status;
}

absl::Status Annotated(const absl::Status& status, absl::string_view context) {
  return Annotated(status, context, status.code());
}

absl::Status Annotated(const absl::Status& status, absl::string_view context, absl::StatusCode code) {
  if (status.ok()) return status;
  absl::Status out(code, absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&out](absl::string_view type_url, const absl::Cord& payload) { out.SetPayload(type_url, payload); });
  return out;
}

std::string ErrorInfoBytes(const absl::Status& status) {
  const auto payload = status.GetPayload(kErrorInfoTypeUrl);
  return payload ? std::string(*payload) : std::string();
}

}  // namespace osh::common
