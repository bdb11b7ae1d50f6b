// The verifiable log (issue 27) as an operator and an adversary meet it: a real gateway with a log key
// publishes every audit event as an entry of a Merkle tree (tiles, entry bundles, a signed checkpoint under
// <state_dir>/log); every entry proves against the checkpoint with the log's verifier key alone; kill -9
// loses no committed event (the next checkpoint covers it); and a database rewritten (even with the hash
// chain recomputed) or rolled back under the log is refused at start.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <filesystem>
#include <thread>

#include "tests/gateway_fixture.h"
#include "tlog/checkpoint.h"
#include "tlog/tiles.h"
#include "trust/audit_chain.h"
#include "trust/keys.h"

using namespace osh::test;

namespace {

constexpr char kOrigin[] = "test.example/policy-gateway";

struct LogKey {
  TempDir dir;
  std::string path = dir / "log.key";
  std::string pem;
  LogKey() {
    auto key = osh::trust::PrivateKey::Generate("ed25519");
    REQUIRE(key.ok());
    pem = key->ToPem();
    WriteFile(path, pem, 0600);
  }
  std::vector<std::string> Flags() const {
    return {"--log-signing-key", path, "--log-origin", kOrigin, "--log-integrate-interval-ms", "20"};
  }
};

// The published checkpoint, opened with the log's verifier key (derived from the PEM, as an auditor holds it).
osh::tlog::Checkpoint PublishedCheckpoint(const std::string& log_dir, const std::string& pem) {
  auto vkey = osh::tlog::VerifierKeyFromPem(kOrigin, pem);
  REQUIRE(vkey.ok());
  auto verifier = osh::tlog::ParseVerifierKey(*vkey);
  REQUIRE(verifier.ok());
  const std::string note = ReadAll(log_dir + "/checkpoint");
  auto opened = osh::tlog::OpenCheckpoint(note, kOrigin, **verifier);
  INFO(opened.status() << "\n" << note);
  REQUIRE(opened.ok());
  return opened->checkpoint;
}

// Waits until the checkpoint covers `size` entries.
osh::tlog::Checkpoint WaitForCheckpoint(const std::string& log_dir, const std::string& pem, int64_t size) {
  for (int i = 0; i < 500; ++i) {
    if (std::filesystem::exists(log_dir + "/checkpoint")) {
      auto checkpoint = PublishedCheckpoint(log_dir, pem);
      if (checkpoint.size >= size) return checkpoint;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("no checkpoint covering " << size << " entries was published");
  return {};
}

// Every event is the entry at index seq - 1: its bundle holds exactly its canonical bytes, and its inclusion
// proof, computed from the published tiles only (each tile checked against the checkpoint), verifies.
void CheckEveryEventProves(const std::string& log_dir, const osh::tlog::Checkpoint& checkpoint,
                           const std::vector<gw::AuditEvent>& events) {
  REQUIRE(static_cast<int64_t>(events.size()) <= checkpoint.size);
  osh::tlog::DirTileFetcher fetcher(log_dir);
  osh::tlog::TileHashReader tiles(checkpoint.size, checkpoint.root, fetcher);
  for (const auto& event : events) {
    INFO("seq " << event.seq());
    const int64_t index = static_cast<int64_t>(event.seq()) - 1;
    const std::string entry = osh::trust::CanonicalAuditBytes(osh::trust::FromProto(event));
    auto proof = osh::tlog::ProveRecord(checkpoint.size, index, tiles);
    INFO(proof.status());
    REQUIRE(proof.ok());
    CHECK(osh::tlog::CheckRecord(*proof, checkpoint.size, checkpoint.root, index, osh::tlog::RecordHash(entry)).ok());
    // The bundle of a full tile may have replaced the partial one a smaller checkpoint named.
    const int64_t bundle_index = index / osh::tlog::kTileWidth;
    const int64_t in_tree = std::min<int64_t>(checkpoint.size - bundle_index * osh::tlog::kTileWidth, osh::tlog::kTileWidth);
    auto data = fetcher.ReadTiles({osh::tlog::Tile{osh::tlog::kEntriesLevel, bundle_index, static_cast<int>(in_tree)}});
    REQUIRE(data.ok());
    auto bundle = osh::tlog::DecodeEntryBundle((*data)[0]);
    REQUIRE(bundle.ok());
    REQUIRE(static_cast<int64_t>(bundle->size()) > index % osh::tlog::kTileWidth);
    CHECK((*bundle)[index % osh::tlog::kTileWidth] == entry);
  }
}

void AdmitSome(GatewayFixture& g, int from, int count) {
  for (int i = from; i < from + count; ++i) {
    gw::AdmitSandboxResponse admitted;
    REQUIRE(g.Admit("sb-" + std::to_string(i), &admitted).ok());
  }
}

// Starts the gateway over `state_dir` expecting it to refuse: its exit status and log.
int StartRefused(const std::string& state_dir, const std::vector<std::string>& flags, const std::string& log_path) {
  std::vector<std::string> argv = {OSH_GATEWAY_BINARY, "--state-dir", state_dir};
  argv.insert(argv.end(), flags.begin(), flags.end());
  Process process(argv, log_path);
  return process.Wait(std::chrono::seconds(20));
}

}  // namespace

TEST_CASE("log: every audit event is an entry of the published tree, proven with the log key alone, and kill -9 loses none",
          "[integration][log]") {
  LogKey key;
  GatewayFixture g(key.Flags());
  const std::string log_dir = g.state_dir() + "/log";
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  AdmitSome(g, 0, 5);
  auto events = g.AuditEvents();
  auto checkpoint = WaitForCheckpoint(log_dir, key.pem, static_cast<int64_t>(events.size()));
  CHECK(checkpoint.origin == kOrigin);
  CheckEveryEventProves(log_dir, checkpoint, events);
  CHECK_THAT(g.log(), Catch::Contains("verifiable log '" + std::string(kOrigin) + "'"));

  // Admissions acknowledged, then kill -9 before (most likely) the next integration: nothing is lost, the
  // first checkpoint after the restart covers them, and it extends the one published before.
  AdmitSome(g, 5, 300);  // past one full tile of 256 entries
  const int64_t acknowledged = static_cast<int64_t>(g.AuditEvents().size());
  g.Kill9();
  g.Start();
  events = g.AuditEvents();
  REQUIRE(static_cast<int64_t>(events.size()) >= acknowledged);
  auto after = WaitForCheckpoint(log_dir, key.pem, static_cast<int64_t>(events.size()));
  CheckEveryEventProves(log_dir, after, events);
  osh::tlog::DirTileFetcher fetcher(log_dir);
  osh::tlog::TileHashReader tiles(after.size, after.root, fetcher);
  auto consistency = osh::tlog::ProveTree(after.size, checkpoint.size, tiles);
  REQUIRE(consistency.ok());
  CHECK(osh::tlog::CheckTree(*consistency, after.size, after.root, checkpoint.size, checkpoint.root).ok());
  CHECK(std::filesystem::exists(log_dir + "/tile/0/000"));  // the first full tile
  CHECK(std::filesystem::exists(log_dir + "/tile/entries/000"));
}

TEST_CASE("log: log_listen serves the checkpoint and tiles read-only over HTTP, and nothing else of the state",
          "[integration][log]") {
  LogKey key;
  std::vector<std::string> flags = key.Flags();
  flags.insert(flags.end(), {"--log-listen", "127.0.0.1:0"});
  GatewayFixture g(flags);
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  AdmitSome(g, 0, 3);
  const std::string log_dir = g.state_dir() + "/log";
  WaitForCheckpoint(log_dir, key.pem, static_cast<int64_t>(g.AuditEvents().size()));
  const std::string host_port = LoggedAfter([&] { return g.log(); }, "verifiable log: serving http://");
  httplib::Client client(host_port.substr(0, host_port.find('/')));
  // The served checkpoint is the published one, and every file it names is served byte for byte.
  auto checkpoint = client.Get("/checkpoint");
  REQUIRE(checkpoint);
  CHECK(checkpoint->status == 200);
  CHECK(checkpoint->get_header_value("Cache-Control") == "no-cache");
  CHECK(checkpoint->body == ReadAll(log_dir + "/checkpoint"));
  const auto opened = PublishedCheckpoint(log_dir, key.pem);
  for (const auto& tile : osh::tlog::TilesForSize(opened.size)) {
    for (const auto& t : {tile, osh::tlog::BundleOf(tile)}) {
      if (t.level == osh::tlog::kEntriesLevel && tile.level != 0) continue;
      const std::string path = osh::tlog::TilePath(t);
      INFO(path);
      auto served = client.Get("/" + path);
      REQUIRE(served);
      CHECK(served->status == 200);
      CHECK(served->body == ReadAll(log_dir + "/" + path));
    }
  }
  for (const char* hostile : {"/gateway.db", "/tile/../../gateway.db", "/tile/0/..%2F..%2Fgateway.db", "/tile/x",
                              "/log.key", "/"}) {
    INFO(hostile);
    auto refused = client.Get(hostile);
    REQUIRE(refused);
    CHECK(refused->status == 404);
  }
  auto post = client.Post("/checkpoint", "x", "text/plain");
  REQUIRE(post);
  CHECK(post->status == 405);
}

TEST_CASE("log: a database rewritten or rolled back under the log is refused at start", "[integration][log]") {
  LogKey key;
  GatewayFixture g(key.Flags());
  const std::string db = g.state_dir() + "/gateway.db";
  const std::string log_dir = g.state_dir() + "/log";
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  AdmitSome(g, 0, 3);
  WaitForCheckpoint(log_dir, key.pem, static_cast<int64_t>(g.AuditEvents().size()));

  SECTION("an event rewritten with the whole hash chain after it recomputed") {
    // What `audit verify` cannot see without an anchor: every link still holds. The tree's root does not.
    auto events = g.AuditEvents();
    REQUIRE(g.Stop() == 0);
    std::string prev = osh::trust::kGenesisHash;
    for (const auto& e : events) {
      osh::trust::AuditEvent forged = osh::trust::FromProto(e);
      if (forged.seq == 2) forged.reason = "forged";
      forged.prev_hash = prev;
      forged.hash = osh::trust::ChainHash(prev, forged);
      prev = forged.hash;
      EditDatabase(db, "UPDATE audit_events SET reason = '" + forged.reason + "', prev_hash = '" + forged.prev_hash +
                           "', hash = '" + forged.hash + "' WHERE seq = " + std::to_string(forged.seq));
    }
    std::filesystem::remove(db + ".head");  // the rollback anchor would see the head's hash change first
    const std::string log_path = g.dir() / "refused.log";
    CHECK(StartRefused(g.state_dir(), key.Flags(), log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("log_inconsistent") && Catch::Contains("rewritten"));
  }
  SECTION("an event rewritten in place (its link broken)") {
    REQUIRE(g.Stop() == 0);
    EditDatabase(db, "UPDATE audit_events SET reason = 'forged' WHERE seq = 2");
    const std::string log_path = g.dir() / "refused.log";
    CHECK(StartRefused(g.state_dir(), key.Flags(), log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("log_inconsistent: audit event 2 does not verify"));
  }
  SECTION("the database rolled back to an older copy, even with the rollback accepted") {
    REQUIRE(g.Stop() == 0);
    const std::string copy = g.dir() / "old.db";
    std::filesystem::copy_file(db, copy);
    g.Start();
    AdmitSome(g, 3, 3);
    WaitForCheckpoint(log_dir, key.pem, static_cast<int64_t>(g.AuditEvents().size()));
    REQUIRE(g.Stop() == 0);
    std::filesystem::copy_file(copy, db, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::remove(db + "-wal");
    std::filesystem::remove(db + "-shm");
    const std::string log_path = g.dir() / "refused.log";
    std::vector<std::string> flags = key.Flags();
    flags.push_back("--accept-state-rollback");
    CHECK(StartRefused(g.state_dir(), flags, log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("log_inconsistent") && Catch::Contains("rolled back"));
  }
  SECTION("another log key for the same log") {
    REQUIRE(g.Stop() == 0);
    LogKey other;
    const std::string log_path = g.dir() / "refused.log";
    CHECK(StartRefused(g.state_dir(), other.Flags(), log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("does not open with this log key"));
  }
}
