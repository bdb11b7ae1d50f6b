// A strict look at protobuf wire bytes, for bodies that must mean exactly one thing. The protobuf
// parser accepts encodings whose meaning depends on merge rules — a singular field given twice (the last
// wins, or messages merge), two members of one oneof, a map key given twice (the last wins), a map entry
// carrying a field other than key and value (silently dropped) — and a check of the parsed message
// cannot see them. CheckStrictWire refuses each, naming the field path; it also refuses unknown field
// numbers and wire types that do not match the field. Pure function, thread-safe.
#pragma once

#include <string>

#include <google/protobuf/descriptor.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace osh::policy {

// OK, or INVALID_ARGUMENT "<path>: <what>" (e.g. "process: given twice",
// "network_policies[\"gh\"]: map key given twice", "network_policies: field 3 in a map entry").
absl::Status CheckStrictWire(const google::protobuf::Descriptor& type, absl::string_view bytes);

}  // namespace osh::policy
