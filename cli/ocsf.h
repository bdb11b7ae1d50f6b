// An audit event as an OCSF 1.1 event (docs/audit.md, "OCSF mapping"): each event type maps to the OCSF
// class that fits it, with its category, activity, status and severity; the gateway's own fields are kept
// under `unmapped.openshell`. Pure; thread-safe.
#pragma once

#include <google/protobuf/struct.pb.h>

#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::cli {

google::protobuf::Struct ToOcsf(const openshell::policy::gateway::v1::AuditEvent& event);

}  // namespace osh::cli
