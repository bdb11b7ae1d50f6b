// Replay of recorded egress intents (policy/replay.h): the JSON-lines reader, its errors, and the
// property that every intent whose decision changes falls in a reported group whose example decides as
// the group says.
#include <filesystem>
#include <fstream>
#include <random>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "policy/egress.h"
#include "policy/policy_file.h"
#include "policy/replay.h"
#include "tests/test_support.h"

using osh::policy::EgressDecision;
using osh::policy::EgressIntent;
using osh::policy::EgressPolicy;
using osh::policy::EgressVerdict;
using osh::policy::ParseIntentLine;

namespace {

std::string ReplayParseError(const std::string& line) {
  EgressIntent intent;
  const auto status = ParseIntentLine(line, "t.jsonl", 7, &intent);
  return status.ok() ? "" : std::string(status.message());
}

std::string ReplayTempFile(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / absl::StrCat("test_replay.", getpid(), ".", name);
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

}  // namespace

TEST_CASE("replay: an intent line reads every key in both spellings, ports as numbers or strings", "[replay]") {
  EgressIntent intent;
  REQUIRE(ParseIntentLine(R"({"host":"api.github.com","port":"443","binary":"/usr/bin/gh","ancestors":["/bin/sh","/sbin/init"],)"
                          R"("cmdlinePaths":["/w/x"],"request":{"method":"GET","path":"/r","query":[{"key":"q","values":["a","b"]}]}})",
                          "t", 1, &intent)
              .ok());
  CHECK(intent.host == "api.github.com");
  CHECK(intent.port == 443);
  CHECK(intent.binary == "/usr/bin/gh");
  CHECK(intent.ancestors == std::vector<std::string>{"/bin/sh", "/sbin/init"});
  CHECK(intent.cmdline_paths == std::vector<std::string>{"/w/x"});
  REQUIRE(intent.request.has_value());
  CHECK(intent.request->method == "GET");
  CHECK(intent.request->path == "/r");
  REQUIRE(intent.request->query.size() == 1);
  CHECK(intent.request->query[0].second == std::vector<std::string>{"a", "b"});

  // The same reader object reused: nothing of the previous intent is left.
  REQUIRE(ParseIntentLine(R"({"host":"h","port":80,"cmdline_paths":null,"request":{"method":"POST"}})", "t", 2, &intent).ok());
  CHECK(intent.binary.empty());
  CHECK(intent.ancestors.empty());
  CHECK(intent.request->path == "/");  // as decide and EvaluateEgress default it
}

TEST_CASE("replay: a bad intent line is refused naming the source, line and field", "[replay]") {
  CHECK(ReplayParseError(R"({"host":"h","bogus":1})") == "t.jsonl:7: bogus: unknown key");
  CHECK(ReplayParseError(R"({"host":1})") == "t.jsonl:7: host: expected a string");
  CHECK(ReplayParseError(R"({"port":-1})") == "t.jsonl:7: port: expected a non-negative integer");
  CHECK(ReplayParseError(R"({"port":"44x"})") == "t.jsonl:7: port: expected a decimal number");
  CHECK(ReplayParseError(R"({"port":4294967296})") == "t.jsonl:7: port: out of range");
  CHECK(ReplayParseError(R"({"host":"a","host":"b"})") == "t.jsonl:7: host: given twice");
  CHECK(ReplayParseError(R"({"ancestors":["a",2]})") == "t.jsonl:7: ancestors[1]: expected a string");
  CHECK(ReplayParseError(R"({"request":{"method":"GET","verb":"x"}})") == "t.jsonl:7: request.verb: unknown key");
  CHECK(ReplayParseError(R"({"request":{"query":[{"key":"a","value":"b"}]}})") ==
        "t.jsonl:7: request.query[0].value: unknown key");
  CHECK(ReplayParseError(R"({"sandbox_id":"sb-1"})") ==
        "t.jsonl:7: sandbox_id: a replayed intent names no policy: the policies are given on the command line");
  CHECK(ReplayParseError(R"(["host"])") == "t.jsonl:7: expected a JSON object");
  CHECK_THAT(ReplayParseError(R"({"host":"a"} {"host":"b"})"), Catch::StartsWith("t.jsonl:7: not valid JSON"));
  CHECK_THAT(ReplayParseError(R"({"host":"a",)"), Catch::StartsWith("t.jsonl:7: not valid JSON"));
  CHECK_THAT(ReplayParseError(std::string("{\"host\":\"a\xff\"}")), Catch::StartsWith("t.jsonl:7: not valid JSON"));
  CHECK_THAT(ReplayParseError(std::string("{\"host\":\"a\"}\0x", 14)), Catch::StartsWith("t.jsonl:7: not valid JSON"));
}

TEST_CASE("replay: the reader counts lines across blocks, skips blank ones, takes CRLF and a last line without newline",
          "[replay]") {
  std::string text;
  const int n = 40'000;  // about 4 MB: several of the reader's blocks
  for (int i = 0; i < n; ++i) {
    absl::StrAppend(&text, R"({"host":"h)", i, R"(.example","port":443,"binary":"/usr/bin/)", std::string(50, 'x'), "\"}",
                    i % 2 == 0 ? "\r\n" : "\n");
    if (i % 1000 == 0) text += "\n  \n";
  }
  text.pop_back();  // the last line has no newline
  const std::string path = ReplayTempFile("blocks.jsonl", text);
  auto reader = osh::policy::IntentLineReader::Open(path);
  REQUIRE(reader.ok());
  EgressIntent intent;
  int read = 0;
  size_t last_line = 0;
  for (;;) {
    auto more = (*reader)->Next(&intent);
    REQUIRE(more.ok());
    if (!*more) break;
    CHECK(intent.host == absl::StrCat("h", read, ".example"));
    last_line = (*reader)->line_number();
    ++read;
  }
  CHECK(read == n);
  CHECK(last_line == static_cast<size_t>(n + 2 * ((n - 1) / 1000 + 1)));
  std::filesystem::remove(path);
}

