// The verifiable log's library (tlog/, issue 27), each figure beside a baseline measured in the same run:
//   integration   StoredHashes for pre-made entries, appended in batches, and for each batch the tiles and
//                 entry bundles it publishes built (and, with --dir, written as files, no fsync) plus a
//                 checkpoint signed — against raw SHA-256 of the same entries (target >= 20,000 entries/s)
//   proofs        inclusion proofs for random entries from the in-memory hash store (target >= 200,000/s)
//   client        inclusion proof + checkpoint signature + 1 cosignature verified — against raw Ed25519
//                 verify of the checkpoint text (target >= 0.45x)
//   storage       tiles + bundles on disk after the run, against the entries' bytes (target <= 1.2x + 64 B
//                 per entry)
// Single thread, median of rounds.
#include <openssl/evp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/bench_support.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "tlog/merkle.h"
#include "tlog/note.h"
#include "tlog/tiles.h"

namespace {

using namespace osh::tlog;

// Calls f() for `seconds`, returns calls per second.
template <typename F>
double RatePerSecond(double seconds, F f) {
  const auto start = std::chrono::steady_clock::now();
  uint64_t calls = 0;
  double elapsed = 0;
  do {
    for (int i = 0; i < 64; ++i) f();
    calls += 64;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < seconds);
  return static_cast<double>(calls) / elapsed;
}

class BenchEntries final : public EntryReader {
 public:
  explicit BenchEntries(const std::vector<std::string>& entries) : entries_(entries) {}
  absl::StatusOr<std::vector<std::string>> ReadEntries(int64_t begin, int64_t end) const override {
    return std::vector<std::string>(entries_.begin() + begin, entries_.begin() + end);
  }

