#include "policy/replay.h"

#include <simdjson.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace osh::policy {

namespace dom = simdjson::dom;

namespace {

constexpr absl::string_view kNoEndpoint = "(no matching rule)";

// Parses intents with a simdjson DOM parser (the whole line is validated as JSON, UTF-8 included, with
// the SIMD kernel the CPU has; see the header for the accepted keys).
class IntentParser {
 public:
  IntentParser(absl::string_view source, size_t line_number) : source_(source), line_number_(line_number) {}

  // `data` must have SIMDJSON_PADDING readable bytes after its `len`.
  absl::Status Parse(dom::parser& parser, const char* data, size_t len, EgressIntent* intent) {
    intent->host.clear();
    intent->port = 0;
    intent->binary.clear();
    intent->ancestors.clear();
    intent->cmdline_paths.clear();
    intent->request.reset();
    dom::element doc;
    // The caller guarantees SIMDJSON_PADDING readable bytes after the line: no copy.
    if (auto e = parser.parse(data, len, /*realloc_if_needed=*/false).get(doc)) return Bad("", NotJson(e));
    dom::object object;
    if (doc.get_object().get(object)) return Bad("", "expected a JSON object");
    unsigned seen = 0;
    for (const dom::key_value_pair member : object) {
      const std::string_view key = member.key;
      dom::element value = member.value;
      unsigned bit = 0;
      absl::Status status;
      if (key == "host") {
        bit = 1, status = String(value, "host", &intent->host);
      } else if (key == "port") {
        bit = 2, status = Port(value, &intent->port);
      } else if (key == "binary") {
        bit = 4, status = String(value, "binary", &intent->binary);
      } else if (key == "ancestors") {
        bit = 8, status = Strings(value, "ancestors", &intent->ancestors);
      } else if (key == "cmdline_paths" || key == "cmdlinePaths") {
        bit = 16, status = Strings(value, "cmdline_paths", &intent->cmdline_paths);
      } else if (key == "request") {
        bit = 32, status = Request(value, intent);
      } else if (key == "sandbox_id" || key == "sandboxId" || key == "policy") {
        return Bad(std::string(key), "a replayed intent names no policy: the policies are given on the command line");
      } else {
        return Bad(std::string(key), "unknown key");
      }
      if (!status.ok()) return status;
      if ((seen & bit) != 0) return Bad(std::string(key), "given twice");
      seen |= bit;
    }
    return absl::OkStatus();
  }

 private:
  static std::string NotJson(simdjson::error_code e) {
    return absl::StrCat("not valid JSON (", simdjson::error_message(e), ")");
  }