TEST_CASE("replay: a line over 1 MiB is an error, not a stall, and a missing file is NOT_FOUND", "[replay]") {
  const std::string path = ReplayTempFile("long.jsonl", "{\"host\":\"a\"}\n{\"host\":\"" + std::string(3 << 20, 'a') + "\"}\n");
  auto reader = osh::policy::IntentLineReader::Open(path);
  REQUIRE(reader.ok());
  EgressIntent intent;
  REQUIRE((*reader)->Next(&intent).ok());
  auto second = (*reader)->Next(&intent);
  REQUIRE_FALSE(second.ok());
  CHECK_THAT(std::string(second.status().message()), Catch::Contains(":2: a line over 1048576 bytes"));
  std::filesystem::remove(path);
  CHECK(osh::policy::IntentLineReader::Open(path + ".none").status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("replay: every intent whose decision changes is in a reported group, and each example decides as its group says",
          "[replay]") {
  const auto github = osh::policy::LoadPolicyFile(std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml");
  REQUIRE(github.ok());
  auto narrowed = *github;  // curl gone, github.com only for git, api.github.com read-write
  auto& entry = (*narrowed.mutable_network_policies())["github_api"];
  entry.mutable_binaries()->RemoveLast();
  entry.mutable_endpoints(0)->set_access("read-write");
  const auto from = EgressPolicy::Compile(*github);
  const auto to = EgressPolicy::Compile(narrowed);

  std::mt19937 rng(GENERATE(1u, 2u, 3u));
  const std::vector<std::string> hosts = {"api.github.com", "github.com", "example.com"};
  const std::vector<std::string> binaries = {"/usr/bin/git", "/usr/bin/curl", "/usr/bin/python3"};
  const std::vector<std::string> methods = {"GET", "POST", "DELETE", "HEAD", ""};
  std::string text;
  std::vector<EgressIntent> intents;
  for (int i = 0; i < 2000; ++i) {
    const std::string& method = methods[rng() % methods.size()];
    std::string line = absl::StrCat(R"({"host":")", hosts[rng() % hosts.size()], R"(","port":)", rng() % 4 == 0 ? 80 : 443,
                                    R"(,"binary":")", binaries[rng() % binaries.size()], "\"");
    if (!method.empty()) absl::StrAppend(&line, R"(,"request":{"method":")", method, R"(","path":"/repos/x/)", rng() % 3, "\"}");
    line += "}";
    EgressIntent intent;
    REQUIRE(ParseIntentLine(line, "gen", i + 1, &intent).ok());
    intents.push_back(intent);
    text += line + "\n";
  }
  const std::string path = ReplayTempFile("property.jsonl", text);
  auto report = osh::policy::ReplayFile(path, *from, to.get());
  REQUIRE(report.ok());
  CHECK(report->intents == intents.size());

  uint64_t changed = 0;
  for (const auto& intent : intents) changed += from->Decide(intent).verdict != to->Decide(intent).verdict;
  CHECK(report->changed == changed);
  CHECK(changed > 0);
  uint64_t grouped = 0;
  for (const auto& group : report->groups) {
    grouped += group.count;
    EgressIntent example;
    REQUIRE(ParseIntentLine(group.example, "example", group.example_line, &example).ok());
    const EgressDecision a = from->Decide(example), b = to->Decide(example);
    CHECK(osh::policy::VerdictName(a.verdict) == group.from_verdict);
    CHECK(osh::policy::VerdictName(b.verdict) == group.to_verdict);
    CHECK(osh::policy::ResponsibleFor(a) == group.from_rule);
    CHECK(osh::policy::ResponsibleFor(b) == group.to_rule);
    CHECK(example.host == intents[group.example_line - 1].host);
  }
  CHECK(grouped == changed);

  // Against one policy every intent is grouped; against itself nothing changes.
  auto single = osh::policy::ReplayFile(path, *from, nullptr);
  REQUIRE(single.ok());
  uint64_t all = 0;
  for (const auto& group : single->groups) all += group.count;
  CHECK(all == intents.size());
  auto same = osh::policy::ReplayFile(path, *from, from.get());
  REQUIRE(same.ok());
  CHECK(same->changed == 0);
  CHECK(same->groups.empty());
  std::filesystem::remove(path);
}
