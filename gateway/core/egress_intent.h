// The egress intent an EvaluateEgressRequest asks about. Header-only: policyctl's offline `decide`
// uses it too, without linking the gateway.
#pragma once

#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "policy/egress.h"

namespace osh::gateway {

inline policy::EgressIntent IntentFrom(const openshell::policy::gateway::v1::EvaluateEgressRequest& request) {
  policy::EgressIntent intent;
  intent.host = request.host();
  intent.port = request.port();
  intent.binary = request.binary();
  intent.ancestors.assign(request.ancestors().begin(), request.ancestors().end());
  intent.cmdline_paths.assign(request.cmdline_paths().begin(), request.cmdline_paths().end());
  if (request.has_request()) {
    policy::EgressRequest http;
    http.method = request.request().method();
    http.path = request.request().path();
    for (const auto& param : request.request().query()) {
      http.query.emplace_back(param.key(), std::vector<std::string>(param.values().begin(), param.values().end()));
    }
    intent.request = std::move(http);
  }
  return intent;
}

}  // namespace osh::gateway
