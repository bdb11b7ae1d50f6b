// The verifiable log's tools as real programs: `policyctl log ...` against a log written with the tlog
// library (tests/test_log.h) in a folder or served over HTTP, and `policy-log-witness` answering
// add-checkpoint over HTTP (cpp-httplib client), across a restart.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <thread>

#include <catch2/catch.hpp>
#include <httplib.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/gateway_fixture.h"
#include "tests/process.h"
#include "tests/log_fixture.h"
#include "tests/test_support.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "witness/witness.h"

namespace osh::test {
namespace {

constexpr char kLogToolsOrigin[] = "gateway.test/policy-gateway";

int LogCtl(std::vector<std::string> args, std::string* out, std::string* err) {
  args.insert(args.begin(), {OSH_POLICYCTL_BINARY, "log"});
  return RunCommand(args, out, err);
}

// Rewrites entry bundle `n` (full) of the log in `dir` through `edit`.
void EditBundle(const TestLog& log, int64_t n, const std::function<void(std::vector<std::string>&)>& edit) {
  const std::string path = absl::StrCat(log.dir(), "/", tlog::TilePath(tlog::Tile{tlog::kEntriesLevel, n, tlog::kTileWidth}));
  auto entries = tlog::DecodeEntryBundle(ReadFile(path));
  REQUIRE(entries.ok());
  edit(*entries);
  WriteFile(path, *tlog::EncodeEntryBundle(*entries), 0644);
}

struct LogTools {
  TempDir dir;
  TestLog log{dir / "log", kLogToolsOrigin};
  std::string vkey_file = dir / "log.vkey";
  std::string state = dir / "monitor.state";
  LogTools() { WriteFile(vkey_file, log.VerifierKey() + "\n", 0644); }
  int Monitor(std::string* out, std::string* err, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"monitor", "--log", log.dir(), "--key", vkey_file, "--state", state};
    args.insert(args.end(), extra.begin(), extra.end());
    return LogCtl(args, out, err);
  }
};

}  // namespace