  absl::Status Bad(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ":", line_number_, ": ", field, field.empty() ? "" : ": ", what));
  }

  static bool IsNull(dom::element value) { return value.type() == dom::element_type::NULL_VALUE; }

  absl::Status String(dom::element value, const std::string& field, std::string* out) {
    if (IsNull(value)) return absl::OkStatus();
    std::string_view s;
    if (value.get_string().get(s)) return Bad(field, "expected a string");
    out->assign(s.data(), s.size());
    return absl::OkStatus();
  }

  absl::Status Strings(dom::element value, const std::string& field, std::vector<std::string>* out) {
    if (IsNull(value)) return absl::OkStatus();
    dom::array array;
    if (value.get_array().get(array)) return Bad(field, "expected an array of strings");
    size_t i = 0;
    for (auto element : array) {
      std::string_view s;
      if (element.get_string().get(s)) return Bad(absl::StrCat(field, "[", i, "]"), "expected a string");
      out->emplace_back(s);
      ++i;
    }
    return absl::OkStatus();
  }

  absl::Status Port(dom::element value, uint32_t* port) {
    if (IsNull(value)) return absl::OkStatus();
    uint64_t n = 0;
    if (value.type() == dom::element_type::STRING) {  // ProtoJSON writes integers as numbers or decimal strings
      std::string_view s;
      if (value.get_string().get(s) || !absl::SimpleAtoi(absl::string_view(s.data(), s.size()), &n)) {
        return Bad("port", "expected a decimal number");
      }
    } else if (value.get_uint64().get(n)) {
      return Bad("port", "expected a non-negative integer");
    }
    if (n > std::numeric_limits<uint32_t>::max()) return Bad("port", "out of range");
    *port = static_cast<uint32_t>(n);
    return absl::OkStatus();
  }

  absl::Status Request(dom::element value, EgressIntent* intent) {
    if (IsNull(value)) return absl::OkStatus();
    dom::object object;
    if (value.get_object().get(object)) return Bad("request", "expected an object");
    EgressRequest& request = intent->request.emplace();
    unsigned seen = 0;
    for (const dom::key_value_pair member : object) {
      const absl::string_view key(member.key.data(), member.key.size());
      dom::element v = member.value;
      unsigned bit = 0;
      absl::Status status;
      if (key == "method") {
        bit = 1, status = String(v, "request.method", &request.method);
      } else if (key == "path") {
        bit = 2, status = String(v, "request.path", &request.path);
      } else if (key == "query") {
        bit = 4, status = Query(v, &request);
      } else {
        return Bad(absl::StrCat("request.", key), "unknown key");
      }
      if (!status.ok()) return status;
      if ((seen & bit) != 0) return Bad(absl::StrCat("request.", key), "given twice");
      seen |= bit;
    }
    if (request.path.empty()) request.path = "/";  // as `policyctl decide` and EvaluateEgress
    return absl::OkStatus();
  }

  absl::Status Query(dom::element value, EgressRequest* request) {
    if (IsNull(value)) return absl::OkStatus();
    dom::array array;
    if (value.get_array().get(array)) return Bad("request.query", "expected an array of {key, values}");
    size_t i = 0;
    for (auto element : array) {
      const std::string at = absl::StrCat("request.query[", i++, "]");
      dom::object object;
      if (element.get_object().get(object)) return Bad(at, "expected an object {key, values}");
      std::string key;
      std::vector<std::string> values;
      for (const dom::key_value_pair member : object) {
        const absl::string_view name(member.key.data(), member.key.size());
        dom::element v = member.value;
        absl::Status status;
        if (name == "key") {
          status = String(v, at + ".key", &key);
        } else if (name == "values") {
          status = Strings(v, at + ".values", &values);
        } else {
          return Bad(absl::StrCat(at, ".", name), "unknown key");
        }
        if (!status.ok()) return status;
      }
      request->query.emplace_back(std::move(key), std::move(values));
    }
    return absl::OkStatus();
  }

  absl::string_view source_;
  size_t line_number_;
};

bool Blank(absl::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

}  // namespace

absl::Status ParseIntentLine(absl::string_view line, absl::string_view source, size_t line_number,
                             EgressIntent* intent) {
  dom::parser parser;
  const simdjson::padded_string padded(line.data(), line.size());
  return IntentParser(source, line_number).Parse(parser, padded.data(), padded.size(), intent);
}

struct IntentLineReader::Impl {
  std::FILE* file = nullptr;
  bool owned = false;
  std::string source;
  dom::parser parser;
  // [begin, end) holds bytes read and not yet returned; `end` never passes the size less the padding, so a
  // line anywhere in the buffer has the padding the parser reads past its end.
  std::vector<char> buffer = std::vector<char>(2 * kMaxIntentLineBytes + simdjson::SIMDJSON_PADDING);
  size_t begin = 0, end = 0;
  bool eof = false;

  ~Impl() {
    if (owned && file != nullptr) std::fclose(file);
  }
  size_t usable() const { return buffer.size() - simdjson::SIMDJSON_PADDING; }

