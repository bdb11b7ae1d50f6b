#include "policy/explain_wire.h"

namespace osh::policy {

static void ClassToProto(const ChangeClass& c, openshell::policy::gateway::v1::ChangeClass* out) {
  out->set_area(std::string(ChangeAreaName(c.area)));
  out->set_description(c.description);
  out->set_partial(c.partial);
  for (const auto& r : c.from_rules) out->mutable_rules()->add_from(r);
  for (const auto& r : c.to_rules) out->mutable_rules()->add_to(r);
  if (c.intent) {
    auto* w = out->mutable_witness();
    w->set_host(c.intent->host);
    w->set_port(c.intent->port);
    w->set_binary(c.intent->binary);
    for (const auto& a : c.intent->ancestors) w->add_ancestors(a);
    if (c.intent->request) {
      w->set_method(c.intent->request->method);
      w->set_path(c.intent->request->path);
      for (const auto& [key, values] : c.intent->request->query) {
        auto* q = w->add_query();
        q->set_key(key);
        for (const auto& v : values) q->add_values(v);
      }
    }
  } else if (!c.fs_path.empty()) {
    out->mutable_witness()->set_path(c.fs_path);
    out->mutable_witness()->set_access(c.fs_access);
  } else if (!c.process_field.empty()) {
    out->mutable_witness()->set_field(c.process_field);
    out->mutable_witness()->set_value(c.process_value);
  }
}

openshell::policy::gateway::v1::ExplainChangeResponse ExplanationToProto(const ChangeExplanation& explanation) {
  openshell::policy::gateway::v1::ExplainChangeResponse out;
  for (const auto& c : explanation.added) ClassToProto(c, out.add_added());
  for (const auto& c : explanation.removed) ClassToProto(c, out.add_removed());
  for (const auto& c : explanation.unknown) ClassToProto(c, out.add_unknown());
  return out;
}

}  // namespace osh::policy