TEST_CASE("log tools: policyctl log keygen writes the key 0600 and its verifier key, and never overwrites", "[log_tools]") {
  TempDir dir;
  std::string out, err;
  REQUIRE(LogCtl({"keygen", "--origin", kLogToolsOrigin, "--out", dir / "log.pem"}, &out, &err) == 0);
  struct stat st {};
  REQUIRE(::stat((dir / "log.pem").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const std::string vkey = ReadFile(dir / "log.pub");
  CHECK(vkey == out);
  CHECK(vkey.rfind(absl::StrCat(kLogToolsOrigin, "+"), 0) == 0);
  // The verifier key is the key of the PEM, as tlog reads both.
  auto from_pem = tlog::VerifierKeyFromPem(kLogToolsOrigin, ReadFile(dir / "log.pem"));
  REQUIRE(from_pem.ok());
  CHECK(*from_pem + "\n" == vkey);
  const std::string pem = ReadFile(dir / "log.pem");
  CHECK(LogCtl({"keygen", "--origin", kLogToolsOrigin, "--out", dir / "log.pem"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("already exists"));
  CHECK(ReadFile(dir / "log.pem") == pem);
  CHECK(ReadFile(dir / "log.pub") == vkey);
  CHECK(LogCtl({"-o", "json", "keygen", "--origin", "bad name", "--out", dir / "other.pem"}, &out, &err) == 2);
}

TEST_CASE("log tools: a good log verifies: checkpoint, monitor from nothing and then incrementally", "[log_tools]") {
  LogTools t;
  t.log.Grow(700);
  std::string out, err;
  REQUIRE(LogCtl({"checkpoint", "--log", t.log.dir(), "--key", t.vkey_file}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("size:        700"));
  CHECK_THAT(out, Catch::Contains(tlog::HashToBase64(t.log.Root(700))));
  REQUIRE(LogCtl({"-o", "json", "checkpoint", "--log", t.log.dir(), "--key", t.log.VerifierKey()}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"size\":\"700\""));
  // Another key: the checkpoint does not verify (exit 1).
  TestLog other("", kLogToolsOrigin);
  CHECK(LogCtl({"checkpoint", "--log", t.log.dir(), "--key", other.VerifierKey()}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("does not verify"));

  REQUIRE(t.Monitor(&out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("entries 0..699 verified (700 new)"));
  CHECK(ReadFile(t.state) == t.log.CheckpointAt(700));
  t.log.Grow(1000);
  REQUIRE(t.Monitor(&out, &err, {"-o", "json"}) == 0);
  CHECK_THAT(out, Catch::Contains("\"previous_size\":\"700\""));
  CHECK_THAT(out, Catch::Contains("\"entries_verified\":\"300\""));
  REQUIRE(t.Monitor(&out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("no new entries"));
}

TEST_CASE("log tools: monitor names a rewritten entry by its index", "[log_tools]") {
  LogTools t;
  t.log.Grow(600);
  EditBundle(t.log, 1, [](std::vector<std::string>& entries) { entries[44][3] ^= 0x01; });  // entry 256 + 44
  std::string out, err;
  CHECK(t.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("entry 300 does not match the tree"));
  CHECK_FALSE(std::filesystem::exists(t.state));  // nothing recorded when something fails
  REQUIRE(t.Monitor(&out, &err, {"-o", "json"}) == 1);
  CHECK_THAT(out, Catch::Contains("\"first_bad_entry\":\"300\""));
}

TEST_CASE("log tools: monitor names a dropped entry by its index", "[log_tools]") {
  LogTools t;
  t.log.Grow(520);
  EditBundle(t.log, 0, [](std::vector<std::string>& entries) { entries.erase(entries.begin() + 17); });
  std::string out, err;
  CHECK(t.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("entry 17 does not match the tree"));
  // The last entry of a full bundle dropped: the bundle is one short.
  LogTools u;
  u.log.Grow(300);
  EditBundle(u.log, 0, [](std::vector<std::string>& entries) { entries.pop_back(); });
  CHECK(u.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("entry 255 is missing"));
  // An entry too many in a full bundle: no entry of the tree is wrong, the bundle is named.
  LogTools v;
  v.log.Grow(300);
  EditBundle(v.log, 0, [](std::vector<std::string>& entries) { entries.push_back("one more"); });
  CHECK(v.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("the entry bundle tile/entries/000 holds 257 entries, the tree 256 there"));
  // A partial bundle missing and the full one in its place not a bundle: the log's fault (exit 1), not I/O.
  LogTools w;
  w.log.Grow(300);
  REQUIRE(std::filesystem::remove(w.log.dir() + "/tile/entries/001.p/44"));
  WriteFile(w.log.dir() + "/tile/entries/001", std::string("\x00\x09short", 7), 0644);
  CHECK(w.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("entry 256: its entry bundle is not one"));
  // --interval: a busy loop against the server is not an interval.
  CHECK(w.Monitor(&out, &err, {"--follow", "--interval", "1ns"}) == 2);
  CHECK_THAT(err, Catch::Contains("not a duration of 100ms or more"));
}

TEST_CASE("log tools: monitor names an audit event the signed tree left out, and bytes that are no event", "[log_tools]") {
  // The tree is whole and signed: only the entries' own sequence numbers show what its signer left out.
  LogTools t;
  t.log.event_left_out_at = 200;
  t.log.Grow(300);
  std::string out, err;
  CHECK(t.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("entry 200 is audit event 202, not event 201"));
  REQUIRE(t.Monitor(&out, &err, {"-o", "json"}) == 1);
  CHECK_THAT(out, Catch::Contains("\"first_bad_entry\":\"200\""));
  CHECK_FALSE(std::filesystem::exists(t.state));
}

TEST_CASE("log tools: monitor refuses a forked checkpoint and a shrinking one, naming the checkpoint", "[log_tools]") {
  LogTools t;
  t.log.Grow(400);
  std::string out, err;
  REQUIRE(t.Monitor(&out, &err) == 0);
  const std::string recorded = ReadFile(t.state);
  // Re-signed with the same key: the same size, another root.
  tlog::Hash other = t.log.Root(400);
  other[5] ^= 0x20;
  WriteFile(t.log.dir() + "/checkpoint", t.log.Sign(400, other), 0644);
  CHECK(t.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("FORK"));
  CHECK_THAT(err, Catch::Contains("size 400 root " + tlog::HashToBase64(other)));
  // A larger tree without its tiles, and one that does not extend the recorded one (the tiles published
  // are this log's: they do not hash to it).
  WriteFile(t.log.dir() + "/checkpoint", t.log.Sign(450, other), 0644);
  CHECK(t.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("size 450"));
  CHECK_THAT(err, Catch::Contains("missing"));
  t.log.Grow(450);
  WriteFile(t.log.dir() + "/checkpoint", t.log.Sign(450, other), 0644);
  CHECK(t.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("do not hash to the log's checkpoint (size 450"));
  // A checkpoint that shrinks (the log's own, of an earlier size).
  WriteFile(t.log.dir() + "/checkpoint", t.log.CheckpointAt(399), 0644);
  CHECK(t.Monitor(&out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("SHRINK"));
  CHECK_THAT(err, Catch::Contains("size 399"));
  CHECK(ReadFile(t.state) == recorded);
}

TEST_CASE("log tools: monitor --follow verifies each new checkpoint and stops at a fork", "[log_tools]") {
  LogTools t;
  t.log.Grow(100);
  Process follower({OSH_POLICYCTL_BINARY, "log", "monitor", "--log", t.log.dir(), "--key", t.vkey_file, "--state", t.state,
                    "--follow", "--interval", "100ms"},
                   t.dir / "follow.log");
  REQUIRE(Eventually([&] { return absl::StrContains(ReadAll(t.dir / "follow.log"), "entries 0..99 verified"); }));
  t.log.Grow(300);
  REQUIRE(Eventually([&] { return absl::StrContains(ReadAll(t.dir / "follow.log"), "entries 100..299 verified (200 new)"); }));
  tlog::Hash other = t.log.Root(300);
  other[9] ^= 4;
  WriteFile(t.log.dir() + "/checkpoint", t.log.Sign(300, other), 0644);
  CHECK(follower.Wait(std::chrono::seconds(10)) == 1);
  CHECK_THAT(ReadAll(t.dir / "follow.log"), Catch::Contains("FORK"));
  CHECK(ReadFile(t.state) == t.log.CheckpointAt(300));
}

TEST_CASE("log tools: monitor reads a log served over HTTP", "[log_tools]") {
  LogTools t;
  t.log.Grow(300);
  httplib::Server server;
  REQUIRE(server.set_mount_point("/logs/gw", t.log.dir()));
  const int port = server.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread serving([&server] { server.listen_after_bind(); });
  std::string out, err;
  const std::string url = absl::StrCat("http://127.0.0.1:", port, "/logs/gw");
  const int rc = LogCtl({"monitor", "--log", url, "--key", t.vkey_file, "--state", t.state}, &out, &err);
  const int missing = LogCtl({"checkpoint", "--log", absl::StrCat("http://127.0.0.1:", port, "/nothing"), "--key", t.vkey_file}, &out, &err);
  server.stop();
  serving.join();
  CHECK(rc == 0);
  CHECK(missing == 2);
  CHECK_THAT(err, Catch::Contains("404"));
}

TEST_CASE("log tools: consistency verifies that NEW extends OLD, and names a fork or a shrink", "[log_tools]") {
  LogTools t;
  WriteFile(t.dir / "old", t.log.Grow(100), 0644);
  WriteFile(t.dir / "new", t.log.Grow(1000), 0644);
  std::string out, err;
  const std::vector<std::string> key{"--log", t.log.dir(), "--key", t.vkey_file};
  auto run = [&](const std::string& a, const std::string& b) {
    std::vector<std::string> args{"consistency", t.dir / a, t.dir / b};
    args.insert(args.end(), key.begin(), key.end());
    return LogCtl(args, &out, &err);
  };
  CHECK(run("old", "new") == 0);
  CHECK_THAT(out, Catch::Contains("OK"));
  CHECK(run("new", "new") == 0);
  CHECK(run("new", "old") == 1);
  CHECK_THAT(err, Catch::Contains("SHRINK"));
  TestLog forked("", kLogToolsOrigin, "forked");
  forked.Grow(100);
  WriteFile(t.dir / "forked-old", t.log.Sign(100, forked.Root(100)), 0644);
  CHECK(run("forked-old", "new") == 1);
  CHECK_THAT(err, Catch::Contains("FORK"));
  CHECK_THAT(err, Catch::Contains("does not extend"));
  WriteFile(t.dir / "unsigned", forked.CheckpointAt(100), 0644);  // signed by another key
  CHECK(run("unsigned", "new") == 1);
  CHECK_THAT(err, Catch::Contains("does not verify"));
  CHECK(run("missing", "new") == 2);
}

TEST_CASE("log tools: verify-proof checks a proof bundle offline", "[log_tools]") {
  LogTools t;
  const std::string checkpoint = t.log.Grow(900);
  auto bundle = [&](int64_t index, const std::string& entry, const tlog::Proof& proof, const std::string& note) {
    std::vector<std::string> hashes;
    for (const tlog::Hash& h : proof) hashes.push_back(absl::StrCat("\"", tlog::HashToBase64(h), "\""));
    std::string json_note;
    for (char c : note) json_note += c == '\n' ? std::string("\\n") : std::string(1, c);
    return absl::StrCat("{\"index\": ", index, ", \"entry\": \"", absl::Base64Escape(entry), "\", \"inclusion_proof\": [",
                        absl::StrJoin(hashes, ", "), "], \"checkpoint\": \"", json_note, "\"}");
  };
  std::string out, err;
  auto verify = [&](const std::string& json, std::vector<std::string> extra = {}) {
    WriteFile(t.dir / "proof.json", json, 0644);
    std::vector<std::string> args{"verify-proof", t.dir / "proof.json", "--key", t.vkey_file};
    args.insert(args.end(), extra.begin(), extra.end());
    return LogCtl(args, &out, &err);
  };
  const int64_t i = 321;
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), checkpoint)) == 0);
  CHECK_THAT(out, Catch::Contains("OK: entry 321"));
  CHECK_THAT(out, Catch::Contains("\"seq\": \"322\"") && Catch::Contains("test entry 321"));  // the event, as JSON
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), checkpoint), {"-o", "json", "--origin", kLogToolsOrigin}) == 0);
  CHECK_THAT(out, Catch::Contains("\"ok\":true"));
  // The entry altered, another index, a proof of another entry, a checkpoint by another key, an index
  // beyond the tree, a witness quorum not met: exit 1, naming what fails.
  CHECK(verify(bundle(i, t.log.EntryText(i) + " ", t.log.Inclusion(i, 900), checkpoint)) == 1);
  CHECK_THAT(err, Catch::Contains("the inclusion proof does not verify"));
  CHECK(verify(bundle(i + 1, t.log.EntryText(i), t.log.Inclusion(i, 900), checkpoint)) == 1);
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i + 1, 900), checkpoint)) == 1);
  TestLog other("", kLogToolsOrigin);
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), other.Grow(900))) == 1);
  CHECK_THAT(err, Catch::Contains("the checkpoint does not verify"));
  CHECK(verify(bundle(900, t.log.EntryText(i), {}, checkpoint)) == 1);
  CHECK_THAT(err, Catch::Contains("beyond the checkpoint"));
  auto witness = tlog::CosignatureV1Signer::Create("witness.test/w1", *tlog::Ed25519PrivateKey::Generate());
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), checkpoint), {"--witness-key", (*witness)->VerifierKey()}) == 1);
  CHECK_THAT(err, Catch::Contains("cosigned by 0 of the witnesses"));
  // Cosigned: the quorum is met.
  const tlog::NoteSigner* signers[] = {witness->get()};
  auto opened = tlog::OpenCheckpoint(checkpoint, "", **tlog::ParseVerifierKey(t.log.VerifierKey()));
  const std::string cosigned = *tlog::SignNote(opened->note.text, signers, opened->note.verified);
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), cosigned), {"--witness-key", (*witness)->VerifierKey()}) == 0);
  // A quorum of 0 would check no witness (the uncosigned checkpoint would pass), and one with no witness key
  // counts nothing: usage errors, exit 2.
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), checkpoint),
               {"--witness-key", (*witness)->VerifierKey(), "--quorum", "0"}) == 2);
  CHECK_THAT(err, Catch::Contains("--quorum"));
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), checkpoint), {"--quorum", "1"}) == 2);
  CHECK_THAT(err, Catch::Contains("--quorum needs --witness-key"));
  CHECK(verify(bundle(i, t.log.EntryText(i), t.log.Inclusion(i, 900), cosigned),
               {"--witness-key", (*witness)->VerifierKey(), "--quorum", "1"}) == 0);
  // An entry that is not an audit event is shown as text only when it is printable ASCII on one line: a
  // newline or a C1 control in it could write a line of its own.
  for (const std::string& entry : {std::string("x\nOK: entry 7 is in a forged log"), std::string("x \xc2\x9b" "31m")}) {
    REQUIRE(verify(bundle(0, entry, {}, t.log.Sign(1, tlog::RecordHash(entry)))) == 0);
    CHECK_THAT(out, Catch::Contains("base64:" + absl::Base64Escape(entry)));
    CHECK_THAT(out, !Catch::Contains("forged"));
  }
  // Malformed bundles are usage errors (exit 2).
  CHECK(verify("{\"index\": 1}") == 2);
  CHECK(verify("not json") == 2);
  CHECK(verify("{\"index\": 1.5, \"entry\": \"\", \"inclusion_proof\": [], \"checkpoint\": \"\"}") == 2);
  CHECK(verify("{\"index\": 1, \"entry\": \"\", \"inclusion_proof\": [\"AAAA\"], \"checkpoint\": \"\"}") == 2);
  CHECK(verify("{\"index\": 1, \"entry\": \"\", \"inclusion_proof\": [], \"checkpoint\": \"\", \"extra\": 1}") == 2);
}

