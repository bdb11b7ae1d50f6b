#include "cli/ocsf.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace osh::cli {
namespace {

namespace pb = google::protobuf;

// One audit event type's OCSF class and activity (docs/audit.md keeps this table).
struct OcsfClass {
  const char* type;
  int class_uid;
  const char* class_name;
  int category_uid;
  const char* category_name;
  int activity_id;
  const char* activity_name;
  const char* entity_type;  // what the event is about, for Entity Management's `entity` ("" otherwise)
};

constexpr OcsfClass kOcsfClasses[] = {
    {"admission", 3004, "Entity Management", 3, "Identity & Access Management", 1, "Create", "sandbox"},
    {"refusal", 3004, "Entity Management", 3, "Identity & Access Management", 1, "Create", "sandbox"},
    {"refresh", 3004, "Entity Management", 3, "Identity & Access Management", 3, "Update", "sandbox"},
    {"reprojection", 3004, "Entity Management", 3, "Identity & Access Management", 3, "Update", "policy"},
    {"deletion", 3004, "Entity Management", 3, "Identity & Access Management", 4, "Delete", "sandbox"},
    {"release", 3004, "Entity Management", 3, "Identity & Access Management", 4, "Delete", "driver_handle"},
    {"mutation", 3004, "Entity Management", 3, "Identity & Access Management", 3, "Update", "policy"},
    {"mutation_refused", 3004, "Entity Management", 3, "Identity & Access Management", 3, "Update", "policy"},
    {"ceiling_set", 3004, "Entity Management", 3, "Identity & Access Management", 3, "Update", "ceiling"},
    {"trust_store_reload", 3004, "Entity Management", 3, "Identity & Access Management", 3, "Update", "trust_store"},
    {"report", 5019, "Device Config State Change", 5, "Discovery", 1, "Log", ""},
    {"authentication_failures", 3002, "Authentication", 3, "Identity & Access Management", 1, "Logon", ""},
    {"driver_up", 6002, "Application Lifecycle", 6, "Application Activity", 3, "Start", ""},
    {"driver_down", 6002, "Application Lifecycle", 6, "Application Activity", 4, "Stop", ""},
    {"reverification_failed", 2004, "Detection Finding", 2, "Findings", 1, "Create", ""},
    {"state_rollback_accepted", 2004, "Detection Finding", 2, "Findings", 1, "Create", ""},
    {"interception", 6003, "API Activity", 6, "Application Activity", 99, "Other", ""},
};
// An event type this table does not know yet (a newer gateway): an API Activity, activity Other.
constexpr OcsfClass kOther = {"", 6003, "API Activity", 6, "Application Activity", 99, "Other", ""};

const OcsfClass& ClassOf(const std::string& type) {
  for (const auto& c : kOcsfClasses) {
    if (type == c.type) return c;
  }
  return kOther;
}

pb::Value Num(double n) {
  pb::Value v;
  v.set_number_value(n);
  return v;
}
pb::Value Str(const std::string& s) {
  pb::Value v;
  v.set_string_value(s);
  return v;
}
pb::Value Obj(pb::Struct s) {
  pb::Value v;
  *v.mutable_struct_value() = std::move(s);
  return v;
}

}  // namespace

