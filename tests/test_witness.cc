// policy-log-witness's protocol in process (witness/witness.h): the C2SP tlog-witness add-checkpoint
// answers, the state it keeps across restarts, its configuration.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include <catch2/catch.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tests/log_fixture.h"
#include "tests/test_support.h"
#include "tlog/cosignature.h"
#include "witness/config.h"
#include "witness/log.h"
#include "witness/witness.h"

namespace osh::test {
namespace {

using witness::FormatAddCheckpointRequest;
using witness::Witness;
using witness::WitnessResponse;

constexpr char kTestWitnessName[] = "witness.test/w1";

struct WitnessFixture {
  TempDir dir;
  TestLog log{"", "log.test/policy-gateway"};
  tlog::Ed25519PrivateKey key = *tlog::Ed25519PrivateKey::Generate();
  std::unique_ptr<Witness> witness;

  WitnessFixture() {
    REQUIRE(witness::InitWitnessState(dir / "state.toml").ok());
    Restart();
  }
  void Restart(tlog::CosignatureV1Signer::Clock clock = nullptr) {
    witness.reset();
    auto cosigner = tlog::CosignatureV1Signer::Create(kTestWitnessName, key, std::move(clock));
    REQUIRE(cosigner.ok());
    auto created = Witness::Create(*std::move(cosigner), {{log.origin(), log.VerifierKey()}}, dir / "state.toml");
    REQUIRE(created.ok());
    witness = *std::move(created);
  }
  WitnessResponse Add(int64_t old_size, const tlog::Proof& proof, const std::string& note) {
    return witness->AddCheckpoint(FormatAddCheckpointRequest(old_size, proof, note));
  }
  // Grows the log to `size` and submits it with a proof from `old_size`.
  WitnessResponse Extend(int64_t old_size, int64_t size) {
    const std::string note = log.Grow(size);
    return Add(old_size, log.Consistency(old_size, size), note);
  }
  // The cosignature answered verifies as the witness's, on that checkpoint.
  bool Cosigned(const std::string& note, const WitnessResponse& r) {
    auto cosigner = tlog::CosignatureV1Signer::Create(kTestWitnessName, key);
    auto witness_key = tlog::ParseVerifierKey((*cosigner)->VerifierKey());
    auto log_key = tlog::ParseVerifierKey(log.VerifierKey());
    const tlog::NoteVerifier* cosigners[] = {witness_key->get()};
    return tlog::OpenCheckpoint(note + r.body, log.origin(), **log_key, cosigners, 1).ok();
  }
};

}  // namespace

TEST_CASE("witness: a fresh log is cosigned from old 0, then each extension with a valid consistency proof", "[witness]") {
  WitnessFixture f;
  const std::string first = f.log.Grow(10);
  WitnessResponse r = f.Add(0, {}, first);
  REQUIRE(r.status == 200);
  CHECK(r.body.rfind("\xE2\x80\x94 witness.test/w1 ", 0) == 0);
  CHECK(r.body.back() == '\n');
  CHECK(f.Cosigned(first, r));
  CHECK(f.witness->Held(f.log.origin())->size == 10);

  const std::string second = f.log.Grow(300);
  r = f.Add(10, f.log.Consistency(10, 300), second);
  REQUIRE(r.status == 200);
  CHECK(f.Cosigned(second, r));
  CHECK_FALSE(f.Cosigned(first, r));  // a cosignature is of its checkpoint only
  CHECK(f.witness->Held(f.log.origin())->root == f.log.Root(300));
  // The same checkpoint again is cosigned again (nothing changes), without rewriting the state: anyone may
  // replay the log's public checkpoint, and each rewrite cost three fsyncs under the one lock (review 113).
  struct stat before {}, after {};
  REQUIRE(::stat((f.dir / "state.toml").c_str(), &before) == 0);
  const WitnessResponse again = f.Add(300, {}, second);
  CHECK(again.status == 200);
  CHECK(f.Cosigned(second, again));
  REQUIRE(::stat((f.dir / "state.toml").c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);  // a write renames a new file into place
}

TEST_CASE("witness: a wrong old size is 409 with the size held, as text/x.tlog.size", "[witness]") {
  WitnessFixture f;
  REQUIRE(f.Extend(0, 5).status == 200);
  const std::string note = f.log.Grow(8);
  for (int64_t old_size : {int64_t{0}, int64_t{4}, int64_t{6}}) {
    WitnessResponse r = f.Add(old_size, {}, note);
    CHECK(r.status == 409);
    CHECK(r.content_type == "text/x.tlog.size");
    CHECK(r.body == "5\n");
  }
  CHECK(f.witness->Held(f.log.origin())->size == 5);
}

TEST_CASE("witness: a fork is refused, at the same size (409) and beyond it (422)", "[witness]") {
  WitnessFixture f;
  REQUIRE(f.Extend(0, 20).status == 200);
  tlog::Hash other = f.log.Root(20);
  other[0] ^= 1;
  // The fork's note arrives with 90 signature lines of strangers: the evidence logged is the
  // checkpoint and the log's signature only (review 113: up to 1 MiB of what a client sent was logged).
  std::string padded = f.log.Sign(20, other);
  for (int i = 0; i < 90; ++i) padded += absl::StrCat("\xE2\x80\x94 stranger", i, ".example ", absl::Base64Escape(std::string(68, 'x')), "\n");
  WitnessResponse r = f.Add(20, {}, padded);
  CHECK(r.status == 409);
  CHECK_THAT(r.body, Catch::Contains("fork"));
  CHECK_THAT(r.log_message, Catch::Contains("FORK"));
  CHECK(r.evidence);
  CHECK_THAT(r.log_message, Catch::EndsWith(f.log.Sign(20, other)));
  CHECK(r.log_message.find("stranger") == std::string::npos);
  // A tree of 30 entries that does not extend the 20 cosigned: another log signed with the same key.
  TestLog forked("", f.log.origin(), "forked");
  forked.Grow(30);
  tlog::Hash root30 = forked.Root(30);
  r = f.Add(20, forked.Consistency(20, 30), f.log.Sign(30, root30));
  CHECK(r.status == 422);
  CHECK_FALSE(r.evidence);  // anyone can send a bad proof with a genuine checkpoint
  CHECK(r.log_message.find(f.log.origin() + "\n") == std::string::npos);  // no note copied into the log
  // A valid-looking proof that is not for these trees, and a proof when old is 0 or the sizes are equal.
  r = f.Add(20, f.log.Consistency(10, 30), f.log.Grow(30));
  CHECK(r.status == 422);
  CHECK(f.Add(20, f.log.Consistency(20, 30), f.log.Grow(30)).status == 200);
  CHECK(f.Add(30, f.log.Consistency(20, 30), f.log.Grow(30)).status == 422);
  CHECK(f.witness->Held(f.log.origin())->root == f.log.Root(30));
}

TEST_CASE("witness: a fresh log submitted with a non-empty proof from old 0 is 422", "[witness]") {
  WitnessFixture f;
  const std::string note = f.log.Grow(8);
  CHECK(f.Add(0, f.log.Consistency(4, 8), note).status == 422);
  CHECK_FALSE(f.witness->Held(f.log.origin()).has_value());
}

TEST_CASE("witness: a shrinking checkpoint is refused (400 when old exceeds its size, 409 otherwise)", "[witness]") {
  WitnessFixture f;
  REQUIRE(f.Extend(0, 50).status == 200);
  const std::string smaller = f.log.CheckpointAt(40);
  WitnessResponse r = f.Add(50, {}, smaller);
  CHECK(r.status == 400);
  r = f.Add(40, {}, smaller);
  CHECK(r.status == 409);
  CHECK(r.body == "50\n");
  CHECK(f.witness->Held(f.log.origin())->size == 50);
}

TEST_CASE("witness: a checkpoint without a valid signature by the log's key is 403", "[witness]") {
  WitnessFixture f;
  TestLog impostor("", f.log.origin());  // same origin, another key
  const std::string note = impostor.Grow(3);
  WitnessResponse r = f.Add(0, {}, note);
  CHECK(r.status == 403);
  // The log's own signature, altered.
  std::string tampered = f.log.Grow(3);
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  CHECK(f.Add(0, {}, tampered).status == 403);
  CHECK_FALSE(f.witness->Held(f.log.origin()).has_value());
}

TEST_CASE("witness: an unknown origin is 404", "[witness]") {
  WitnessFixture f;
  TestLog other("", "other.test/log");
  CHECK(f.Add(0, {}, other.Grow(3)).status == 404);
}

TEST_CASE("witness: malformed bodies are 400", "[witness]") {
  WitnessFixture f;
  const std::string note = f.log.Grow(4);
  const std::string hash = tlog::HashToBase64(f.log.Root(2));
  std::string many = "old 0\n";
  for (int i = 0; i < 64; ++i) many += hash + "\n";
  for (const std::string& body :
       {std::string(""), std::string("garbage"), std::string("old 0\n"), "old 01\n\n" + note, "old -1\n\n" + note,
        "old 0 \n\n" + note, "OLD 0\n\n" + note, "old 0\nnot base64!\n\n" + note, "old 0\n" + hash.substr(4) + "\n\n" + note,
        many + "\n" + note, std::string("old 0\n\n"), std::string("old 0\n\nnot a note\n"),
        std::string("old 0\n\nlog.test/policy-gateway\n4\nnot-a-hash\n\n\xE2\x80\x94 x AAAA\n"),
        "old 5\n\n" + note /* old beyond the checkpoint's size */}) {
    INFO(body);
    const WitnessResponse r = f.witness->AddCheckpoint(body);
    CHECK(r.status == 400);
    CHECK_FALSE(r.body.empty());
  }
  CHECK_FALSE(f.witness->Held(f.log.origin()).has_value());
  CHECK(witness::ParseAddCheckpointRequest(FormatAddCheckpointRequest(7, f.log.Consistency(2, 4), note))->old_size == 7);
}

TEST_CASE("witness: a restart keeps what was cosigned (0600 state), so a fork is still refused", "[witness]") {
  WitnessFixture f;
  REQUIRE(f.Extend(0, 100).status == 200);
  struct stat st {};
  REQUIRE(::stat((f.dir / "state.toml").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  f.Restart();
  REQUIRE(f.witness->Held(f.log.origin()).has_value());
  CHECK(f.witness->Held(f.log.origin())->size == 100);
  CHECK(f.witness->Held(f.log.origin())->note == f.log.CheckpointAt(100));
  tlog::Hash other = f.log.Root(100);
  other[31] ^= 0x80;
  CHECK(f.Add(100, {}, f.log.Sign(100, other)).status == 409);
  CHECK(f.Add(0, {}, f.log.CheckpointAt(100)).status == 409);
  CHECK(f.Extend(100, 120).status == 200);
  // A temporary file a crash left behind under this process's id (a restarted container's PID 1 has the
  // same one) does not stop the next state write.
  WriteFile(absl::StrCat(f.dir / "state.toml", ".tmp.", ::getpid()), "left by a crash");
  CHECK(f.Extend(120, 130).status == 200);
  CHECK(f.witness->Held(f.log.origin())->size == 130);
  // Lines by keys the witness does not know are not kept: anyone could add them to grow its state.
  const std::string stranger = f.log.CheckpointAt(130) + "\xE2\x80\x94 stranger.example " +
                               absl::Base64Escape(std::string(68, 'x')) + "\n";
  CHECK(f.Add(130, {}, stranger).status == 200);
  CHECK(f.witness->Held(f.log.origin())->note == f.log.CheckpointAt(130));
  CHECK(ReadFile(f.dir / "state.toml").find("stranger") == std::string::npos);
}

// The timestamp of the cosignature line a 200 answered ("— <name> <base64(key ID ‖ timestamp ‖ signature)>").
uint64_t CosignedAt(const WitnessResponse& r) {
  const size_t space = r.body.rfind(' ');
  REQUIRE(space != std::string::npos);
  std::string bytes;
  REQUIRE(absl::Base64Unescape(absl::StripTrailingAsciiWhitespace(r.body.substr(space + 1)), &bytes));
  REQUIRE(bytes.size() == 4 + tlog::kCosignatureV1Size);
  uint64_t timestamp = 0;
  for (size_t i = 4; i < 12; ++i) timestamp = (timestamp << 8) | static_cast<unsigned char>(bytes[i]);
  return timestamp;
}

TEST_CASE("witness: a restart whose clock went back never cosigns with an earlier timestamp", "[witness]") {
  // Regression (review 113, mended at stop 71): the order of the cosignatures' timestamps was kept in memory
  // only, so a witness restarted with its clock behind signed a larger tree with an earlier time.
  WitnessFixture f;
  std::atomic<uint64_t> now{2'000'000'000};
  const auto clock = [&now] { return now.load(); };
  f.Restart(clock);
  const WitnessResponse first = f.Extend(0, 10);
  REQUIRE(first.status == 200);
  CHECK(CosignedAt(first) == 2'000'000'000);
  CHECK_THAT(ReadFile(f.dir / "state.toml"), Catch::Contains("cosigned_until = 2000000010"));
  now = 1'000'000'000;  // stepped back, and restarted
  f.Restart(clock);
  const WitnessResponse second = f.Extend(10, 20);
  REQUIRE(second.status == 200);
  CHECK(CosignedAt(second) >= 2'000'000'000);
  // A replay of the held checkpoint past the reserve is covered on disk before it is answered, though
  // nothing else changed; within the reserve it writes nothing.
  now = 2'000'000'100;
  const WitnessResponse replay = f.Add(20, {}, f.log.CheckpointAt(20));
  REQUIRE(replay.status == 200);
  CHECK(CosignedAt(replay) == 2'000'000'100);
  CHECK_THAT(ReadFile(f.dir / "state.toml"), Catch::Contains("cosigned_until = 2000000110"));
  struct stat before {};
  REQUIRE(::stat((f.dir / "state.toml").c_str(), &before) == 0);
  now = 2'000'000'105;
  REQUIRE(f.Add(20, {}, f.log.CheckpointAt(20)).status == 200);
  struct stat after {};
  REQUIRE(::stat((f.dir / "state.toml").c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);  // not replaced (each write is a new file renamed over it)
  now = 1'500'000'000;
  f.Restart(clock);
  const WitnessResponse third = f.Extend(20, 30);
  REQUIRE(third.status == 200);
  CHECK(CosignedAt(third) >= 2'000'000'105);
  CHECK(f.Cosigned(f.log.CheckpointAt(30), third));
  // A state file of an earlier version (no cosigned_until) is read as 0.
  WitnessFixture old;
  REQUIRE(old.Extend(0, 5).status == 200);
  std::string text = ReadFile(old.dir / "state.toml");
  const size_t at = text.find("cosigned_until = ");
  REQUIRE(at != std::string::npos);
  text.erase(at, text.find('\n', at) - at + 1);
  old.witness.reset();
  WriteFile(old.dir / "state.toml", text);
  old.Restart();
  CHECK(old.witness->Held(old.log.origin())->size == 5);
}

TEST_CASE("witness: a second witness on the same state file is refused while the first holds it", "[witness]") {
  // Review 102: each process holds the state in memory; two on one file could each cosign another fork of
  // the same size (C2SP tlog-witness: the check against the latest checkpoint and its persisting are atomic).
  WitnessFixture f;
  REQUIRE(f.Extend(0, 100).status == 200);
  auto cosigner = tlog::CosignatureV1Signer::Create(kTestWitnessName, f.key);
  REQUIRE(cosigner.ok());
  auto second = Witness::Create(*std::move(cosigner), {{f.log.origin(), f.log.VerifierKey()}}, f.dir / "state.toml");
  REQUIRE_FALSE(second.ok());
  CHECK(absl::IsFailedPrecondition(second.status()));
  CHECK_THAT(std::string(second.status().message()), Catch::Contains("in use by another witness (pid "));
  // Once the first is gone, the next one takes the file, and what it holds.
  f.Restart();
  CHECK(f.witness->Held(f.log.origin())->size == 100);
}

TEST_CASE("witness: a state file that does not parse or disagrees with its note stops the witness", "[witness]") {
  WitnessFixture f;
  REQUIRE(f.Extend(0, 10).status == 200);
  std::string state = ReadFile(f.dir / "state.toml");
  const size_t at = state.find("size = 10");
  REQUIRE(at != std::string::npos);
  state.replace(at, 9, "size = 11");
  WriteFile(f.dir / "state.toml", state);
  f.witness.reset();  // the running witness lets go of the state file
  auto cosigner = tlog::CosignatureV1Signer::Create(kTestWitnessName, f.key);
  auto created = Witness::Create(*std::move(cosigner), {{f.log.origin(), f.log.VerifierKey()}}, f.dir / "state.toml");
  REQUIRE_FALSE(created.ok());
  CHECK_THAT(std::string(created.status().message()), Catch::Contains("does not carry the size and root"));
  WriteFile(f.dir / "state.toml", "not toml [");
  cosigner = tlog::CosignatureV1Signer::Create(kTestWitnessName, f.key);
  CHECK_FALSE(Witness::Create(*std::move(cosigner), {}, f.dir / "state.toml").ok());
}

TEST_CASE("witness: an empty or truncated state file is lost state, never \"nothing cosigned\"", "[witness]") {
  // Review 113: `init` wrote a comment only, so an emptied state file (a crash, a full disk, `> state.toml`)
  // read as a new witness's: it would cosign any fork shown first.
  WitnessFixture f;
  CHECK_THAT(ReadFile(f.dir / "state.toml"), Catch::Contains("policy-log-witness-state/1"));
  REQUIRE(f.Extend(0, 10).status == 200);
  const std::string written = ReadFile(f.dir / "state.toml");
  CHECK_THAT(written, Catch::Contains("format = 'policy-log-witness-state/1'"));
  f.witness.reset();
  auto create = [&] {
    auto cosigner = tlog::CosignatureV1Signer::Create(kTestWitnessName, f.key);
    REQUIRE(cosigner.ok());
    return Witness::Create(*std::move(cosigner), {{f.log.origin(), f.log.VerifierKey()}}, f.dir / "state.toml");
  };
  for (const std::string& lost : {std::string(), std::string("# policy-log-witness state: the last checkpoint cosigned\n"),
                                   std::string("\n\n")}) {
    WriteFile(f.dir / "state.toml", lost);
    auto created = create();
    REQUIRE_FALSE(created.ok());
    CHECK(absl::IsFailedPrecondition(created.status()));
    CHECK_THAT(std::string(created.status().message()), Catch::Contains("lost state"));
  }
  // Cut at a table's end, after the format line (review 116): the count says logs are missing.
  REQUIRE(written.find("[[log]]") != std::string::npos);
  WriteFile(f.dir / "state.toml", written.substr(0, written.find("[[log]]")));
  {
    auto cut = create();
    REQUIRE_FALSE(cut.ok());
    CHECK(absl::IsFailedPrecondition(cut.status()));
    CHECK_THAT(std::string(cut.status().message()), Catch::Contains("truncated"));
  }
  // Another format (a newer witness's) is refused; an earlier version's file with logs and no format line is read.
  WriteFile(f.dir / "state.toml", "format = \"policy-log-witness-state/2\"\n");
  CHECK(absl::IsInvalidArgument(create().status()));
  std::string unmarked = written;
  const size_t format_line = unmarked.find("format = ");
  REQUIRE(format_line != std::string::npos);
  unmarked.erase(format_line, unmarked.find('\n', format_line) - format_line + 1);
  CHECK(unmarked.find("policy-log-witness-state") == std::string::npos);
  WriteFile(f.dir / "state.toml", unmarked);
  auto created = create();
  REQUIRE(created.ok());
  CHECK((*created)->Held(f.log.origin())->size == 10);
}

TEST_CASE("witness: request log lines are rate-limited, a fork's evidence counted apart", "[witness]") {
  // Review 113: every refused request wrote a line; anyone could fill the witness's disk. Captured from
  // stderr (the witness's log) for the length of the test.
  TempDir dir;
  const std::string captured = dir / "stderr.txt";
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int file = ::open(captured.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE((saved >= 0 && file >= 0));
  ::dup2(file, 2);
  ::close(file);
  for (int i = 0; i < 200; ++i) witness::WitnessLogRequest(witness::WitnessLogLevel::kWarning, "refused flood");
  witness::WitnessLogRequest(witness::WitnessLogLevel::kWarning, "refused FORK evidence", /*evidence=*/true);
  witness::WitnessLogRequest(witness::WitnessLogLevel::kError, "cannot persist");
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  const std::string text = ReadFile(captured);
  const auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  CHECK(count("refused flood") >= 15);  // the burst (a little less when an earlier test took from it)
  CHECK(count("refused flood") <= 25);
  CHECK(count("refused FORK evidence") == 1);
  CHECK(count("cannot persist") == 1);
  CHECK_THAT(text, Catch::Contains("cannot persist (") && Catch::Contains(" request lines left out before this one"));
}

TEST_CASE("witness: configuration files", "[witness]") {
  const std::string good =
      "name = \"witness.test/w1\"\nkey_file = \"/k.pem\"\nlisten = \"127.0.0.1:0\"\nstate_file = \"/s.toml\"\n"
      "request_timeout_s = 5\n[[log]]\norigin = \"a.test/log\"\nkey = \"a.test/log+01234567+AQ\"\n";
  auto config = witness::ParseWitnessConfig(good, "w.toml");
  REQUIRE(config.ok());
  CHECK(config->name == "witness.test/w1");
  CHECK(config->request_timeout_s == 5);
  CHECK(config->max_request_bytes == witness::kMaxRequestBytes);
  REQUIRE(config->logs.size() == 1);
  CHECK(config->logs[0].origin == "a.test/log");
  for (const auto& [text, why] : std::vector<std::pair<std::string, std::string>>{
           {"colour = \"red\"\n" + good, "w.toml:1: unknown key 'colour'"},
           {good + "colour = \"red\"\n", "w.toml:9: unknown key 'log.colour'"},
           {"name = \"w\"\nkey_file = \"k\"\nstate_file = \"s\"\n", "no [[log]]"},
           {"key_file = \"k\"\nstate_file = \"s\"\n[[log]]\norigin = \"o\"\nkey = \"k\"\n", "'name' is required"},
           {"name = \"w w\"\nkey_file = \"k\"\nstate_file = \"s\"\n[[log]]\norigin = \"o\"\nkey = \"k\"\n", "name"},
           {good + "max_request_bytes = 0\n", "max_request_bytes"},
           {"name = \"w\"\nkey_file = \"k\"\nstate_file = \"s\"\nlisten = \"nowhere\"\n[[log]]\norigin = \"o\"\nkey = \"k\"\n",
            "not host:port"},
           {good + "[[log]]\norigin = \"b\"\n", "needs a non-empty origin and key"},
           {"name = [\n", "w.toml:"}}) {
    INFO(text);
    auto bad = witness::ParseWitnessConfig(text, "w.toml");
    REQUIRE_FALSE(bad.ok());
    CHECK_THAT(std::string(bad.status().message()), Catch::Contains(why));
  }
}

}  // namespace osh::test

#include <httplib.h>

#include <atomic>
#include <functional>
#include <thread>

#include "gateway/core/log_witnesses.h"
#include "tlog/note.h"

namespace osh::test {
namespace {

// The gateway's side of a round (gateway::LogWitnesses::Collect) against one witness whose add-checkpoint
// answer is `answer`'s: a hostile or broken one, as an HTTP server of its own on a loopback port.
struct HostileWitness {
  TestLog log{"", "log.test/policy-gateway"};
  std::string note = log.Grow(3);
  std::unique_ptr<tlog::CosignatureV1Signer> cosigner =
      *tlog::CosignatureV1Signer::Create(kTestWitnessName, *tlog::Ed25519PrivateKey::Generate());

  // The cosignatures kept, and the witness's status after the round.
  std::pair<std::vector<tlog::NoteSignature>, gateway::LogWitnesses::WitnessStatus> Round(
      const std::function<void(httplib::Response&)>& answer, absl::Duration timeout = absl::Seconds(1)) {
    httplib::Server server;
    server.Post(witness::kAddCheckpointPath,
                [&](const httplib::Request&, httplib::Response& response) { answer(response); });
    const int port = server.bind_to_any_port("127.0.0.1");
    REQUIRE(port > 0);
    std::thread serving([&] { server.listen_after_bind(); });
    gateway::LogWitnesses::Options options;
    options.timeout = timeout;
    auto witnesses = gateway::LogWitnesses::Create(
        {{absl::StrCat("http://127.0.0.1:", port), cosigner->VerifierKey()}}, options);
    REQUIRE(witnesses.ok());
    auto cosignatures = (*witnesses)->Collect(note, 3, [&](int64_t old_size, int64_t size) {
      return absl::StatusOr<tlog::Proof>(log.Consistency(old_size, size));
    });
    on_round_end();
    server.stop();
    serving.join();
    return {std::move(cosignatures), (*witnesses)->Status().at(0)};
  }
  std::function<void()> on_round_end = [] {};
};

}  // namespace

TEST_CASE("witness, gateway side: a 200 whose lines are not only cosignatures of the checkpoint is not one",
          "[witness][log]") {
  // A witness (or its key's holder) answering a line that cosigns other text — here the checkpoint with
  // the log's signature line, which verifies as a note of its own after a blank line — would be kept and
  // published, and every client that knows that witness would then refuse the whole checkpoint.
  HostileWitness w;
  const tlog::NoteSigner* signers[] = {w.cosigner.get()};
  std::string answer, refused_as;
  SECTION("a cosignature over the whole signed note, after a blank line") {
    refused_as = "a cosignature over other text than the checkpoint";
    auto over_note = tlog::SignNote(w.note, signers);  // note + "\n" + "— witness.test/w1 …\n"
    REQUIRE(over_note.ok());
    answer = over_note->substr(w.note.size());
    REQUIRE(answer.front() == '\n');
  }
  SECTION("a line that is not a signature line beside a valid cosignature") {
    refused_as = "without a cosignature that verifies";
    auto proper = tlog::SignNote(w.note.substr(0, w.note.find("\n\n") + 1), signers);
    REQUIRE(proper.ok());
    answer = "hello\n" + proper->substr(proper->find("\n\n") + 2);
  }
  const auto [cosignatures, status] = w.Round([&](httplib::Response& response) {
    response.status = 200;
    response.set_content(answer, "text/plain; charset=utf-8");
  });
  CHECK(cosignatures.empty());
  CHECK_THAT(status.last_error, Catch::Contains(refused_as));
}

TEST_CASE("witness, gateway side: a witness answering a byte now and then is cut off, not waited for",
          "[witness][log]") {
  // Each read has the request's timeout; a witness (or anything on the path to it) sending one byte per
  // read would otherwise hold the round, and the checkpoint's publication, for as long as it likes.
  HostileWitness w;
  std::atomic<bool> finished{false};
  bool finished_at_round_end = true;
  w.on_round_end = [&] { finished_at_round_end = finished; };
  const auto [cosignatures, status] = w.Round(
      [&](httplib::Response& response) {
        response.set_chunked_content_provider("text/plain", [&](size_t, httplib::DataSink& sink) {
          for (int i = 0; i < 300; ++i) {  // 30 s at one byte per 100 ms, well inside each read's timeout
            if (!sink.write("x", 1)) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
          finished = true;
          sink.done();
          return true;
        });
      },
      absl::Milliseconds(500));
  CHECK_FALSE(finished_at_round_end);  // the round ended while the witness was still answering
  CHECK(cosignatures.empty());
  CHECK_FALSE(status.last_error.empty());
}

}  // namespace osh::test