 private:
  const std::vector<std::string>& entries_;
};

struct Integration {
  bool ok = true;
  int64_t tile_bytes = 0;  // what was built (hash tiles + bundles), superseded partials included
};

// Integrates `entries` in batches into `hashes`: stored hashes, then the batch's tiles and bundles built
// (written under `dir` when not empty), then a checkpoint signed.
Integration Integrate(const std::vector<std::string>& entries, int batch, const NoteSigner& signer,
                      const std::string& dir, std::vector<Hash>& hashes) {
  Integration result;
  hashes.clear();
  const VectorHashReader reader(hashes);
  const BenchEntries entry_reader(entries);
  TileWriteOptions options;
  options.sync = false;
  const NoteSigner* signers[] = {&signer};
  int64_t published = 0;
  while (published < static_cast<int64_t>(entries.size())) {
    const int64_t size = std::min<int64_t>(published + batch, static_cast<int64_t>(entries.size()));
    for (int64_t n = published; n < size; ++n) {
      absl::StatusOr<std::vector<Hash>> added = StoredHashes(n, entries[n], reader);
      if (!added.ok()) return {false, 0};
      hashes.insert(hashes.end(), added->begin(), added->end());
    }
    if (!dir.empty()) {
      result.ok &= WriteTiles(dir, published, size, reader, entry_reader, options).ok();
    } else {
      for (const Tile& tile : NewTiles(published, size)) {
        absl::StatusOr<std::string> data = ReadTileData(tile, reader);
        result.ok &= data.ok();
        result.tile_bytes += data.ok() ? static_cast<int64_t>(data->size()) : 0;
        if (tile.level == 0) {
          absl::StatusOr<std::vector<std::string>> batch_entries = entry_reader.ReadEntries(tile.n * kTileWidth, tile.n * kTileWidth + tile.width);
          absl::StatusOr<std::string> bundle = EncodeEntryBundle(*batch_entries);
          result.ok &= bundle.ok();
          result.tile_bytes += bundle.ok() ? static_cast<int64_t>(bundle->size()) : 0;
        }
      }
    }
    absl::StatusOr<Hash> root = TreeHash(size, reader);
    result.ok &= root.ok() && SignCheckpoint(Checkpoint{signer.name(), size, *root, {}}, signers).ok();
    published = size;
  }
  return result;
}

int64_t BytesUnder(const std::filesystem::path& dir) {
  int64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) total += static_cast<int64_t>(e.file_size());
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_log: the verifiable log's library against raw SHA-256 and raw Ed25519"};
  int entries_count = 200000, entry_bytes = 550, batch = 1000, rounds = 3;
  double seconds = 1.0;
  std::string dir;
  app.add_option("--entries", entries_count, "entries in the log")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--entry-bytes", entry_bytes, "bytes per entry (an audit event is ~550)")->capture_default_str()->check(CLI::Range(1, 65535));
  app.add_option("--batch", batch, "entries per integration (one checkpoint each)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "rounds (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--seconds", seconds, "seconds per timed loop (proofs, verification)")->capture_default_str();
  app.add_option("--dir", dir, "also write the tiles under this (scratch) directory, no fsync; default: a temp dir");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> entries;
  entries.reserve(entries_count);
  int64_t entry_total = 0;
  for (int i = 0; i < entries_count; ++i) {
    std::string e = "{\"seq\":" + std::to_string(i + 1) + ",\"type\":\"admission\",\"sandbox_id\":\"sb-" + std::to_string(i) + "\"";
    e.resize(static_cast<size_t>(entry_bytes), 'x');
    entry_total += static_cast<int64_t>(e.size());
    entries.push_back(std::move(e));
  }
  auto log_signer = *Ed25519NoteSigner::Create("bench.example/log", *Ed25519PrivateKey::Generate());
  auto witness = *CosignatureV1Signer::Create("bench.example/witness", *Ed25519PrivateKey::Generate());
  const std::filesystem::path files = dir.empty() ? std::filesystem::temp_directory_path() / ("bench_log." + std::to_string(::getpid())) : std::filesystem::path(dir);

  std::vector<double> sha_rates, integrate_rates, file_rates;
  std::vector<Hash> hashes;
  bool ok = true;
  int64_t stored_bytes = 0;
  for (int r = 0; r < rounds; ++r) {
    EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    sha_rates.push_back(entries_count / osh::bench::SecondsOf([&] {
      for (const std::string& e : entries) ok &= EVP_Digest(e.data(), e.size(), digest, &len, sha256, nullptr) == 1;
    }));
    EVP_MD_free(sha256);
    Integration in_memory;
    integrate_rates.push_back(entries_count / osh::bench::SecondsOf([&] { in_memory = Integrate(entries, batch, *log_signer, "", hashes); }));
    ok &= in_memory.ok;
    std::filesystem::remove_all(files);
    Integration on_disk;
    file_rates.push_back(entries_count / osh::bench::SecondsOf([&] { on_disk = Integrate(entries, batch, *log_signer, files.string(), hashes); }));
    ok &= on_disk.ok;
    stored_bytes = BytesUnder(files);
    std::filesystem::remove_all(files);
  }

  // Proofs from the warm in-memory store of the whole log.
  MemoryHashStore store;
  for (const std::string& e : entries) store.Append(e);
  const int64_t size = store.size();
  std::mt19937_64 rng(1);
  std::vector<double> proof_rates;
  for (int r = 0; r < rounds; ++r) {
    proof_rates.push_back(RatePerSecond(seconds, [&] { ok &= ProveRecord(size, static_cast<int64_t>(rng() % size), store).ok(); }));
  }

  // Client verification: what a supervisor does with a served proof and a cosigned checkpoint.
  const Hash root = *TreeHash(size, store);
  const Checkpoint cp{"bench.example/log", size, root, {}};
  const NoteSigner* signers[] = {log_signer.get(), witness.get()};
  const std::string cosigned = *SignCheckpoint(cp, signers);
  auto log_verifier = *ParseVerifierKey(log_signer->VerifierKey());
  auto witness_verifier = *ParseVerifierKey(witness->VerifierKey());
  const NoteVerifier* cosigners[] = {witness_verifier.get()};
  const int64_t index = size / 3;
  const Proof proof = *ProveRecord(size, index, store);
  const std::string text = *FormatCheckpoint(cp);
  const std::string raw_sig = *log_signer->Sign(text);
  const Ed25519PublicKey& raw_key = dynamic_cast<const Ed25519NoteVerifier&>(*log_verifier).key();
  std::vector<double> raw_rates, client_rates;
  for (int r = 0; r < rounds; ++r) {
    raw_rates.push_back(RatePerSecond(seconds, [&] { ok &= raw_key.Verify(text, raw_sig); }));
    client_rates.push_back(RatePerSecond(seconds, [&] {
      absl::StatusOr<OpenedCheckpoint> opened = OpenCheckpoint(cosigned, "bench.example/log", *log_verifier, cosigners, 1);
      ok &= opened.ok() && CheckRecord(proof, opened->checkpoint.size, opened->checkpoint.root, index, RecordHash(entries[index])).ok();
    }));
  }

  const double sha = osh::bench::Median(sha_rates), integrate = osh::bench::Median(integrate_rates),
               on_disk = osh::bench::Median(file_rates), proofs = osh::bench::Median(proof_rates),
               raw = osh::bench::Median(raw_rates), client = osh::bench::Median(client_rates);
  const double budget = 1.2 * static_cast<double>(entry_total) + 64.0 * entries_count;
  std::printf("log of %d entries of %d bytes, batches of %d (a checkpoint each), median of %d\n", entries_count,
              entry_bytes, batch, rounds);
  std::printf("baseline    raw SHA-256 of the entries                  %10.0f entries/s\n", sha);
  std::printf("integrate   stored hashes + tiles/bundles + checkpoint  %10.0f entries/s   ratio %.3f   (target >= 20000/s)\n", integrate, integrate / sha);
  std::printf("integrate   ... and the files written (no fsync)        %10.0f entries/s   ratio %.3f\n", on_disk, on_disk / sha);
  std::printf("proofs      inclusion proofs, in-memory store            %10.0f proofs/s    (target >= 200000/s)\n", proofs);
  std::printf("baseline    raw Ed25519 verify (checkpoint text)        %10.0f verifies/s\n", raw);
  std::printf("client      proof + checkpoint sig + 1 cosignature      %10.0f verifies/s  ratio %.3f   (target >= 0.45)\n", client, client / raw);
  std::printf("storage     tiles + bundles %lld B for %lld B of entries: %.3fx, %.1f B/entry over the entries (budget %.0f B: %s)\n",
              static_cast<long long>(stored_bytes), static_cast<long long>(entry_total),
              static_cast<double>(stored_bytes) / static_cast<double>(entry_total),
              static_cast<double>(stored_bytes - entry_total) / entries_count, budget,
              static_cast<double>(stored_bytes) <= budget ? "within" : "OVER");
  if (!ok) {
    std::printf("ERROR: an operation failed\n");
    return 1;
  }
  return 0;
}