  // Reads more; false at the end of input. INVALID_ARGUMENT on a read error.
  absl::StatusOr<bool> Fill() {
    if (eof) return false;
    if (begin > 0) {
      std::memmove(buffer.data(), buffer.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    const size_t n = std::fread(buffer.data() + end, 1, usable() - end, file);
    end += n;
    if (n == 0) {
      if (std::ferror(file)) return absl::InvalidArgumentError(absl::StrCat(source, ": read error: ", std::strerror(errno)));
      eof = true;
      return false;
    }
    return true;
  }
};

IntentLineReader::IntentLineReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
IntentLineReader::~IntentLineReader() = default;

absl::StatusOr<std::unique_ptr<IntentLineReader>> IntentLineReader::Open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  if (path == "-") {
    impl->file = stdin;
    impl->source = "<stdin>";
  } else {
    impl->file = std::fopen(path.c_str(), "rb");
    if (impl->file == nullptr) {
      const int err = errno;
      const std::string message = absl::StrCat(path, ": cannot read: ", std::strerror(err));
      if (err == ENOENT) return absl::NotFoundError(message);
      if (err == EACCES) return absl::PermissionDeniedError(message);
      return absl::InvalidArgumentError(message);
    }
    impl->owned = true;
    impl->source = path;
  }
  return std::unique_ptr<IntentLineReader>(new IntentLineReader(std::move(impl)));
}

absl::StatusOr<bool> IntentLineReader::Next(EgressIntent* intent) {
  Impl& r = *impl_;
  for (;;) {
    const char* start = r.buffer.data() + r.begin;
    const void* newline = std::memchr(start, '\n', r.end - r.begin);
    size_t len;
    if (newline != nullptr) {
      len = static_cast<size_t>(static_cast<const char*>(newline) - start);
    } else if (r.end - r.begin > kMaxIntentLineBytes) {
      return absl::InvalidArgumentError(absl::StrCat(r.source, ":", line_number_ + 1, ": a line over ",
                                                     kMaxIntentLineBytes, " bytes"));
    } else {
      auto more = r.Fill();
      if (!more.ok()) return more.status();
      if (*more) continue;
      if (r.begin == r.end) return false;  // the end, after a final newline
      len = r.end - r.begin;               // a last line without one
      start = r.buffer.data() + r.begin;
    }
    ++line_number_;
    r.begin += len + (newline != nullptr ? 1 : 0);
    line_ = absl::string_view(start, len);
    if (!line_.empty() && line_.back() == '\r') line_.remove_suffix(1);
    if (Blank(line_)) continue;
    if (auto status = IntentParser(r.source, line_number_).Parse(r.parser, line_.data(), line_.size(), intent);
        !status.ok()) {
      return status;
    }
    return true;
  }
}

absl::string_view ResponsibleFor(const EgressDecision& decision) {
  if (!decision.rule.empty()) return decision.rule;
  if (!decision.endpoint.empty()) return decision.endpoint;
  if (!decision.matched_policy.empty()) return decision.matched_policy;
  return kNoEndpoint;
}

void ReplayTally::Add(const EgressDecision& from, const EgressDecision* to, size_t line_number,
                      absl::string_view line) {
  ++intents_;
  if (two_ && to->verdict == from.verdict) return;
  if (two_) ++changed_;
  key_.clear();
  absl::StrAppend(&key_, VerdictName(from.verdict), "\x1f", ResponsibleFor(from));
  if (two_) absl::StrAppend(&key_, "\x1f", VerdictName(to->verdict), "\x1f", ResponsibleFor(*to));
  auto it = groups_.find(key_);
  if (it == groups_.end()) {
    ReplayGroup group;
    group.from_verdict = std::string(VerdictName(from.verdict));
    group.from_rule = std::string(ResponsibleFor(from));
    if (two_) {
      group.to_verdict = std::string(VerdictName(to->verdict));
      group.to_rule = std::string(ResponsibleFor(*to));
    }
    group.example_line = line_number;
    group.example = std::string(line);
    group.example_reason = two_ ? to->reason : from.reason;
    it = groups_.emplace(key_, std::move(group)).first;
  }
  ++it->second.count;
}

ReplayReport ReplayTally::Finish() && {
  ReplayReport report;
  report.intents = intents_;
  report.changed = changed_;
  report.groups.reserve(groups_.size());
  for (auto& [key, group] : groups_) report.groups.push_back(std::move(group));
  std::sort(report.groups.begin(), report.groups.end(), [](const ReplayGroup& a, const ReplayGroup& b) {
    return a.count != b.count ? a.count > b.count : a.example_line < b.example_line;
  });
  return report;
}

absl::StatusOr<ReplayReport> ReplayFile(const std::string& path, const EgressPolicy& from, const EgressPolicy* to) {
  auto reader = IntentLineReader::Open(path);
  if (!reader.ok()) return reader.status();
  ReplayTally tally(to != nullptr);
  EgressIntent intent;
  EgressDecision a, b;
  for (;;) {
    auto more = (*reader)->Next(&intent);
    if (!more.ok()) return more.status();
    if (!*more) break;
    from.Decide(intent, &a);
    if (to != nullptr) to->Decide(intent, &b);
    tally.Add(a, to != nullptr ? &b : nullptr, (*reader)->line_number(), (*reader)->line());
  }
  return std::move(tally).Finish();
}

}  // namespace osh::policy
