#include "gateway/core/log.h"

#include <atomic>
#include <memory>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "store/audit_actor.h"
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace osh::gateway {
namespace {

std::atomic<LogLevel> minimum_level{LogLevel::kInfo};
std::atomic<LogFormat> format{LogFormat::kText};

const char* LowerName(LogLevel level) {
  return level == LogLevel::kInfo ? "info" : level == LogLevel::kWarning ? "warning" : "error";
}
spdlog::level::level_enum SpdlogLevel(LogLevel level) {
  return level == LogLevel::kInfo ? spdlog::level::info
         : level == LogLevel::kWarning ? spdlog::level::warn
                                       : spdlog::level::err;
}

// "%*": the level as this project has always written it (INFO, WARN, ERROR).
class LevelFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& message, const std::tm&, spdlog::memory_buf_t& out) override {
    const char* name = message.level == spdlog::level::info ? "INFO" : message.level == spdlog::level::warn ? "WARN" : "ERROR";
    out.append(name, name + std::char_traits<char>::length(name));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<LevelFlag>(); }
};

// Two loggers, each with its own stderr sink (a sink holds one formatter): text with spdlog's pattern,
// JSON lines made by protobuf's writer. Only one is used at a time (the format is set at start-up).
struct Loggers {
  std::shared_ptr<spdlog::logger> text;
  std::shared_ptr<spdlog::logger> json;
  Loggers() {
    text = std::make_shared<spdlog::logger>("policy-gateway", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<LevelFlag>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %* %n: %v");
    text->set_formatter(std::move(formatter));
    json = std::make_shared<spdlog::logger>("policy-gateway-json", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    json->set_pattern("%v");
    for (auto* logger : {text.get(), json.get()}) {
      logger->set_level(spdlog::level::trace);
      logger->flush_on(spdlog::level::trace);  // every line reaches stderr at once (crash-safe)
    }
  }
};
Loggers& Get() {
  static auto* loggers = new Loggers();  // never destroyed: logging works during static destruction
  return *loggers;
}

}  // namespace

void SetMinimumLogLevel(LogLevel level) { minimum_level = level; }
void SetLogFormat(LogFormat value) { format = value; }

absl::StatusOr<LogLevel> ParseLogLevel(const std::string& name) {
  if (name == "info") return LogLevel::kInfo;
  if (name == "warning") return LogLevel::kWarning;
  if (name == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(absl::StrCat("expected info, warning or error, got '", name, "'"));
}

absl::StatusOr<LogFormat> ParseLogFormat(const std::string& name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(absl::StrCat("expected text or json, got '", name, "'"));
}

std::string OneLine(const std::string& message) {
  const absl::string_view text = absl::StripTrailingAsciiWhitespace(message);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n' || c == '\r') {
      while (i + 1 < text.size() && (text[i + 1] == '\n' || text[i + 1] == '\r' || text[i + 1] == '\t' || text[i + 1] == ' ')) ++i;
      out += "; ";
    } else if (c < 0x20 && c != '\t') {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else if (c == 0x7f) {
      out += "\\x7f";
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void Log(LogLevel level, const std::string& message, const LogFields& event_fields) {
  if (level < minimum_level.load(std::memory_order_relaxed)) return;
  Loggers& loggers = Get();
  if (format.load(std::memory_order_relaxed) == LogFormat::kText) {
    loggers.text->log(SpdlogLevel(level), "{}", OneLine(message));
    return;
  }
  google::protobuf::Struct line;
  auto& fields = *line.mutable_fields();
  fields["time"].set_string_value(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()));
  fields["level"].set_string_value(LowerName(level));
  fields["logger"].set_string_value("policy-gateway");
  fields["message"].set_string_value(message);
  for (const auto& [name, value] : event_fields) {
    if (!fields.contains(name)) fields[name].set_string_value(value);  // the four above stay what they are
  }
  if (const std::string& actor = store::AuditActorScope::Current(); !actor.empty() && !fields.contains("actor")) {
    fields["actor"].set_string_value(actor);
  }
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(line, &json).ok()) {  // not valid UTF-8, say
    line.Clear();
    fields["time"].set_string_value(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()));
    fields["level"].set_string_value(LowerName(level));
    fields["logger"].set_string_value("policy-gateway");
    fields["message"].set_string_value("(a log line that is not valid UTF-8 was dropped)");
    json.clear();
    (void)google::protobuf::util::MessageToJsonString(line, &json);
  }
  loggers.json->log(SpdlogLevel(level), "{}", json);
}

}  // namespace osh::gateway
