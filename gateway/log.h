// Logging to stderr through spdlog: one line per event, UTC time with milliseconds, level, message.
// Text lines read "2026-11-27T20:08:00.123Z INFO policy-gateway: message"; JSON lines are one object
// each, {"time","level","logger","message"}, written with protobuf's JSON writer (so every string is
// escaped). Thread-safe. Callers bound and escape text they did not write (BoundedText).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace osh::gateway {

enum class LogLevel { kInfo, kWarning, kError };
enum class LogFormat { kText, kJson };

void Log(LogLevel level, const std::string& message);
// Lines below `level` are dropped (default: kInfo, everything). Thread-safe.
void SetMinimumLogLevel(LogLevel level);
// Text (default) or JSON lines from now on. Thread-safe.
void SetLogFormat(LogFormat format);
// "info" | "warning" | "error", and "text" | "json" (config values); INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(const std::string& name);
absl::StatusOr<LogFormat> ParseLogFormat(const std::string& name);

inline void LogInfo(const std::string& message) { Log(LogLevel::kInfo, message); }
inline void LogWarning(const std::string& message) { Log(LogLevel::kWarning, message); }
inline void LogError(const std::string& message) { Log(LogLevel::kError, message); }

}  // namespace osh::gateway