TEST_CASE("log tools: policy-log-witness cosigns over HTTP, keeps its state across a restart and refuses a fork", "[log_tools]") {
  TempDir dir;
  TestLog log("", kLogToolsOrigin);
  std::string out, err;
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "keygen", "--name", "witness.test/w1", "--out", dir / "witness.pem"}, &out, &err) == 0);
  const std::string witness_vkey(absl::StripAsciiWhitespace(out));
  struct stat st {};
  REQUIRE(::stat((dir / "witness.pem").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(RunCommand({OSH_WITNESS_BINARY, "keygen", "--name", "witness.test/w1", "--out", dir / "witness.pem"}, &out, &err) == 2);
  WriteFile(dir / "witness.toml",
            absl::StrCat("name = \"witness.test/w1\"\nkey_file = \"", dir / "witness.pem", "\"\nlisten = \"127.0.0.1:0\"\n",
                         "state_file = \"", dir / "state.toml", "\"\nrequest_timeout_s = 5\n[[log]]\norigin = \"", kLogToolsOrigin,
                         "\"\nkey = \"", log.VerifierKey(), "\"\n"));
  // No state file yet: a witness never starts from nothing (it would cosign a fork); `init` makes a new one's.
  CHECK(RunCommand({OSH_WITNESS_BINARY, "--config", dir / "witness.toml", "--check-config"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("no state file") && Catch::Contains("policy-log-witness init"));
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "init", "--config", dir / "witness.toml"}, &out, &err) == 0);
  CHECK(RunCommand({OSH_WITNESS_BINARY, "init", "--config", dir / "witness.toml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("never started again from nothing"));
  REQUIRE(::stat((dir / "state.toml").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "--config", dir / "witness.toml", "--check-config"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains(witness_vkey));

  auto start = [&](int n) {
    auto p = std::make_unique<Process>(std::vector<std::string>{OSH_WITNESS_BINARY, "--config", dir / "witness.toml"},
                                       dir / absl::StrCat("witness", n, ".log"));
    return p;
  };
  auto post = [](const std::string& host_port, const std::string& body) {
    httplib::Client client(host_port);
    client.set_read_timeout(10, 0);
    return client.Post("/add-checkpoint", body, "text/plain");
  };
  auto cosigned = [&](const std::string& note, const std::string& lines) {
    auto witness_key = tlog::ParseVerifierKey(witness_vkey);
    auto log_key = tlog::ParseVerifierKey(log.VerifierKey());
    REQUIRE(witness_key.ok());
    const tlog::NoteVerifier* cosigners[] = {witness_key->get()};
    return tlog::OpenCheckpoint(note + lines, kLogToolsOrigin, **log_key, cosigners, 1).ok();
  };

  auto first = start(1);
  std::string host_port = LoggedAfter([&] { return ReadAll(dir / "witness1.log"); }, "listening on ");
  const std::string note10 = log.Grow(10);
  auto r = post(host_port, witness::FormatAddCheckpointRequest(0, {}, note10));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(cosigned(note10, r->body));
  const std::string note20 = log.Grow(20);
  r = post(host_port, witness::FormatAddCheckpointRequest(10, log.Consistency(10, 20), note20));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(cosigned(note20, r->body));
  // Protocol answers: 409 with the size, 404, 400, 405 and 413.
  r = post(host_port, witness::FormatAddCheckpointRequest(0, {}, note20));
  REQUIRE(r);
  CHECK(r->status == 409);
  CHECK(r->get_header_value("Content-Type") == "text/x.tlog.size");
  CHECK(r->body == "20\n");
  TestLog stranger("", "stranger.test/log");
  CHECK(post(host_port, witness::FormatAddCheckpointRequest(0, {}, stranger.Grow(2)))->status == 404);
  CHECK(post(host_port, "nonsense")->status == 400);
  httplib::Client client(host_port);
  auto got = client.Get("/add-checkpoint");
  REQUIRE(got);
  CHECK(got->status == 405);
  CHECK(post(host_port, std::string(witness::kMaxRequestBytes + 10, 'a'))->status == 413);
  first->Signal(SIGTERM);
  CHECK(first->Wait() == 0);

  // Restarted: it still holds size 20, so a fork at 20 and a shrink are refused, an extension cosigned.
  auto second = start(2);
  host_port = LoggedAfter([&] { return ReadAll(dir / "witness2.log"); }, "listening on ");
  tlog::Hash other = log.Root(20);
  other[0] ^= 1;
  r = post(host_port, witness::FormatAddCheckpointRequest(20, {}, log.Sign(20, other)));
  REQUIRE(r);
  CHECK(r->status == 409);
  CHECK(post(host_port, witness::FormatAddCheckpointRequest(10, {}, log.CheckpointAt(10)))->status == 409);
  const std::string note30 = log.Grow(30);
  r = post(host_port, witness::FormatAddCheckpointRequest(20, log.Consistency(20, 30), note30));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(cosigned(note30, r->body));
  second->Signal(SIGTERM);
  CHECK(second->Wait() == 0);
  CHECK_THAT(ReadAll(dir / "witness2.log"), Catch::Contains("FORK"));
}

}  // namespace osh::test

namespace osh::test {
namespace {

// Connects to "127.0.0.1:port"; -1 on failure.
int ConnectLoopback(const std::string& host_port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(std::stoi(host_port.substr(host_port.rfind(':') + 1))));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TEST_CASE("log tools: policy-log-witness holds no endless header and no slow client for long, and still cosigns",
          "[log_tools][limits]") {
  // Regression: its HTTP server (cpp-httplib 0.11) grew a request line or a header line without bound
  // (300 MiB sent, 317 MB resident), and every one of its workers could be held by a client trickling
  // its headers; on civetweb (the first mend), by one trickling its body.
  TempDir dir;
  TestLog log("", kLogToolsOrigin);
  std::string out, err;
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "keygen", "--name", "witness.test/w1", "--out", dir / "witness.pem"}, &out, &err) == 0);
  WriteFile(dir / "witness.toml",
            absl::StrCat("name = \"witness.test/w1\"\nkey_file = \"", dir / "witness.pem", "\"\nlisten = \"127.0.0.1:0\"\n",
                         "state_file = \"", dir / "state.toml", "\"\nrequest_timeout_s = 2\n[[log]]\norigin = \"", kLogToolsOrigin,
                         "\"\nkey = \"", log.VerifierKey(), "\"\n"));
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "init", "--config", dir / "witness.toml"}, &out, &err) == 0);
  Process witness({OSH_WITNESS_BINARY, "--config", dir / "witness.toml"}, dir / "witness.log");
  const std::string host_port = LoggedAfter([&] { return ReadAll(dir / "witness.log"); }, "listening on ");

  // One header line without end: the connection is closed long before 256 MiB.
  for (const std::string head : {"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nX-Endless: ", "POST /"}) {
    const int fd = ConnectLoopback(host_port);
    REQUIRE(fd >= 0);
    size_t sent = 0;
    const std::string chunk(64 * 1024, 'a');
    bool open = ::send(fd, head.data(), head.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(head.size());
    while (open && sent < (size_t{256} << 20)) {
      open = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(chunk.size());
      if (open) sent += chunk.size();
    }
    ::close(fd);
    INFO(head);
    CHECK(sent < (size_t{16} << 20));
  }

  // More clients trickling their headers, or their bodies, (a byte each 200 ms) than it has threads: a
  // checkpoint is still cosigned while they go on, and each of them is cut off at the request's timeout.
  std::atomic<bool> stop{false};
  std::array<std::atomic<bool>, 24> cut_off{};
  std::vector<std::thread> slow;
  for (int i = 0; i < 24; ++i) {
    slow.emplace_back([&, i, body = i % 2 == 1] {
      while (!stop) {
        const int fd = ConnectLoopback(host_port);
        if (fd < 0) return;
        const std::string head = "POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: 100000\r\n\r\n";
        if (body && ::send(fd, head.data(), head.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(head.size())) break;
        for (size_t k = 0; !stop; ++k) {
          const char c = body ? 'a' : head[k % head.size()];
          if (::send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
            cut_off[i] = true;
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        ::close(fd);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  httplib::Client client(host_port);
  client.set_connection_timeout(30, 0);
  client.set_read_timeout(30, 0);
  const std::string note = log.Grow(5);
  auto answer = client.Post("/add-checkpoint", witness::FormatAddCheckpointRequest(0, {}, note), "text/plain");
  // request_timeout_s is 2: the trickling clients are cut off, whether in their headers or their bodies.
  const bool all_cut = Eventually([&] { return std::all_of(cut_off.begin(), cut_off.end(), [](auto& c) { return c.load(); }); },
                                  std::chrono::seconds(30));
  stop = true;
  for (auto& t : slow) t.join();
  REQUIRE(answer);
  CHECK(answer->status == 200);
  CHECK(all_cut);
  witness.Signal(SIGTERM);
  CHECK(witness.Wait() == 0);
}

}  // namespace osh::test
