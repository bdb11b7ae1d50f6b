// Minimal structured logging to stderr: one line per event, RFC 3339 UTC time, level, message.
// Thread-safe (one write(2) per line).
#pragma once

#include <string>

namespace osh::gateway {

enum class LogLevel { kInfo, kWarning, kError };

void Log(LogLevel level, const std::string& message);
// Lines below `level` are dropped (default: kInfo, everything). Thread-safe.
void SetMinimumLogLevel(LogLevel level);
inline void LogInfo(const std::string& message) { Log(LogLevel::kInfo, message); }
inline void LogWarning(const std::string& message) { Log(LogLevel::kWarning, message); }
inline void LogError(const std::string& message) { Log(LogLevel::kError, message); }

}  // namespace osh::gateway
