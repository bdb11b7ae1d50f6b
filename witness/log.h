// policy-log-witness's log: one line per event on stderr, "2026-11-27T20:08:00.123Z INFO
// policy-log-witness: message" as the gateway writes them. Thread-safe.
#pragma once

#include "absl/strings/string_view.h"

namespace osh::witness {

enum class WitnessLogLevel { kInfo, kWarning, kError };

void WitnessLog(WitnessLogLevel level, absl::string_view message);

}  // namespace osh::witness
