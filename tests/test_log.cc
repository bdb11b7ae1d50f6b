// The verifiable log (issue 27) as an operator and an adversary meet it: a real gateway with a log key
// publishes every audit event as an entry of a Merkle tree (tiles, entry bundles, a signed checkpoint under
// <state_dir>/log); every entry proves against the checkpoint with the log's verifier key alone; kill -9
// loses no committed event (the next checkpoint covers it); and a database rewritten (even with the hash
// chain recomputed) or rolled back under the log is refused at start.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include <catch2/catch.hpp>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <limits>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "sandbox_client/log_proof.h"
#include "sandbox_client/sandbox_client.h"

#include "tests/gateway_fixture.h"
#include "tests/process.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "tlog/ed25519.h"
#include "tlog/tiles.h"
#include "trust/audit_chain.h"
#include "trust/encoding.h"
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
  std::vector<std::string> Flags(int integrate_interval_ms = 20) const {
    return {"--log-signing-key", path, "--log-origin", kOrigin, "--log-integrate-interval-ms",
            std::to_string(integrate_interval_ms)};
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

// Sets up a real policy-log-witness "witness.test/w1" that knows this log, in `dir` (w1.pem, w1.toml with
// `extra` TOML lines, its state initialised): its verifier key. The caller starts it.
std::string PrepareWitness(const TempDir& dir, const std::string& log_vkey, const std::string& extra = "") {
  std::string out, err;
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "keygen", "--name", "witness.test/w1", "--out", dir / "w1.pem"}, &out, &err) == 0);
  const std::string vkey(absl::StripAsciiWhitespace(out));
  WriteFile(dir / "w1.toml", absl::StrCat("name = \"witness.test/w1\"\nkey_file = \"", dir / "w1.pem",
                                          "\"\nlisten = \"127.0.0.1:0\"\n", extra, "state_file = \"", dir / "state.toml",
                                          "\"\n[[log]]\norigin = \"", kOrigin, "\"\nkey = \"", log_vkey, "\"\n"));
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "init", "--config", dir / "w1.toml"}, &out, &err) == 0);
  return vkey;
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
  // The server closes refused requests at once; a client still writing must see EPIPE, not die of SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
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

  // A tile no published checkpoint covers (a write ahead of a checkpoint that never came, which may yet be
  // replaced) is not served, though it is in the folder.
  WriteFile(log_dir + "/tile/0/005", std::string(8192, 'u'), 0644);
  auto ahead = client.Get("/tile/0/005");
  REQUIRE(ahead);
  CHECK(ahead->status == 404);

  // The tiles and bundle of the published tree's right edge, lost (a crash before their folder reached the
  // disk): a restart writes them again, byte for byte, though the checkpoint did not move.
  REQUIRE(g.Stop() == 0);
  const auto published = PublishedCheckpoint(log_dir, key.pem);
  std::map<std::string, std::string> edge;
  for (const auto& tile : osh::tlog::NewTiles(published.size - 1, published.size)) {
    for (const auto& t : {tile, osh::tlog::BundleOf(tile)}) {
      if (t.level == osh::tlog::kEntriesLevel && tile.level != 0) continue;
      const std::string path = log_dir + "/" + osh::tlog::TilePath(t);
      edge[path] = ReadAll(path);
      REQUIRE(std::filesystem::remove(path));
    }
  }
  REQUIRE(!edge.empty());
  g.Start();
  for (const auto& [path, bytes] : edge) {
    INFO(path);
    REQUIRE(std::filesystem::exists(path));
    CHECK(ReadAll(path) == bytes);
  }
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
  SECTION("a published checkpoint that cannot be read is not taken for a new log") {
    REQUIRE(g.Stop() == 0);
    const std::string checkpoint = log_dir + "/checkpoint";
    std::filesystem::remove(checkpoint);
    std::filesystem::create_symlink(checkpoint, checkpoint);  // a loop: open fails with ELOOP, not ENOENT
    const std::string log_path = g.dir() / "refused.log";
    CHECK(StartRefused(g.state_dir(), key.Flags(), log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("log_inconsistent: cannot check the published checkpoint") &&
                                      Catch::Contains(checkpoint));
  }
  SECTION("a checkpoint sent to witnesses before a crash, which the database no longer extends") {
    // The gateway records each checkpoint it sends to witnesses before sending it (checkpoint.signed);
    // one of a larger tree than the database now holds, under this log's key, is a fork the witnesses hold.
    REQUIRE(g.Stop() == 0);
    const auto published = PublishedCheckpoint(log_dir, key.pem);
    auto signer = osh::tlog::Ed25519NoteSigner::FromPem(kOrigin, key.pem);
    REQUIRE(signer.ok());
    const osh::tlog::NoteSigner* signers[] = {signer->get()};
    const osh::tlog::Checkpoint ahead{kOrigin, published.size + 50, osh::tlog::RecordHash("another tree"), {}};
    WriteFile(log_dir + "/checkpoint.signed", *osh::tlog::SignCheckpoint(ahead, signers), 0644);
    const std::string log_path = g.dir() / "refused.log";
    CHECK(StartRefused(g.state_dir(), key.Flags(), log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("log_inconsistent") &&
                                      Catch::Contains("a checkpoint signed and sent to the witnesses before a crash") &&
                                      Catch::Contains("checkpoint.signed"));
    // One the published checkpoint has caught up with holds nothing back.
    const osh::tlog::Checkpoint behind{kOrigin, published.size, published.root, {}};
    WriteFile(log_dir + "/checkpoint.signed", *osh::tlog::SignCheckpoint(behind, signers), 0644);
    g.Start();
    CHECK(g.Stop() == 0);
  }
  SECTION("a log key others can read is refused, naming the fix") {
    REQUIRE(g.Stop() == 0);
    ::chmod(key.path.c_str(), 0644);
    const std::string log_path = g.dir() / "refused.log";
    CHECK(StartRefused(g.state_dir(), key.Flags(), log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("log_signing_key " + key.path) && Catch::Contains("chmod o-rwx"));
  }
  SECTION("another log key for the same log") {
    REQUIRE(g.Stop() == 0);
    LogKey other;
    const std::string log_path = g.dir() / "refused.log";
    CHECK(StartRefused(g.state_dir(), other.Flags(), log_path) == 1);
    CHECK_THAT(ReadAll(log_path), Catch::Contains("does not open with this log key"));
  }
}

TEST_CASE("log: a sandbox gets the proof that its projection was logged, through admission and re-projection",
          "[integration][log]") {
  LogKey key;
  GatewayFixture g(key.Flags());
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-proof", &admitted).ok());
  auto vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(vkey.ok());
  auto verifier = osh::tlog::ParseVerifierKey(*vkey);
  REQUIRE(verifier.ok());

  // Fetches the proof (retrying while the entry is pending) and checks it as a supervisor would.
  auto proven = [&](uint64_t known_size, gw::LogProof* out) {
    grpc::Status status;
    for (int i = 0; i < 200; ++i) {
      gw::GetLogProofRequest request;
      request.set_known_size(known_size);
      status = g.sandbox().GetLogProof(GatewayFixture::Context(admitted.sandbox_handle()).get(), request, out);
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    INFO(status.error_message());
    REQUIRE(status.ok());
    drv::Projection served;
    REQUIRE(g.Fetch(admitted.sandbox_handle(), &served).ok());
    CHECK(out->entry().sandbox_id() == "sb-proof");
    CHECK(out->entry().policy_digest() == served.policy_digest());
    CHECK(out->entry().policy_version() == served.policy_version());
    CHECK(out->index() == out->entry().seq() - 1);
    auto opened = osh::tlog::OpenCheckpoint(out->checkpoint(), kOrigin, **verifier);
    REQUIRE(opened.ok());
    osh::tlog::Proof proof;
    for (const auto& h : out->inclusion_proof()) {
      auto hash = osh::tlog::HashFromBytes(h);
      REQUIRE(hash.ok());
      proof.push_back(*hash);
    }
    const std::string entry = osh::trust::CanonicalAuditBytes(osh::trust::FromProto(out->entry()));
    CHECK(osh::tlog::CheckRecord(proof, opened->checkpoint.size, opened->checkpoint.root,
                                 static_cast<int64_t>(out->index()), osh::tlog::RecordHash(entry))
              .ok());
    return opened->checkpoint;
  };
  gw::LogProof first;
  const auto first_checkpoint = proven(0, &first);
  CHECK(first.entry().type() == "admission");
  CHECK(first.consistency_proof().empty());

  // A policy change re-projects the sandbox: its proof names the new projection, in an entry of its own,
  // and proves the new checkpoint extends the one the supervisor saw.
  auto narrower = osh::policy::RestrictiveDefaultPolicy();
  narrower.mutable_filesystem()->add_read_only("/srv/extra");
  REQUIRE(g.SetPolicy("default", narrower).ok());
  gw::LogProof second;
  osh::tlog::Checkpoint second_checkpoint;
  for (int i = 0; i < 100; ++i) {  // until the served projection's entry is the re-projection's
    second_checkpoint = proven(static_cast<uint64_t>(first_checkpoint.size), &second);
    if (second.entry().type() == "reprojection") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(second.entry().type() == "reprojection");
  CHECK(second.entry().seq() > first.entry().seq());
  osh::tlog::Proof consistency;
  for (const auto& h : second.consistency_proof()) consistency.push_back(*osh::tlog::HashFromBytes(h));
  CHECK(osh::tlog::CheckTree(consistency, second_checkpoint.size, second_checkpoint.root, first_checkpoint.size,
                             first_checkpoint.root)
            .ok());

  // An operator asks for the same proof by sandbox id (policyctl log prove) and checks it the same way; the
  // bundle it writes verifies offline.
  std::string out, err;
  CHECK(Ctl(g, {"log", "prove", "--sandbox", "sb-proof", "--key", *vkey, "--out", g.dir() / "bundle.json"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::StartsWith("OK: sandbox sb-proof is served ") && Catch::Contains("(reprojection) of " + std::string(kOrigin)));
  CHECK(Ctl(g, {"log", "verify-proof", g.dir() / "bundle.json", "--key", *vkey}, &out, &err) == 0);
  CHECK(Ctl(g, {"-o", "json", "log", "prove", "--sandbox", "sb-proof", "--key", *vkey}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"ok\":true") && Catch::Contains("\"type\":\"reprojection\""));
  LogKey stranger;
  auto stranger_vkey = osh::tlog::VerifierKeyFromPem(kOrigin, stranger.pem);
  CHECK(Ctl(g, {"log", "prove", "--sandbox", "sb-proof", "--key", *stranger_vkey}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("the checkpoint does not verify"));
  CHECK(Ctl(g, {"log", "prove", "--sandbox", "sb-nobody", "--key", *vkey}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("sb-nobody"));

  // A caller claiming to have verified a larger tree than this one holds: OUT_OF_RANGE (that was another log).
  for (const uint64_t beyond : {static_cast<uint64_t>(second_checkpoint.size) + 1, uint64_t{1} << 62, ~uint64_t{0}}) {
    gw::GetLogProofRequest request;
    request.set_known_size(beyond);
    gw::LogProof out;
    const grpc::Status status =
        g.sandbox().GetLogProof(GatewayFixture::Context(admitted.sandbox_handle()).get(), request, &out);
    CHECK(status.error_code() == grpc::StatusCode::OUT_OF_RANGE);
  }

  // Many sandboxes' supervisors asking at once get proofs that all verify.
  std::vector<std::thread> askers;
  std::atomic<int> verified{0};
  for (int t = 0; t < 8; ++t) {
    askers.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        gw::GetLogProofRequest request;
        request.set_known_size(static_cast<uint64_t>(first_checkpoint.size));
        gw::LogProof out;
        if (!g.sandbox().GetLogProof(GatewayFixture::Context(admitted.sandbox_handle()).get(), request, &out).ok()) continue;
        auto opened = osh::tlog::OpenCheckpoint(out.checkpoint(), kOrigin, **verifier);
        if (!opened.ok()) continue;
        osh::tlog::Proof proof;
        for (const auto& h : out.inclusion_proof()) proof.push_back(*osh::tlog::HashFromBytes(h));
        const std::string entry = osh::trust::CanonicalAuditBytes(osh::trust::FromProto(out.entry()));
        if (osh::tlog::CheckRecord(proof, opened->checkpoint.size, opened->checkpoint.root,
                                   static_cast<int64_t>(out.index()), osh::tlog::RecordHash(entry))
                .ok()) {
          ++verified;
        }
      }
    });
  }
  for (auto& t : askers) t.join();
  CHECK(verified == 8 * 25);

  // Without a handle: UNAUTHENTICATED, as a fetch.
  gw::LogProof none;
  CHECK(g.sandbox().GetLogProof(GatewayFixture::Context("sbh_wrong").get(), gw::GetLogProofRequest(), &none).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
}

namespace {

// A supervisor's client for `handle`, requiring log proofs, its context naming `sandbox_id`.
absl::StatusOr<std::unique_ptr<osh::sandbox_client::SandboxClient>> ProvingClient(GatewayFixture& g,
                                                                                  const std::string& handle,
                                                                                  const std::string& sandbox_id,
                                                                                  const std::string& log_key,
                                                                                  const std::string& state_file) {
  osh::sandbox_client::ClientOptions options;
  options.endpoint.unix_socket = g.sandbox_socket();
  options.handle = handle;
  options.context.emplace();
  options.context->set_sandbox_id(sandbox_id);
  options.context->set_user_subject("alice@example.com");
  options.require_log_proof = true;
  options.log_key = log_key;
  options.log_state_file = state_file;
  options.log_proof_wait = std::chrono::milliseconds(5000);
  return osh::sandbox_client::SandboxClient::Connect(options);
}

}  // namespace

TEST_CASE("log: WatchServedProjection brings each projection with its proof, and a pending proof follows on the stream",
          "[integration][log]") {
  // Issue 27.5: the proof travels beside the projection; one not integrated yet follows on the stream.
  LogKey key;
  std::vector<std::string> flags = key.Flags();
  flags.back() = "1000";  // integrations far apart: a projection pushed at once finds its entry pending
  GatewayFixture g(flags);
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-w", &admitted).ok());
  auto vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(vkey.ok());
  // The stream's proofs checked in order as a supervisor does: each one's consistency proof starts from
  // the checkpoint of the one before.
  auto verifier = osh::sandbox_client::LogProofVerifier::Create({*vkey, {}, 0, ""});
  REQUIRE(verifier.ok());

  auto context = GatewayFixture::Context(admitted.sandbox_handle());
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = g.sandbox().WatchServedProjection(context.get(), gw::GetServedProjectionRequest());
  drv::Projection current;  // the projection the next proof-only message proves
  // Reads until the proof of the projection of `digest` has arrived and checked; true if it came alone.
  auto follow = [&](const std::string& digest) {
    gw::ServedProjection message;
    bool came_alone = false;
    while (reader->Read(&message)) {
      if (message.has_projection()) {
        CHECK(message.has_proof() == message.log_status().empty());
        current = message.projection();
        if (!message.has_proof()) {
          CHECK_THAT(message.log_status(), Catch::StartsWith("log_pending"));
          continue;
        }
      } else {
        REQUIRE(message.has_proof());  // a proof alone proves the projection sent before it
        came_alone = true;
      }
      const absl::Status checked = (*verifier)->Check(message.proof(), current, "sb-w");
      INFO(checked);
      CHECK(checked.ok());
      if (current.policy_digest() == digest) return came_alone;
    }
    FAIL("the stream ended before the proof of " << digest);
    return false;
  };
  follow(admitted.policy_digest());

  // Each change is pushed at once, before the next integration: its proof follows on its own.
  int followed = 0;
  for (int i = 0; i < 3; ++i) {
    auto narrower = osh::policy::RestrictiveDefaultPolicy();
    narrower.mutable_filesystem()->add_read_only("/srv/extra-" + std::to_string(i));
    REQUIRE(g.SetPolicy("default", narrower).ok());
    drv::Projection served;
    REQUIRE(g.Fetch(admitted.sandbox_handle(), &served).ok());
    if (follow(served.policy_digest())) ++followed;
  }
  CHECK(followed >= 1);

  // The unary form: the projection served now, with its proof or the reason there is none yet.
  gw::GetServedProjectionRequest request;
  request.set_known_size((*verifier)->known_size());
  gw::ServedProjection once;
  REQUIRE(g.sandbox().GetServedProjection(GatewayFixture::Context(admitted.sandbox_handle()).get(), request, &once).ok());
  CHECK(once.projection().policy_digest() == current.policy_digest());
  if (once.has_proof()) {
    CHECK((*verifier)->Check(once.proof(), once.projection(), "sb-w").ok());
  } else {
    CHECK_THAT(once.log_status(), Catch::StartsWith("log_pending"));
  }
  CHECK(g.sandbox().GetServedProjection(GatewayFixture::Context("sbh_wrong").get(), request, &once).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  {  // a guessed handle opens no stream; a known_size beyond the log gets the projection and why no proof
    auto guessed = GatewayFixture::Context("sbh_wrong");
    auto refused = g.sandbox().WatchServedProjection(guessed.get(), gw::GetServedProjectionRequest());
    gw::ServedProjection none;
    CHECK_FALSE(refused->Read(&none));
    CHECK(refused->Finish().error_code() == grpc::StatusCode::UNAUTHENTICATED);
    gw::GetServedProjectionRequest beyond;
    beyond.set_known_size(uint64_t{1} << 40);
    REQUIRE(g.sandbox().GetServedProjection(GatewayFixture::Context(admitted.sandbox_handle()).get(), beyond, &once).ok());
    CHECK_FALSE(once.has_proof());
    CHECK_THAT(once.log_status(), Catch::Contains("beyond the checkpoint"));
  }

  // The client library's watch (require_log_proof) applies a change whose proof came after it.
  auto client = ProvingClient(g, admitted.sandbox_handle(), "sb-w", *vkey, g.dir() / "client-state");
  REQUIRE(client.ok());
  std::thread watching([&] {
    (*client)->Watch([](const osh::sandbox_client::VerifiedPolicy&) { return absl::OkStatus(); }).IgnoreError();
  });
  CHECK(Eventually([&] { return (*client)->current() != nullptr; }));
  auto last = osh::policy::RestrictiveDefaultPolicy();
  last.mutable_filesystem()->add_read_only("/srv/last");
  REQUIRE(g.SetPolicy("default", last).ok());
  drv::Projection served;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &served).ok());
  CHECK(Eventually([&] {
    auto in_force = (*client)->current();
    return in_force != nullptr && in_force->digest() == served.policy_digest();
  }));
  (*client)->Stop();
  watching.join();
}

TEST_CASE("log: without a log key GetLogProof says log_disabled", "[integration][log]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  gw::LogProof proof;
  const grpc::Status status =
      g.sandbox().GetLogProof(GatewayFixture::Context(admitted.sandbox_handle()).get(), gw::GetLogProofRequest(), &proof);
  CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(status.error_message(), Catch::StartsWith("log_disabled"));
  LogKey key;
  auto vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  std::string out, err;
  CHECK(Ctl(g, {"log", "prove", "--sandbox", "sb-1", "--key", *vkey}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("log_disabled"));
  gw::ServedProjection served;
  REQUIRE(g.sandbox().GetServedProjection(GatewayFixture::Context(admitted.sandbox_handle()).get(),
                                          gw::GetServedProjectionRequest(), &served).ok());
  CHECK(served.projection().policy_digest() == admitted.policy_digest());
  CHECK_FALSE(served.has_proof());
  CHECK_THAT(served.log_status(), Catch::StartsWith("log_disabled"));
}


TEST_CASE("log: the client library applies a projection only with a valid proof that it was logged for this sandbox",
          "[integration][log]") {
  LogKey key;
  std::vector<std::string> flags = key.Flags();
  flags.insert(flags.end(), {"--builtin-context-binding", "false"});  // the log, not the context, must catch a swap
  GatewayFixture g(flags);
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse a, b;
  REQUIRE(g.Admit("sb-a", &a).ok());
  REQUIRE(g.Admit("sb-b", &b).ok());
  auto vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(vkey.ok());
  // Every event under the checkpoint first: the client keeps it, and the fork section below needs the
  // gateway's checkpoint to stay of that size (one made between the two admissions would grow meanwhile).
  WaitForCheckpoint(g.state_dir() + "/log", key.pem, static_cast<int64_t>(g.AuditEvents().size()));
  const std::string state = g.dir() / "log-state";

  auto good = ProvingClient(g, a.sandbox_handle(), "sb-a", *vkey, state);
  REQUIRE(good.ok());
  auto fetched = (*good)->Fetch();
  INFO(fetched.status());
  CHECK(fetched.ok());
  const std::string kept = ReadAll(state);  // the newest checkpoint verified, on disk
  CHECK_THAT(kept, Catch::StartsWith("openshell.sandbox_client.log.v1\nsize "));
  struct stat st {};
  REQUIRE(::stat(state.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  SECTION("another sandbox's handle: the entry names another sandbox") {
    auto swapped = ProvingClient(g, b.sandbox_handle(), "sb-a", *vkey, g.dir() / "swapped-state");
    REQUIRE(swapped.ok());
    auto refused = (*swapped)->Fetch();
    REQUIRE(absl::IsFailedPrecondition(refused.status()));
    CHECK_THAT(std::string(refused.status().message()),
               Catch::StartsWith("log_proof_invalid") && Catch::Contains("names sandbox 'sb-b'"));
  }
  SECTION("another log key: the checkpoint does not verify") {
    LogKey other;
    auto other_vkey = osh::tlog::VerifierKeyFromPem(kOrigin, other.pem);
    auto wrong = ProvingClient(g, a.sandbox_handle(), "sb-a", *other_vkey, g.dir() / "wrong-state");
    REQUIRE(wrong.ok());
    CHECK_THAT(std::string(wrong->get()->Fetch().status().message()),
               Catch::StartsWith("log_proof_invalid") && Catch::Contains("checkpoint"));
  }
  SECTION("a checkpoint seen before that this log does not extend: a fork, or a log rolled back") {
    // The state as a supervisor would hold it had the gateway shown it another tree of the same size.
    const std::vector<std::string> lines = absl::StrSplit(kept, '\n');
    const std::string forked = absl::StrCat(lines[0], "\n", lines[1], "\nroot ",
                                            osh::tlog::HashToBase64(osh::tlog::RecordHash("another tree")), "\n");
    WriteFile(g.dir() / "forked-state", forked, 0600);
    auto fork = ProvingClient(g, a.sandbox_handle(), "sb-a", *vkey, g.dir() / "forked-state");
    REQUIRE(fork.ok());
    auto refused = fork->get()->Fetch();
    // Nothing was logged since `kept`: the gateway's checkpoint is of its size, with the true root. Two
    // trees of one size are a fork, refused as such at once, and the checkpoint kept as evidence.
    CHECK_THAT(std::string(refused.status().message()),
               Catch::StartsWith("log_forked") && Catch::Contains("two trees of one size") &&
                   Catch::Contains("kept in " + (g.dir() / "forked-state.fork")));
    const std::string evidence = ReadAll(g.dir() / "forked-state.fork");
    CHECK_THAT(evidence, Catch::StartsWith("openshell.sandbox_client.log-fork.v1\nknown " + lines[1] + "\n") &&
                             Catch::Contains(std::string("\n") + kOrigin + "\n"));
    struct stat evidence_st {};
    REQUIRE(::stat((g.dir() / "forked-state.fork").c_str(), &evidence_st) == 0);
    CHECK((evidence_st.st_mode & 0777) == 0600);
    CHECK(ReadAll(g.dir() / "forked-state") == forked);  // what was seen before stays
    WriteFile(g.dir() / "ahead-state", absl::StrCat(lines[0], "\nsize 1000000\n", lines[2], "\n"), 0600);
    auto ahead = ProvingClient(g, a.sandbox_handle(), "sb-a", *vkey, g.dir() / "ahead-state");
    REQUIRE(ahead.ok());
    CHECK_THAT(std::string(ahead->get()->Fetch().status().message()), Catch::StartsWith("log_proof_invalid"));
  }
  SECTION("a restart of the supervisor keeps what it saw; the log moving on is accepted with a consistency proof") {
    AdmitSome(g, 0, 5);
    auto restarted = ProvingClient(g, a.sandbox_handle(), "sb-a", *vkey, state);
    REQUIRE(restarted.ok());
    for (int i = 0; i < 100 && ReadAll(state) == kept; ++i) {  // until a newer checkpoint covers the admissions
      REQUIRE(restarted->get()->Fetch().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(ReadAll(state) != kept);
  }
}

TEST_CASE("log: a client that requires proofs refuses a gateway that keeps no log", "[integration][log]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  LogKey key;
  auto vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  auto client = ProvingClient(g, admitted.sandbox_handle(), "sb-1", *vkey, "");
  REQUIRE(client.ok());
  auto refused = client->get()->Fetch();
  CHECK_THAT(std::string(refused.status().message()),
             Catch::StartsWith("log_proof_invalid") && Catch::Contains("log_disabled"));
}

TEST_CASE("log: witnesses cosign each checkpoint, one that is down delays nothing, a quorum holds in the client",
          "[integration][log]") {
  LogKey key;
  auto log_vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(log_vkey.ok());
  // A real policy-log-witness that knows this log.
  TempDir wdir;
  const std::string w1_vkey = PrepareWitness(wdir, *log_vkey);
  std::string out, err;
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "keygen", "--name", "witness.test/down", "--out", wdir / "w2.pem"}, &out, &err) == 0);
  const std::string down_vkey(absl::StripAsciiWhitespace(out));
  auto witness = std::make_unique<Process>(std::vector<std::string>{OSH_WITNESS_BINARY, "--config", wdir / "w1.toml"},
                                           wdir / "w1.log");
  const std::string w1 = LoggedAfter([&] { return ReadAll(wdir / "w1.log"); }, "listening on ");
  // The second witness is down: nothing listens on its port.
  const std::string witnesses = absl::StrCat("http://", w1, " ", w1_vkey, ",http://127.0.0.1:1/prefix ", down_vkey);
  std::vector<std::string> flags = key.Flags();
  flags.insert(flags.end(), {"--log-witnesses", witnesses, "--log-witness-timeout-ms", "500"});
  GatewayFixture g(flags);
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-w", &admitted).ok());
  const std::string log_dir = g.state_dir() + "/log";

  auto log_verifier = osh::tlog::ParseVerifierKey(*log_vkey);
  auto w1_verifier = osh::tlog::ParseVerifierKey(w1_vkey);
  auto down_verifier = osh::tlog::ParseVerifierKey(down_vkey);
  REQUIRE((log_verifier.ok() && w1_verifier.ok() && down_verifier.ok()));
  // The published checkpoint covers every event and carries w1's cosignature (and not the down one's).
  auto cosigned_by_w1 = [&](int64_t size) {
    for (int i = 0; i < 500; ++i) {
      const std::string note = ReadAll(log_dir + "/checkpoint");
      const osh::tlog::NoteVerifier* cosigners[] = {w1_verifier->get()};
      auto opened = osh::tlog::OpenCheckpoint(note, kOrigin, **log_verifier, cosigners, 1);
      if (opened.ok() && opened->checkpoint.size >= size) return note;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL("no checkpoint of " << size << " entries cosigned by w1: " << ReadAll(log_dir + "/checkpoint"));
    return std::string();
  };
  const std::string note = cosigned_by_w1(static_cast<int64_t>(g.AuditEvents().size()));
  const osh::tlog::NoteVerifier* both[] = {w1_verifier->get(), down_verifier->get()};
  CHECK_FALSE(osh::tlog::OpenCheckpoint(note, kOrigin, **log_verifier, both, 2).ok());
  CHECK_THAT(g.log(), Catch::Contains("witness witness.test/down (http://127.0.0.1:1/prefix): ") &&
                          Catch::Contains("published without its cosignature"));

  // A supervisor requiring w1's cosignature applies its projection; one requiring both refuses it.
  osh::sandbox_client::ClientOptions options;
  options.endpoint.unix_socket = g.sandbox_socket();
  options.handle = admitted.sandbox_handle();
  options.context.emplace();
  options.context->set_sandbox_id("sb-w");
  options.context->set_user_subject("alice@example.com");
  options.require_log_proof = true;
  options.log_key = *log_vkey;
  options.witness_keys = {w1_vkey};
  options.witness_quorum = 0;  // witness keys that no quorum requires would guard nothing: refused
  auto unguarded = osh::sandbox_client::SandboxClient::Connect(options);
  REQUIRE_FALSE(unguarded.ok());
  CHECK(absl::IsInvalidArgument(unguarded.status()));
  CHECK_THAT(std::string(unguarded.status().message()), Catch::Contains("witness quorum 0 with 1 witness key(s)"));
  options.witness_quorum = 1;
  for (const int64_t skew : {int64_t{-1}, int64_t{86401}, std::numeric_limits<int64_t>::max()}) {
    options.clock_skew_s = skew;  // review (helper 75): unchecked, the timer and Verify disagreed or overflowed
    auto skewed = osh::sandbox_client::SandboxClient::Connect(options);
    REQUIRE_FALSE(skewed.ok());
    CHECK_THAT(std::string(skewed.status().message()), Catch::Contains("need 0 to 86400 seconds"));
  }
  options.clock_skew_s = 60;
  options.log_state_file = g.dir() / "log-state";
  options.log_proof_wait = std::chrono::milliseconds(5000);
  auto client = osh::sandbox_client::SandboxClient::Connect(options);
  REQUIRE(client.ok());
  auto fetched = (*client)->Fetch();
  INFO(fetched.status());
  CHECK(fetched.ok());
  options.witness_keys = {w1_vkey, down_vkey};
  options.witness_quorum = 2;
  options.log_state_file = g.dir() / "log-state-2";
  options.log_proof_wait = std::chrono::milliseconds(300);
  auto strict = osh::sandbox_client::SandboxClient::Connect(options);
  REQUIRE(strict.ok());
  CHECK_FALSE((*strict)->Fetch().ok());

  // A restarted gateway does not know what w1 holds: w1 answers 409 with its size, and the gateway sends the
  // new checkpoint once more with a consistency proof from there.
  REQUIRE(g.Stop() == 0);
  g.Start();
  AdmitSome(g, 0, 3);
  cosigned_by_w1(static_cast<int64_t>(g.AuditEvents().size()));

  // A witness that comes back is asked again after its back-off and cosigns from where it stands.
  witness->Signal(SIGTERM);
  CHECK(witness->Wait() == 0);
  AdmitSome(g, 3, 2);
  gw::AdmitSandboxResponse quiet;
  REQUIRE(g.Admit("sb-quiet", &quiet).ok());
  WaitForCheckpoint(log_dir, key.pem, static_cast<int64_t>(g.AuditEvents().size()));  // published without w1
  CHECK_THAT(g.log(), Catch::Contains("witness witness.test/w1 (http://" + w1 + "): "));
  // sb-quiet's proof is asked for (and kept by the gateway) while its checkpoint has no cosignature.
  options.handle = quiet.sandbox_handle();
  options.context->set_sandbox_id("sb-quiet");
  options.witness_keys.clear();
  options.witness_quorum = 0;
  options.log_state_file = g.dir() / "log-state-quiet-0";
  options.log_proof_wait = std::chrono::milliseconds(5000);
  auto unwitnessed = osh::sandbox_client::SandboxClient::Connect(options);
  REQUIRE(unwitnessed.ok());
  REQUIRE((*unwitnessed)->Fetch().ok());

  // Back on its address with nothing new appended, w1 is shown the published checkpoint again and its
  // cosignature joins it (review, helper 80: it stayed without until the next entry).
  const int64_t quiet_size = static_cast<int64_t>(g.AuditEvents().size());
  std::string config = ReadAll(wdir / "w1.toml");
  config.replace(config.find("127.0.0.1:0"), std::string("127.0.0.1:0").size(), w1);
  WriteFile(wdir / "w1.toml", config);
  witness = std::make_unique<Process>(std::vector<std::string>{OSH_WITNESS_BINARY, "--config", wdir / "w1.toml"},
                                      wdir / "w1-again.log");
  LoggedAfter([&] { return ReadAll(wdir / "w1-again.log"); }, "listening on ");
  bool cosigned = false;
  for (int i = 0; i < 300 && !cosigned; ++i) {  // the witness's back-off and the re-ask interval: 10 s each
    const osh::tlog::NoteVerifier* cosigners[] = {w1_verifier->get()};
    auto opened = osh::tlog::OpenCheckpoint(ReadAll(log_dir + "/checkpoint"), kOrigin, **log_verifier, cosigners, 1);
    cosigned = opened.ok() && opened->checkpoint.size == quiet_size;
    if (!cosigned) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(cosigned);
  CHECK(static_cast<int64_t>(g.AuditEvents().size()) == quiet_size);
  // The same size, now cosigned: sb-quiet's proof comes with that note, so a supervisor requiring w1 applies
  // it (review 102: the proof kept for the size carried the note it was made with, and was refused until
  // the log grew).
  options.witness_keys = {w1_vkey};
  options.witness_quorum = 1;
  options.log_state_file = g.dir() / "log-state-quiet-1";
  auto witnessed = osh::sandbox_client::SandboxClient::Connect(options);
  REQUIRE(witnessed.ok());
  auto quiet_fetched = (*witnessed)->Fetch();
  INFO(quiet_fetched.status());
  CHECK(quiet_fetched.ok());
}

TEST_CASE("log: a checkpoint shown again keeps the cosignatures it carries and adds the new ones", "[integration][log]") {
  // Review (helper 82): a re-ask republished the checkpoint with that round's cosignatures only, and only
  // when they outnumbered the published ones: w1's cosignature, then w2's after w1 went down, never made
  // a checkpoint carrying both (a client requiring both refused it until the next entry).
  LogKey key;
  auto log_vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(log_vkey.ok());
  TempDir wdir1, wdir2;
  const std::string w1_vkey = PrepareWitness(wdir1, *log_vkey);
  auto w1 = std::make_unique<Process>(std::vector<std::string>{OSH_WITNESS_BINARY, "--config", wdir1 / "w1.toml"},
                                      wdir1 / "w1.log");
  const std::string w1_address = LoggedAfter([&] { return ReadAll(wdir1 / "w1.log"); }, "listening on ");
  // w2: configured on a port of its own, started only after w1 has gone.
  std::string out, err;
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "keygen", "--name", "witness.test/w2", "--out", wdir2 / "w2.pem"}, &out, &err) == 0);
  const std::string w2_vkey(absl::StripAsciiWhitespace(out));
  int port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port = ntohs(address.sin_port);
    ::close(fd);
  }
  const std::string w2_address = absl::StrCat("127.0.0.1:", port);
  WriteFile(wdir2 / "w2.toml", absl::StrCat("name = \"witness.test/w2\"\nkey_file = \"", wdir2 / "w2.pem", "\"\nlisten = \"",
                                           w2_address, "\"\nstate_file = \"", wdir2 / "state.toml", "\"\n[[log]]\norigin = \"",
                                           kOrigin, "\"\nkey = \"", *log_vkey, "\"\n"));
  REQUIRE(RunCommand({OSH_WITNESS_BINARY, "init", "--config", wdir2 / "w2.toml"}, &out, &err) == 0);
  std::vector<std::string> flags = key.Flags();
  flags.insert(flags.end(), {"--log-witnesses", absl::StrCat("http://", w1_address, " ", w1_vkey, ",http://", w2_address,
                                                             " ", w2_vkey),
                             "--log-witness-timeout-ms", "500"});
  GatewayFixture g(flags);
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  AdmitSome(g, 0, 2);
  const std::string log_dir = g.state_dir() + "/log";
  auto log_verifier = osh::tlog::ParseVerifierKey(*log_vkey);
  auto w1_verifier = osh::tlog::ParseVerifierKey(w1_vkey);
  auto w2_verifier = osh::tlog::ParseVerifierKey(w2_vkey);
  REQUIRE((log_verifier.ok() && w1_verifier.ok() && w2_verifier.ok()));
  // Cosigned by `cosigners` (all of them) at the size of the log now, within `seconds`.
  auto cosigned = [&](std::vector<const osh::tlog::NoteVerifier*> cosigners, int64_t size, int seconds) {
    for (int i = 0; i < seconds * 10; ++i) {
      auto opened = osh::tlog::OpenCheckpoint(ReadAll(log_dir + "/checkpoint"), kOrigin, **log_verifier, cosigners,
                                              cosigners.size());
      if (opened.ok() && opened->checkpoint.size == size) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  const int64_t quiet_size = static_cast<int64_t>(g.AuditEvents().size());
  REQUIRE(cosigned({w1_verifier->get()}, quiet_size, 20));
  // w1 goes; w2 comes; nothing is appended. The re-ask (every 10 s) gets w2's cosignature, and the
  // checkpoint keeps w1's.
  w1->Signal(SIGTERM);
  CHECK(w1->Wait() == 0);
  auto w2 = std::make_unique<Process>(std::vector<std::string>{OSH_WITNESS_BINARY, "--config", wdir2 / "w2.toml"},
                                      wdir2 / "w2.log");
  LoggedAfter([&] { return ReadAll(wdir2 / "w2.log"); }, "listening on ");
  CHECK(cosigned({w1_verifier->get(), w2_verifier->get()}, quiet_size, 45));
  CHECK(static_cast<int64_t>(g.AuditEvents().size()) == quiet_size);
}

TEST_CASE("log: kill -9 while the sequencer waits on a witness: the witness's checkpoint is extended, nothing is lost",
          "[integration][log]") {
  // The gateway signs a checkpoint, records it (checkpoint.signed) and sends it to a witness that has stopped
  // (SIGSTOP: the kernel takes the connection and the request, nobody answers). Killed while it waits, the
  // gateway never publishes that checkpoint; the witness, continued, cosigns it from the request already in
  // its socket and holds it. The restarted gateway must extend it (a tree that forked from it would be
  // refused by the witness for ever), publish every acknowledged event, and be cosigned again.
  LogKey key;
  auto log_vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(log_vkey.ok());
  TempDir wdir;
  const std::string w1_vkey = PrepareWitness(wdir, *log_vkey, "request_timeout_s = 60\n");
  Process witness({OSH_WITNESS_BINARY, "--config", wdir / "w1.toml"}, wdir / "w1.log");
  const std::string w1 = LoggedAfter([&] { return ReadAll(wdir / "w1.log"); }, "listening on ");
  std::vector<std::string> flags = key.Flags();
  flags.insert(flags.end(), {"--log-witnesses", absl::StrCat("http://", w1, " ", w1_vkey), "--log-witness-timeout-ms", "30000"});
  GatewayFixture g(flags);
  const std::string log_dir = g.state_dir() + "/log";
  auto log_verifier = osh::tlog::ParseVerifierKey(*log_vkey);
  auto w1_verifier = osh::tlog::ParseVerifierKey(w1_vkey);
  REQUIRE((log_verifier.ok() && w1_verifier.ok()));
  auto cosigned = [&](int64_t size) {
    for (int i = 0; i < 1000; ++i) {
      const osh::tlog::NoteVerifier* cosigners[] = {w1_verifier->get()};
      auto opened = osh::tlog::OpenCheckpoint(ReadAll(log_dir + "/checkpoint"), kOrigin, **log_verifier, cosigners, 1);
      if (opened.ok() && opened->checkpoint.size >= size) return opened->checkpoint;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL("no checkpoint of " << size << " entries cosigned by w1: " << ReadAll(log_dir + "/checkpoint"));
    return osh::tlog::Checkpoint{};
  };
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  AdmitSome(g, 0, 2);
  const osh::tlog::Checkpoint before = cosigned(static_cast<int64_t>(g.AuditEvents().size()));

  witness.Signal(SIGSTOP);
  AdmitSome(g, 2, 3);
  const int64_t acknowledged = static_cast<int64_t>(g.AuditEvents().size());
  // Wait until the gateway has signed a checkpoint past the witness's (covering some of them: it may have
  // signed after the first, and then waits on the witness before it signs again) and sent it.
  int64_t signed_size = 0;
  for (int i = 0; i < 500 && signed_size <= before.size; ++i) {
    const std::vector<std::string> lines = absl::StrSplit(ReadAll(log_dir + "/checkpoint.signed"), '\n');
    if (lines.size() > 1 && !absl::SimpleAtoi(lines[1], &signed_size)) signed_size = 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(signed_size > before.size);
  // checkpoint.signed is written before the request goes out: wait until the request sits in the stopped
  // witness's socket (/proc/net/tcp: an established connection on its port with bytes to read).
  const int witness_port = std::stoi(w1.substr(w1.rfind(':') + 1));
  auto request_waiting = [&] {
    const std::vector<std::string> lines = absl::StrSplit(ReadAll("/proc/net/tcp"), '\n', absl::SkipEmpty());
    for (size_t i = 1; i < lines.size(); ++i) {
      const std::vector<std::string> fields = absl::StrSplit(lines[i], ' ', absl::SkipEmpty());
      if (fields.size() < 5 || fields[3] != "01") continue;  // ESTABLISHED
      const std::string& local = fields[1];
      const std::string& queues = fields[4];  // tx_queue:rx_queue, hex
      unsigned port = 0, rx = 0;
      if (std::sscanf(local.c_str() + local.find(':') + 1, "%x", &port) != 1) continue;
      if (std::sscanf(queues.c_str() + queues.find(':') + 1, "%x", &rx) != 1) continue;
      if (static_cast<int>(port) == witness_port && rx > 0) return true;
    }
    return false;
  };
  bool waiting = false;
  for (int i = 0; i < 500 && !(waiting = request_waiting()); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(waiting);
  CHECK(PublishedCheckpoint(log_dir, key.pem).size == before.size);  // not published: waiting on the witness
  g.Kill9();
  witness.Signal(SIGCONT);
  // The witness cosigns the checkpoint the dead gateway sent (it was whole in its socket) and keeps it.
  LoggedAfter([&] { return ReadAll(wdir / "w1.log"); }, absl::StrCat("cosigned ", kOrigin, " size ", signed_size, " root"));

  g.Start();
  AdmitSome(g, 5, 2);
  const auto events = g.AuditEvents();
  REQUIRE(static_cast<int64_t>(events.size()) >= acknowledged + 2);
  const osh::tlog::Checkpoint after = cosigned(static_cast<int64_t>(events.size()));
  CheckEveryEventProves(log_dir, after, events);
  osh::tlog::DirTileFetcher fetcher(log_dir);
  osh::tlog::TileHashReader tiles(after.size, after.root, fetcher);
  auto consistency = osh::tlog::ProveTree(after.size, before.size, tiles);
  REQUIRE(consistency.ok());
  CHECK(osh::tlog::CheckTree(*consistency, after.size, after.root, before.size, before.root).ok());
  CHECK_THAT(ReadAll(wdir / "w1.log"), !Catch::Contains("conflict") && !Catch::Contains("refused"));
  witness.Signal(SIGTERM);
  CHECK(witness.Wait() == 0);
}

TEST_CASE("log: a sandbox refuses a proof whose entry recorded a refusal of that projection, not its admission",
          "[integration][log]") {
  // The honest log records projections the gateway refused (outside the ceiling, a failed check), naming
  // the sandbox, digest and version. A gateway that then serves that very projection with the refusal's
  // proof must not be believed: only an admission, a refresh or a re-projection that succeeded put a
  // projection in force.
  auto key = osh::tlog::Ed25519PrivateKey::Generate();
  REQUIRE(key.ok());
  auto signer = osh::tlog::Ed25519NoteSigner::Create("log.test/policy-gateway", *key);
  REQUIRE(signer.ok());
  drv::Projection projection;
  projection.set_policy_digest(std::string(64, 'a'));
  projection.set_policy_version(7);
  auto proof_for = [&](osh::trust::audit::Type type, osh::trust::audit::Outcome outcome) {
    osh::trust::AuditEvent event;
    event.seq = 1;
    event.time_unix_ms = 1000;
    event.type = type;
    event.outcome = outcome;
    event.sandbox_id = "sb-1";
    event.policy_digest = projection.policy_digest();
    event.policy_version = projection.policy_version();
    gw::LogProof proof;
    *proof.mutable_entry() = osh::trust::ToProto(event);
    proof.set_index(0);
    // A tree of that one entry: its root is the entry's leaf hash, the inclusion proof empty.
    osh::tlog::Checkpoint checkpoint{"log.test/policy-gateway", 1,
                                     osh::tlog::RecordHash(osh::trust::CanonicalAuditBytes(osh::trust::FromProto(proof.entry()))),
                                     {}};
    const osh::tlog::NoteSigner* signers[] = {signer->get()};
    auto note = osh::tlog::SignCheckpoint(checkpoint, signers);
    REQUIRE(note.ok());
    proof.set_checkpoint(*note);
    return proof;
  };
  auto check = [&](const gw::LogProof& proof) {
    osh::sandbox_client::LogProofOptions options;
    options.log_key = (*signer)->VerifierKey();
    auto verifier = osh::sandbox_client::LogProofVerifier::Create(options);
    REQUIRE(verifier.ok());
    return (*verifier)->Check(proof, projection, "sb-1");
  };
  using osh::trust::audit::Outcome;
  using osh::trust::audit::Type;
  CHECK(check(proof_for(Type::kAdmission, Outcome::kOk)).ok());
  CHECK(check(proof_for(Type::kRefresh, Outcome::kOk)).ok());
  CHECK(check(proof_for(Type::kReprojection, Outcome::kOk)).ok());
  for (const auto& [type, outcome] : {std::pair{Type::kRefusal, Outcome::kRefused},
                                      std::pair{Type::kRefresh, Outcome::kKeptLastGood},
                                      std::pair{Type::kInterception, Outcome::kOk},
                                      std::pair{Type::kReprojection, Outcome::kPartial}}) {
    const absl::Status refused = check(proof_for(type, outcome));
    INFO(refused);
    CHECK_THAT(std::string(refused.message()),
               Catch::StartsWith("log_proof_invalid") && Catch::Contains("not one that put a projection in force"));
  }
}

TEST_CASE("log: a witness whose key is the log's own is refused at start, and so is one in a client or policyctl",
          "[integration][log]") {
  LogKey key;
  auto log_vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(log_vkey.ok());
  // The log's own key as a cosignature/v1 key: whoever holds the log key would cosign alone.
  auto private_key = osh::tlog::Ed25519PrivateKey::FromPem(key.pem);
  REQUIRE(private_key.ok());
  auto self = osh::tlog::CosignatureV1Signer::Create("witness.test/self", *private_key);
  REQUIRE(self.ok());
  const std::string self_vkey = (*self)->VerifierKey();
  TempDir dir;
  std::vector<std::string> argv = {OSH_GATEWAY_BINARY, "--state-dir", dir / "var"};
  for (const std::string& flag : key.Flags()) argv.push_back(flag);
  argv.insert(argv.end(), {"--log-witnesses", "http://127.0.0.1:1/prefix " + self_vkey});
  std::string out, err;
  CHECK(RunCommand(argv, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("log_witnesses") &&
                      Catch::Contains("witness key 'witness.test/self' is the public key of the log"));

  osh::sandbox_client::LogProofOptions options;
  options.log_key = *log_vkey;
  options.witness_keys = {self_vkey};
  options.witness_quorum = 1;
  auto client = osh::sandbox_client::LogProofVerifier::Create(options);
  REQUIRE_FALSE(client.ok());
  CHECK_THAT(std::string(client.status().message()), Catch::Contains("is the public key of the log"));

  CHECK(RunCommand({OSH_POLICYCTL_BINARY, "log", "checkpoint", "--log", dir / "var/log", "--key", *log_vkey,
                    "--witness-key", self_vkey}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("is the public key of the log"));
}

namespace {

// The sandbox of the fake gateways below.
drv::RuntimeContext FakeContext(const std::string& sandbox_id) {
  drv::RuntimeContext context;
  context.set_sandbox_id(sandbox_id);
  context.set_user_subject("alice@example.com");
  return context;
}

// A fake gateway's SandboxPolicy service, served by the test on a Unix socket.
std::unique_ptr<grpc::Server> ServeFake(grpc::Service* service, const std::string& socket) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  return server;
}

// What every fake-gateway test sets up: a folder, a log key and its verifier key, the sandbox; `Serve`
// then serves a fake SandboxPolicy service there and `options` is a client of it that requires log proofs
// under that key. The server `Serve` returns must be destroyed before the service it serves.
struct FakeGatewaySetup {
  explicit FakeGatewaySetup(const std::string& sandbox_id) : context(FakeContext(sandbox_id)) {
    auto verifier = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
    REQUIRE(verifier.ok());
    vkey = *verifier;
  }
  std::unique_ptr<grpc::Server> Serve(grpc::Service* service) {
    const std::string socket = dir / "gateway.sock";
    std::unique_ptr<grpc::Server> server = ServeFake(service, socket);
    options.endpoint.unix_socket = socket;
    options.handle = "handle";
    options.context = context;
    options.require_log_proof = true;
    options.log_key = vkey;
    return server;
  }
  TempDir dir;
  LogKey key;
  std::string vkey;
  const drv::RuntimeContext context;
  osh::sandbox_client::ClientOptions options;
};

// A fake service's answer to a unary call: `status`, the response as the handler filled it.
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const grpc::Status& status = grpc::Status::OK) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// A hostile gateway: its first answer is an error, its second a projection without a proof, each with
// words meant for the supervisor's terminal (an escape sequence, a forged line, invalid UTF-8).
constexpr char kHostileWords[] = "\x1b]0;pwned\x07\nFORGED: policy applied \xff";
// A string field must be valid UTF-8 (protobuf refuses to send or parse one that is not).
constexpr char kHostileStatus[] = "\x1b]0;pwned\x07\nFORGED: policy applied \u00e9";

class HostileGateway final : public gw::SandboxPolicy::CallbackService {
 public:
  explicit HostileGateway(const drv::RuntimeContext& context) : context_(context) {}
  grpc::ServerUnaryReactor* GetServedProjection(grpc::CallbackServerContext* ctx, const gw::GetServedProjectionRequest*,
                                                gw::ServedProjection* out) override {
    if (calls_++ == 0) return Reply(ctx, grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, kHostileWords));
    drv::Projection* p = out->mutable_projection();
    p->set_surface_id("openshell.sandbox.v1");
    p->set_body(osh::policy::SerializeDeterministic(osh::policy::RestrictiveDefaultPolicy()));
    p->set_policy_digest(osh::policy::Sha256Hex(p->body()));
    p->set_policy_version(1);
    p->set_context_digest(osh::trust::ContextDigest(context_));
    p->set_issued_at_unix(std::time(nullptr));
    out->set_log_status(kHostileStatus);
    return Reply(ctx);
  }

 private:
  const drv::RuntimeContext context_;
  std::atomic<int> calls_{0};
};

}  // namespace

TEST_CASE("log: a hostile gateway's words reach the supervisor bounded and escaped, never as lines of their own",
          "[integration][log]") {
  FakeGatewaySetup t("sb-h");
  HostileGateway hostile(t.context);
  std::unique_ptr<grpc::Server> server = t.Serve(&hostile);
  auto client = osh::sandbox_client::SandboxClient::Connect(t.options);
  REQUIRE(client.ok());
  for (int call = 0; call < 2; ++call) {
    auto refused = (*client)->Fetch();
    REQUIRE_FALSE(refused.ok());
    const std::string message(refused.status().message());
    INFO(message);
    CHECK(message.find_first_of("\x1b\x07\n") == std::string::npos);
    CHECK(message.find('\xff') == std::string::npos);
    if (call == 0) {  // invalid UTF-8: every byte past ASCII escaped
      CHECK_THAT(message, Catch::Contains("\\033]0;pwned\\007\\nFORGED: policy applied \\377"));
    } else {  // valid UTF-8 is kept, control characters escaped
      CHECK_THAT(message, Catch::StartsWith("log_proof_invalid: no proof that the gateway logged") &&
                              Catch::EndsWith("\\033]0;pwned\\007\\nFORGED: policy applied \u00e9"));
    }
  }
  server->Shutdown();
}

namespace {

// A projection of the restrictive default policy for `context`, unsigned (verification "none").
drv::Projection FakeProjection(const drv::RuntimeContext& context, uint64_t version, int64_t expires_at = 0) {
  drv::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body(osh::policy::SerializeDeterministic(osh::policy::RestrictiveDefaultPolicy()));
  p.set_policy_digest(osh::policy::Sha256Hex(p.body()));
  p.set_policy_version(version);
  p.set_context_digest(osh::trust::ContextDigest(context));
  p.set_issued_at_unix(std::time(nullptr));
  p.set_expires_at_unix(expires_at);
  return p;
}

// The proof of `projection`'s admission for `context` in a log of that one entry, its checkpoint signed
// with `log_pem`. Two proofs of one projection at two `time_unix_ms` are two trees of size 1: a fork.
gw::LogProof OneEntryProof(const drv::RuntimeContext& context, const drv::Projection& projection,
                           const std::string& log_pem, int64_t time_unix_ms) {
  osh::trust::AuditEvent entry;
  entry.seq = 1;
  entry.time_unix_ms = time_unix_ms;
  entry.type = osh::trust::audit::Type::kAdmission;
  entry.outcome = osh::trust::audit::Outcome::kOk;
  entry.sandbox_id = context.sandbox_id();
  entry.surface_id = projection.surface_id();
  entry.policy_digest = projection.policy_digest();
  entry.policy_version = projection.policy_version();
  osh::tlog::Checkpoint checkpoint{kOrigin, 1, osh::tlog::RecordHash(osh::trust::CanonicalAuditBytes(entry)), {}};
  auto signer = osh::tlog::Ed25519NoteSigner::FromPem(kOrigin, log_pem);
  REQUIRE(signer.ok());
  const osh::tlog::NoteSigner* signers[] = {signer->get()};
  auto note = osh::tlog::SignCheckpoint(checkpoint, signers);
  REQUIRE(note.ok());
  gw::LogProof proof;
  *proof.mutable_entry() = osh::trust::ToProto(entry);
  proof.set_index(0);
  proof.set_checkpoint(*note);
  return proof;
}

// A watch stream that writes `messages` in order and then stays open until the client goes.
class ScriptedWatch final : public grpc::ServerWriteReactor<gw::ServedProjection> {
 public:
  explicit ScriptedWatch(const std::vector<gw::ServedProjection>* messages) : messages_(messages) { Next(); }
  void OnWriteDone(bool ok) override {
    if (ok) Next();
    else End();
  }
  void OnCancel() override { End(); }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (next_ < messages_->size()) StartWrite(&(*messages_)[next_++]);  // then held open
  }
  void End() {
    absl::MutexLock lock(&mu_);
    if (!finished_) Finish(grpc::Status::CANCELLED);
    finished_ = true;
  }
  const std::vector<gw::ServedProjection>* messages_;
  size_t next_ = 0;
  absl::Mutex mu_;
  bool finished_ = false;
};

// A gateway whose watch brings a projection that expires in `expires_in_s` with a valid proof (a log of
// one entry, signed with the test's log key), then a newer projection with a proof that does not check;
// the GetLogProof the client then asks is held until `release`.
class StallingGateway final : public gw::SandboxPolicy::CallbackService {
 public:
  StallingGateway(const drv::RuntimeContext& context, const std::string& log_pem, int64_t expires_in_s) {
    const drv::Projection first = FakeProjection(context, 1, std::time(nullptr) + expires_in_s);
    const gw::LogProof proof = OneEntryProof(context, first, log_pem, std::time(nullptr) * 1000);
    messages_.resize(2);
    *messages_[0].mutable_projection() = first;
    *messages_[0].mutable_proof() = proof;
    *messages_[1].mutable_projection() = FakeProjection(context, 2);
    *messages_[1].mutable_proof() = proof;  // names version 1: does not prove version 2
  }
  std::shared_ptr<std::atomic<bool>> release = std::make_shared<std::atomic<bool>>(false);
  std::atomic<int> log_proofs_asked{0};

  grpc::ServerWriteReactor<gw::ServedProjection>* WatchServedProjection(
      grpc::CallbackServerContext*, const gw::GetServedProjectionRequest*) override {
    return new ScriptedWatch(&messages_);
  }
  grpc::ServerUnaryReactor* GetLogProof(grpc::CallbackServerContext* ctx, const gw::GetLogProofRequest*,
                                        gw::LogProof*) override {
    ++log_proofs_asked;
    auto* reactor = ctx->DefaultReactor();
    std::thread([reactor, release = release] {
      for (int i = 0; i < 6000 && !release->load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "log_pending: held by the test"));
    }).detach();
    return reactor;
  }

 private:
  std::vector<gw::ServedProjection> messages_;
};

}  // namespace

TEST_CASE("log: a projection waiting for its proof does not hold up the expiry of the policy in force",
          "[integration][log]") {
  FakeGatewaySetup t("sb-x");
  StallingGateway stalling(t.context, t.key.pem, 3);
  std::unique_ptr<grpc::Server> server = t.Serve(&stalling);
  t.options.clock_skew_s = 0;
  t.options.report = false;
  t.options.log_proof_wait = std::chrono::milliseconds(60000);
  auto client = osh::sandbox_client::SandboxClient::Connect(t.options);
  REQUIRE(client.ok());
  absl::Mutex mu;
  std::vector<osh::sandbox_client::WatchEvent::Kind> events;
  std::atomic<int> withdrawn{0};
  std::thread watching([&] {
    (*client)
        ->Watch([](const osh::sandbox_client::VerifiedPolicy&) { return absl::OkStatus(); },
                [&](const osh::sandbox_client::WatchEvent& e) {
                  absl::MutexLock lock(&mu);
                  events.push_back(e.kind);
                },
                [&](const osh::sandbox_client::VerifiedPolicy&) {
                  ++withdrawn;
                  return absl::OkStatus();
                })
        .IgnoreError();
  });
  // Version 1 applied; version 2's proof does not check, so the client asks GetLogProof, which is held.
  REQUIRE(Eventually([&] { return stalling.log_proofs_asked.load() > 0; }));
  CHECK((*client)->current() != nullptr);
  // Version 1 expires (3 s) while that call is held: withdrawn on time, not once the gateway answers
  // (before the fix the expiry waited for the apply lock, held across GetLogProof, up to log_proof_wait).
  CHECK(Eventually([&] { return withdrawn.load() == 1; }, std::chrono::seconds(10)));
  CHECK(Eventually([&] { return (*client)->current() == nullptr; }));
  {
    absl::MutexLock lock(&mu);
    CHECK(std::count(events.begin(), events.end(), osh::sandbox_client::WatchEvent::kExpired) == 1);
  }
  stalling.release->store(true);
  (*client)->Stop();
  watching.join();
  server->Shutdown();
}

namespace {

// A gateway that serves one projection with an honest proof, then (`fork`) with the proof of another tree
// of the same size, and answers GetLogProof honestly.
class ForkingGateway final : public gw::SandboxPolicy::CallbackService {
 public:
  ForkingGateway(const drv::RuntimeContext& context, const std::string& log_pem, bool fork = true)
      : fork_(fork),
        projection_(FakeProjection(context, 1)),
        honest_(OneEntryProof(context, projection_, log_pem, 1'700'000'000'000)),
        forked_(OneEntryProof(context, projection_, log_pem, 1'700'000'000'001)) {}
  std::atomic<int> log_proofs_asked{0};

  grpc::ServerUnaryReactor* GetServedProjection(grpc::CallbackServerContext* ctx, const gw::GetServedProjectionRequest*,
                                                gw::ServedProjection* out) override {
    *out->mutable_projection() = projection_;
    *out->mutable_proof() = served_++ == 0 || !fork_ ? honest_ : forked_;
    return Reply(ctx);
  }
  grpc::ServerUnaryReactor* GetLogProof(grpc::CallbackServerContext* ctx, const gw::GetLogProofRequest*,
                                        gw::LogProof* out) override {
    ++log_proofs_asked;
    *out = honest_;
    return Reply(ctx);
  }

 private:
  const bool fork_;
  const drv::Projection projection_;
  const gw::LogProof honest_, forked_;
  std::atomic<int> served_{0};
};

}  // namespace

TEST_CASE("log: a fork shown beside a projection is refused at once, whatever proof the gateway gives next",
          "[integration][log]") {
  FakeGatewaySetup t("sb-f");
  ForkingGateway forking(t.context, t.key.pem);
  std::unique_ptr<grpc::Server> server = t.Serve(&forking);
  t.options.log_state_file = t.dir / "log-state";
  auto client = osh::sandbox_client::SandboxClient::Connect(t.options);
  REQUIRE(client.ok());
  auto first = (*client)->Fetch();
  INFO(first.status());
  REQUIRE(first.ok());
  // The same projection under another tree of size 1. Before the fix the client asked GetLogProof
  // again, got the honest proof, and applied: the fork went unreported.
  auto second = (*client)->Fetch();
  REQUIRE_FALSE(second.ok());
  CHECK_THAT(std::string(second.status().message()),
             Catch::StartsWith("log_forked") && Catch::Contains("two trees of one size"));
  CHECK(forking.log_proofs_asked.load() == 0);
  CHECK_THAT(ReadAll(t.dir / "log-state.fork"), Catch::StartsWith("openshell.sandbox_client.log-fork.v1\nknown size 1\n"));
  server->Shutdown();
}

TEST_CASE("log: a log state file is read strictly: a size of 0, a sign, spaces or past 2^62 is corrupt, never 'nothing seen'",
          "[integration][log]") {
  TempDir dir;
  LogKey key;
  auto vkey = osh::tlog::VerifierKeyFromPem(kOrigin, key.pem);
  REQUIRE(vkey.ok());
  const std::string root = osh::tlog::HashToBase64(osh::tlog::RecordHash("a tree"));
  osh::sandbox_client::LogProofOptions options;
  options.log_key = *vkey;
  options.state_file = dir / "log-state";
  for (const std::string size : {"0", "+5", " 5", "5 ", "0x5", "4611686018427387905", ""}) {
    WriteFile(options.state_file, absl::StrCat("openshell.sandbox_client.log.v1\nsize ", size, "\nroot ", root, "\n"), 0600);
    auto verifier = osh::sandbox_client::LogProofVerifier::Create(options);
    INFO("size '" << size << "'");
    REQUIRE_FALSE(verifier.ok());
    CHECK_THAT(std::string(verifier.status().message()), Catch::Contains("corrupt: bad size line"));
  }
  WriteFile(options.state_file, absl::StrCat("openshell.sandbox_client.log.v1\nsize 4611686018427387904\nroot ", root, "\n"), 0600);
  auto largest = osh::sandbox_client::LogProofVerifier::Create(options);
  REQUIRE(largest.ok());
  CHECK((*largest)->known_size() == 4611686018427387904u);
}

TEST_CASE("log: a checkpoint the client could not write to its state file proves nothing until it is written",
          "[integration][log]") {
  FakeGatewaySetup t("sb-u");
  ForkingGateway honest(t.context, t.key.pem, /*fork=*/false);
  std::unique_ptr<grpc::Server> server = t.Serve(&honest);
  const std::string state = t.dir / "log-state";
  t.options.log_state_file = state;
  auto client = osh::sandbox_client::SandboxClient::Connect(t.options);
  REQUIRE(client.ok());
  // The state file cannot be replaced (a folder stands in its place: a rename over it fails, even as root).
  REQUIRE(std::filesystem::create_directory(state));
  auto refused = (*client)->Fetch();
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains("log state file"));
  // Before the fix the proof asked next, of the same checkpoint, passed without writing it.
  CHECK(honest.log_proofs_asked.load() > 0);
  // Once the file can be written, the same checkpoint is written and proves the projection.
  REQUIRE(std::filesystem::remove(state));
  auto fetched = (*client)->Fetch();
  INFO(fetched.status());
  CHECK(fetched.ok());
  CHECK_THAT(ReadAll(state), Catch::StartsWith("openshell.sandbox_client.log.v1\nsize 1\n"));
  server->Shutdown();
}

namespace {

// A gateway whose watch brings one projection that expires in `expires_in_s`, with a proof that does not
// check (it names another sandbox); the GetLogProof the client then asks is answered with the right proof
// only `answer_after_s` later — after the projection expired.
class LateProofGateway final : public gw::SandboxPolicy::CallbackService {
 public:
  LateProofGateway(const drv::RuntimeContext& context, const std::string& log_pem, int64_t expires_in_s,
                   int64_t answer_after_s)
      : answer_after_s_(answer_after_s) {
    const drv::Projection projection = FakeProjection(context, 1, std::time(nullptr) + expires_in_s);
    proof_ = OneEntryProof(context, projection, log_pem, std::time(nullptr) * 1000);
    messages_.resize(1);
    *messages_[0].mutable_projection() = projection;
    *messages_[0].mutable_proof() = OneEntryProof(FakeContext("another"), projection, log_pem, 1);
  }
  std::atomic<int> log_proofs_answered{0};

  grpc::ServerWriteReactor<gw::ServedProjection>* WatchServedProjection(
      grpc::CallbackServerContext*, const gw::GetServedProjectionRequest*) override {
    return new ScriptedWatch(&messages_);
  }
  grpc::ServerUnaryReactor* GetLogProof(grpc::CallbackServerContext* ctx, const gw::GetLogProofRequest*,
                                        gw::LogProof* out) override {
    auto* reactor = ctx->DefaultReactor();
    *out = proof_;
    std::thread([this, reactor] {
      std::this_thread::sleep_for(std::chrono::seconds(answer_after_s_));
      ++log_proofs_answered;
      reactor->Finish(grpc::Status::OK);
    }).detach();
    return reactor;
  }

 private:
  const int64_t answer_after_s_;
  gw::LogProof proof_;
  std::vector<gw::ServedProjection> messages_;
};

}  // namespace

TEST_CASE("log: a projection whose proof came after it expired is refused, not applied",
          "[integration][log]") {
  FakeGatewaySetup t("sb-l");
  LateProofGateway late(t.context, t.key.pem, /*expires_in_s=*/2, /*answer_after_s=*/4);
  std::unique_ptr<grpc::Server> server = t.Serve(&late);
  t.options.clock_skew_s = 0;
  t.options.report = false;
  t.options.log_proof_wait = std::chrono::milliseconds(20000);
  auto client = osh::sandbox_client::SandboxClient::Connect(t.options);
  REQUIRE(client.ok());
  absl::Mutex mu;
  std::vector<osh::sandbox_client::WatchEvent> events;
  std::atomic<int> applied{0};
  std::thread watching([&] {
    (*client)
        ->Watch(
            [&](const osh::sandbox_client::VerifiedPolicy&) {
              ++applied;
              return absl::OkStatus();
            },
            [&](const osh::sandbox_client::WatchEvent& e) {
              absl::MutexLock lock(&mu);
              events.push_back(e);
            })
        .IgnoreError();
  });
  auto rejected = [&] {
    absl::MutexLock lock(&mu);
    return std::any_of(events.begin(), events.end(), [](const osh::sandbox_client::WatchEvent& e) {
      return e.kind == osh::sandbox_client::WatchEvent::kRejected;
    });
  };
  REQUIRE(Eventually(rejected, std::chrono::seconds(20)));
  CHECK(late.log_proofs_answered.load() == 1);  // the proof came, and checked: the expiry refused it
  CHECK(applied.load() == 0);
  CHECK((*client)->current() == nullptr);
  {
    absl::MutexLock lock(&mu);
    for (const auto& e : events) {
      INFO(e.detail);
      CHECK(e.kind != osh::sandbox_client::WatchEvent::kApplied);
      if (e.kind == osh::sandbox_client::WatchEvent::kRejected) CHECK_THAT(e.detail, Catch::StartsWith("expired"));
    }
  }
  (*client)->Stop();
  watching.join();
  server->Shutdown();
}

TEST_CASE("log: a projection moved to a higher version under the same digest is proven by its own entry",
          "[integration][log]") {
  // Review finding (helper 80): the proof was matched by digest only, so a sandbox moved from (D, v1) to
  // (D, v2) — the same body set for the sandbox's own scope, a change that moves the version only (setting
  // the same body again on its scope appends nothing) — was answered with the v1
  // entry until v2's was integrated; the client (which checks the version) refused it as invalid and no
  // proof followed on the stream.
  LogKey key;
  GatewayFixture g(key.Flags(1500));
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-v", &admitted).ok());
  auto ask = [&](gw::LogProof* out) {
    gw::GetLogProofRequest request;
    return g.sandbox().GetLogProof(GatewayFixture::Context(admitted.sandbox_handle()).get(), request, out);
  };
  gw::LogProof proof;
  REQUIRE(Eventually([&] { return ask(&proof).ok(); }));
  CHECK(proof.entry().policy_version() == admitted.policy_version());

  REQUIRE(g.SetPolicy("sandbox:sb-v", osh::policy::RestrictiveDefaultPolicy()).ok());  // the same body, a newer scope
  drv::Projection served;
  REQUIRE(Eventually([&] {
    return g.Fetch(admitted.sandbox_handle(), &served).ok() && served.policy_version() > admitted.policy_version();
  }));
  REQUIRE(served.policy_digest() == admitted.policy_digest());
  // Within the integration interval: pending, or (integrated already) the new version's own entry.
  const grpc::Status now = ask(&proof);
  INFO(now.error_message());
  if (now.ok()) {
    CHECK(proof.entry().policy_version() == served.policy_version());
  } else {
    CHECK(now.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK(absl::StrContains(now.error_message(), "log_pending"));
  }
  REQUIRE(Eventually([&] { return ask(&proof).ok(); }));
  CHECK(proof.entry().policy_version() == served.policy_version());
  CHECK(proof.entry().policy_digest() == served.policy_digest());
}
