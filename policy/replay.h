// Replay: recorded egress intents decided again — against one policy (what it decides, grouped by the
// rule responsible), or against two (which decisions change, grouped by the rules that change them).
//
// The input is JSON lines, one intent per line in the EvaluateEgress intent form: the ProtoJSON of an
// EvaluateEgressRequest without its policy source. Keys (proto or lowerCamelCase spelling): host, port
// (number or decimal string), binary, ancestors, cmdline_paths, request {method, path, query [{key,
// values}]}; null stands for the default. Unknown keys, wrong types and trailing text are errors naming
// the source and line ("traffic.jsonl:17: request.method: expected a string"). Blank lines are skipped.
//
// Thread safety: an IntentLineReader and a ReplayTally are used by one thread at a time; the policies
// decided against are shared read-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "policy/egress.h"

namespace osh::policy {

// Longest line accepted (an intent is a few hundred bytes; a longer line is an error, not a stall).
inline constexpr size_t kMaxIntentLineBytes = 1 << 20;

// Reads intents from a file ("-": standard input) in blocks, without holding the whole file.
class IntentLineReader {
 public:
  // NOT_FOUND / PERMISSION_DENIED naming the path when it cannot be opened.
  static absl::StatusOr<std::unique_ptr<IntentLineReader>> Open(const std::string& path);
  ~IntentLineReader();
  IntentLineReader(const IntentLineReader&) = delete;
  IntentLineReader& operator=(const IntentLineReader&) = delete;

  // The next intent into `intent` (overwritten; its strings keep their capacity). Returns false at the end
  // of the input, or INVALID_ARGUMENT "<source>:<line>: <field>: <what>" for a line that is not an intent.
  absl::StatusOr<bool> Next(EgressIntent* intent);

  // The line `Next` returned last: its 1-based number and its text (valid until the next call).
  size_t line_number() const { return line_number_; }
  absl::string_view line() const { return line_; }

  struct Impl;  // the parser and the block buffer; defined in replay.cc

 private:
  explicit IntentLineReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  size_t line_number_ = 0;
  absl::string_view line_;
};

// Parses one line (exposed for tests and for callers holding lines already). `source` and `line_number`
// name it in errors.
absl::Status ParseIntentLine(absl::string_view line, absl::string_view source, size_t line_number,
                             EgressIntent* intent);

// What made a decision: the rule, else the endpoint, else the matched policy entry, else "(no matching rule)".
absl::string_view ResponsibleFor(const EgressDecision& decision);

// One group of a replay: intents with the same decision(s) and the same responsible rule(s).
struct ReplayGroup {
  std::string from_verdict;  // the decision of the (first) policy
  std::string from_rule;     // ResponsibleFor it
  std::string to_verdict;    // against two: the second policy's decision; else empty
  std::string to_rule;
  uint64_t count = 0;
  size_t example_line = 0;   // the first intent of the group
  std::string example;       // its line as read
  std::string example_reason;  // the (first / changed-to) decision's reason for that intent
};

struct ReplayReport {
  uint64_t intents = 0;
  uint64_t changed = 0;              // against two: intents whose decision differs
  std::vector<ReplayGroup> groups;   // largest first, then by first line
};

// Counts decisions into groups. Against one policy every intent is grouped; against two only those whose
// decision changes.
class ReplayTally {
 public:
  explicit ReplayTally(bool against_two) : two_(against_two) {}
  void Add(const EgressDecision& from, const EgressDecision* to, size_t line_number, absl::string_view line);
  ReplayReport Finish() &&;

 private:
  bool two_;
  std::string key_;
  uint64_t intents_ = 0;
  uint64_t changed_ = 0;
  absl::flat_hash_map<std::string, ReplayGroup> groups_;
};

// Replays every intent of `path` against `from` (and `to` when given). Stops at the first bad line.
absl::StatusOr<ReplayReport> ReplayFile(const std::string& path, const EgressPolicy& from, const EgressPolicy* to);

}  // namespace osh::policy