pb::Struct ToOcsf(const openshell::policy::gateway::v1::AuditEvent& e) {
  const OcsfClass& c = ClassOf(e.type());
  const bool failure = e.outcome() == "refused" || e.outcome() == "failed" || e.outcome() == "kept_last_good" ||
                       e.outcome() == "unavailable" || e.type() == "refusal" || e.type() == "mutation_refused" ||
                       e.type() == "authentication_failures";
  const bool finding = c.class_uid == 2004;
  pb::Struct out;
  auto& f = *out.mutable_fields();
  f["class_uid"] = Num(c.class_uid);
  f["class_name"] = Str(c.class_name);
  f["category_uid"] = Num(c.category_uid);
  f["category_name"] = Str(c.category_name);
  f["activity_id"] = Num(c.activity_id);
  f["activity_name"] = Str(c.activity_name);
  f["type_uid"] = Num(c.class_uid * 100.0 + c.activity_id);
  f["time"] = Num(static_cast<double>(e.time_unix_ms()));
  f["severity_id"] = Num(finding ? 4 : failure ? 3 : 1);  // High, Medium, Informational
  f["severity"] = Str(finding ? "High" : failure ? "Medium" : "Informational");
  f["status_id"] = Num(failure ? 2 : 1);
  f["status"] = Str(failure ? "Failure" : "Success");
  f["status_code"] = Str(e.outcome());
  if (!e.reason().empty()) f["status_detail"] = Str(e.reason());
  f["message"] = Str(absl::StrCat(e.type(), " ", e.outcome(), e.sandbox_id().empty() ? "" : " sandbox ", e.sandbox_id()));

  pb::Struct product;
  (*product.mutable_fields())["name"] = Str("policy-gateway");
  (*product.mutable_fields())["vendor_name"] = Str("OpenShell");
  pb::Struct metadata;
  (*metadata.mutable_fields())["version"] = Str("1.1.0");
  (*metadata.mutable_fields())["product"] = Obj(std::move(product));
  (*metadata.mutable_fields())["uid"] = Str(e.hash());
  (*metadata.mutable_fields())["sequence"] = Num(static_cast<double>(e.seq()));
  f["metadata"] = Obj(std::move(metadata));

  if (!e.actor().empty()) {
    pb::Struct user, actor;
    (*user.mutable_fields())["uid"] = Str(e.actor());
    (*actor.mutable_fields())["user"] = Obj(std::move(user));
    f["actor"] = Obj(std::move(actor));
  }
  if (c.class_uid == 3004) {
    pb::Struct entity;
    (*entity.mutable_fields())["type"] = Str(c.entity_type);
    (*entity.mutable_fields())["name"] = Str(e.sandbox_id());
    if (!e.policy_digest().empty()) (*entity.mutable_fields())["uid"] = Str(e.policy_digest());
    (*entity.mutable_fields())["version"] = Str(absl::StrCat(e.policy_version()));
    f["entity"] = Obj(std::move(entity));
  }
  if (c.class_uid == 5019) {
    pb::Struct device;
    (*device.mutable_fields())["name"] = Str(e.sandbox_id());
    (*device.mutable_fields())["type"] = Str("sandbox");
    f["device"] = Obj(std::move(device));
  }
  if (finding) {
    pb::Struct info;
    (*info.mutable_fields())["title"] = Str(e.type());
    (*info.mutable_fields())["uid"] = Str(e.hash());
    f["finding_info"] = Obj(std::move(info));
  }

  pb::Struct gateway;  // the event itself, every field (64-bit numbers as strings, as in audit export)
  auto& g = *gateway.mutable_fields();
  g["seq"] = Str(absl::StrCat(e.seq()));
  g["time_unix_ms"] = Str(absl::StrCat(e.time_unix_ms()));
  g["type"] = Str(e.type());
  g["outcome"] = Str(e.outcome());
  g["sandbox_id"] = Str(e.sandbox_id());
  g["surface_id"] = Str(e.surface_id());
  g["policy_digest"] = Str(e.policy_digest());
  g["policy_version"] = Str(absl::StrCat(e.policy_version()));
  pb::Value keys;
  for (const auto& key : e.key_ids()) *keys.mutable_list_value()->add_values() = Str(key);
  if (e.key_ids().empty()) keys.mutable_list_value();
  g["key_ids"] = keys;
  pb::Struct context;
  for (const auto& [k, v] : e.audit_context()) (*context.mutable_fields())[k] = Str(v);
  g["audit_context"] = Obj(std::move(context));
  g["reason"] = Str(e.reason());
  g["actor"] = Str(e.actor());
  g["prev_hash"] = Str(e.prev_hash());
  g["hash"] = Str(e.hash());
  pb::Struct unmapped;
  (*unmapped.mutable_fields())["openshell"] = Obj(std::move(gateway));
  f["unmapped"] = Obj(std::move(unmapped));
  return out;
}

}  // namespace osh::cli
