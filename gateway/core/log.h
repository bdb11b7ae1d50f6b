// Logging to stderr through spdlog: one line per event, UTC time with milliseconds, level, message.
// Text lines read "2026-11-27T20:08:00.123Z INFO policy-gateway: message"; JSON lines are one object
// each, {"time","level","logger","message"} plus the event's fields ("sandbox_id", "digest", "reason",
// ...) and "actor" when an admin call caused it (store::AuditActorScope), written with protobuf's JSON
// writer (so every string is escaped). Text lines carry the fields in the message already. Thread-safe.
// Callers bound and escape text they did not write (BoundedText).
#pragma once

#include <cstdint>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace osh::gateway {

enum class LogLevel { kInfo, kWarning, kError };
enum class LogFormat { kText, kJson };

// Named values of a log line, for JSON lines ("sandbox_id", "digest", "version", "reason", "scope").
using LogFields = std::vector<std::pair<std::string, std::string>>;

void Log(LogLevel level, const std::string& message, const LogFields& fields = {});
// A message as one text line: trailing whitespace dropped, each line break (with the indentation after it)
// made "; ", any other control character written \xNN — what a multi-line library error (libpq's) becomes
// in the text format. JSON lines escape on their own.
std::string OneLine(const std::string& message);
// Lines below `level` are dropped (default: kInfo, everything). Thread-safe.
void SetMinimumLogLevel(LogLevel level);
// Text (default) or JSON lines from now on. Thread-safe.
void SetLogFormat(LogFormat format);
// "info" | "warning" | "error", and "text" | "json" (config values); INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(const std::string& name);
absl::StatusOr<LogFormat> ParseLogFormat(const std::string& name);

inline void LogInfo(const std::string& message, const LogFields& fields = {}) { Log(LogLevel::kInfo, message, fields); }
inline void LogWarning(const std::string& message, const LogFields& fields = {}) {
  Log(LogLevel::kWarning, message, fields);
}
inline void LogError(const std::string& message) { Log(LogLevel::kError, message); }

// The one sampling rule for what a caller can repeat at will (refused calls, failed sends): the
// `count`th occurrence (from 1) is logged when it is the first or a multiple of kLogOneIn, so the log
// names the flood and its size without being flooded.
inline constexpr uint64_t kLogOneIn = 1000;
inline constexpr bool SampledForLog(uint64_t count) { return count == 1 || count % kLogOneIn == 0; }

}  // namespace osh::gateway
