// policy-log-witness's log: one line per event on stderr, "2026-11-27T20:08:00.123Z INFO
// policy-log-witness: message" as the gateway writes them. Thread-safe.
#pragma once

#include "absl/strings/string_view.h"

namespace osh::witness {

enum class WitnessLogLevel { kInfo, kWarning, kError };

void WitnessLog(WitnessLogLevel level, absl::string_view message);

// A line about one request (anyone can send requests: replays of the log's public checkpoint, bad
// signatures): at most 20 at once and 2 a second after that, errors always. The next line written says
// how many were left out. Evidence of a log's misbehaviour (a fork, a proof that does not verify: only a
// checkpoint the log signed gets that far) is counted apart, so a flood of other requests never hides it.
void WitnessLogRequest(WitnessLogLevel level, absl::string_view message, bool evidence = false);

}  // namespace osh::witness
