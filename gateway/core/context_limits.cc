#include "gateway/core/context_limits.h"

#include <algorithm>
#include <string>

#include <google/protobuf/stubs/common.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_text.h"

namespace osh::gateway {
namespace {

// "" when `text` is acceptable, else why not.
std::string TextProblem(const std::string& text, size_t max_bytes) {
  if (text.size() > max_bytes) return absl::StrCat(text.size(), " bytes, at most ", max_bytes);
  if (!google::protobuf::internal::IsStructurallyValidUTF8(text.data(), static_cast<int>(text.size()))) {
    return "not valid UTF-8";
  }
  const bool control = std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
  if (control) return "control characters are not allowed";
  // What BoundedText would escape is refused too, so that a checked value is shown (in audit events, logs,
  // messages) as it is: two values never look alike there.
  if (common::BoundedText(text, text.size() + 64) != text) {
    return "C1 controls and bidirectional formatting characters are not allowed";
  }
  return "";
}

// A field name quoting a client-chosen key safely (bounded, escaped).
std::string Quoted(const std::string& key) {
  return absl::StrCat("\"", absl::CEscape(key.substr(0, 64)), key.size() > 64 ? "…" : "", "\"");
}

}  // namespace

absl::Status CheckSandboxId(const std::string& sandbox_id, const ContextLimits& limits) {
  if (sandbox_id.empty()) return absl::InvalidArgumentError("required");
  if (auto problem = TextProblem(sandbox_id, limits.sandbox_id_bytes); !problem.empty()) {
    return absl::InvalidArgumentError(problem);
  }
  return absl::OkStatus();
}

absl::Status CheckContext(const openshell::policy::driver::v1::RuntimeContext& context, const ContextLimits& limits) {
  if (context.sandbox_id().empty()) return absl::InvalidArgumentError("context.sandbox_id: required");
  if (context.user_subject().empty()) return absl::InvalidArgumentError("context.user_subject: required");
  if (absl::Status id = CheckSandboxId(context.sandbox_id(), limits); !id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("context.sandbox_id: ", id.message()));
  }
  if (auto problem = TextProblem(context.user_subject(), limits.user_subject_bytes); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("context.user_subject: ", problem));
  }
  if (static_cast<size_t>(context.attributes_size()) > limits.attributes) {
    return absl::InvalidArgumentError(
        absl::StrCat("context.attributes: ", context.attributes_size(), " entries, at most ", limits.attributes));
  }
  for (const auto& [key, value] : context.attributes()) {
    if (auto problem = TextProblem(key, limits.attribute_key_bytes); !problem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("context.attributes: key ", Quoted(key), ": ", problem));
    }
    if (auto problem = TextProblem(value, limits.attribute_value_bytes); !problem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("context.attributes[", Quoted(key), "]: ", problem));
    }
  }
  return absl::OkStatus();
}

}  // namespace osh::gateway
