#include "witness/config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tlog/note.h"

namespace osh::witness {
namespace {

absl::Status WitnessConfigError(const std::string& file, const toml::node& node, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(file, ":", node.source().begin.line, ": ", why));
}

absl::Status ReadString(const std::string& file, const toml::node& node, absl::string_view key, std::string* out) {
  if (!node.is_string()) return WitnessConfigError(file, node, absl::StrCat("'", key, "' must be a string"));
  *out = *node.value<std::string>();
  return absl::OkStatus();
}

absl::Status ReadLog(const std::string& file, const toml::table& table, WitnessedLog* log) {
  for (const auto& [raw_key, node] : table) {
    const std::string key(raw_key.str());
    absl::Status s;
    if (key == "origin") s = ReadString(file, node, "log.origin", &log->origin);
    else if (key == "key") s = ReadString(file, node, "log.key", &log->verifier_key);
    else s = WitnessConfigError(file, node, absl::StrCat("unknown key 'log.", key, "' (a [[log]] has origin and key)"));
    if (!s.ok()) return s;
  }
  if (log->origin.empty() || log->verifier_key.empty()) {
    return WitnessConfigError(file, table, "a [[log]] needs a non-empty origin and key");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::pair<std::string, int>> SplitListenAddress(absl::string_view listen) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address \"", listen, "\" is not host:port"));
  }
  std::string host(listen.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return std::make_pair(host, port);
}

absl::StatusOr<WitnessConfig> ParseWitnessConfig(absl::string_view text, const std::string& file) {
  WitnessConfig config;
  try {
    const toml::table table = toml::parse(std::string_view(text.data(), text.size()), file);
    for (const auto& [raw_key, node] : table) {
      const std::string key(raw_key.str());
      absl::Status s;
      if (key == "name") s = ReadString(file, node, key, &config.name);
      else if (key == "key_file") s = ReadString(file, node, key, &config.key_file);
      else if (key == "listen") s = ReadString(file, node, key, &config.listen);
      else if (key == "state_file") s = ReadString(file, node, key, &config.state_file);
      else if (key == "submission_prefix") s = ReadString(file, node, key, &config.submission_prefix);
      else if (key == "request_timeout_s" || key == "max_request_bytes") {
        const std::optional<int64_t> n = node.value<int64_t>();
        if (!node.is_integer() || !n || *n < 1 || (key == "request_timeout_s" && *n > 3600) ||
            (key == "max_request_bytes" && *n > static_cast<int64_t>(kMaxRequestBytes))) {
          s = WitnessConfigError(file, node,
                                 key == "request_timeout_s" ? "'request_timeout_s' must be an integer from 1 to 3600"
                                                            : absl::StrCat("'max_request_bytes' must be an integer from 1 to ", kMaxRequestBytes));
        } else if (key == "request_timeout_s") {
          config.request_timeout_s = static_cast<int>(*n);
        } else {
          config.max_request_bytes = static_cast<size_t>(*n);
        }
      } else if (key == "log") {
        if (!node.is_array_of_tables()) s = WitnessConfigError(file, node, "'log' must be [[log]] tables");
        for (size_t i = 0; s.ok() && node.is_array_of_tables() && i < node.as_array()->size(); ++i) {
          WitnessedLog log;
          s = ReadLog(file, *node.as_array()->get(i)->as_table(), &log);
          config.logs.push_back(std::move(log));
        }
      } else {
        s = WitnessConfigError(file, node, absl::StrCat("unknown key '", key, "'"));
      }
      if (!s.ok()) return s;
    }
  } catch (const toml::parse_error& error) {
    return absl::InvalidArgumentError(absl::StrCat(file, ":", error.source().begin.line, ": ", std::string(error.description())));
  }
  const auto missing = [&file](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": '", what, "' is required"));
  };
  if (config.name.empty()) return missing("name");
  if (absl::Status s = tlog::ValidateKeyName(config.name); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": name: ", s.message()));
  }
  if (config.key_file.empty()) return missing("key_file");
  if (config.state_file.empty()) return missing("state_file");
  if (config.logs.empty()) return absl::InvalidArgumentError(absl::StrCat(file, ": no [[log]] to witness"));
  if (!config.submission_prefix.empty() &&
      (config.submission_prefix.front() != '/' || config.submission_prefix.back() == '/')) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": submission_prefix must start with '/' and not end with one"));
  }
  if (absl::StatusOr<std::pair<std::string, int>> hp = SplitListenAddress(config.listen); !hp.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", hp.status().message()));
  }
  return config;
}

absl::StatusOr<WitnessConfig> ReadWitnessConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read: ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return ParseWitnessConfig(text.str(), path);
}

}  // namespace osh::witness
