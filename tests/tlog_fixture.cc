// The C++ half of the tlog interoperability test (tests/tlog_interop.sh, with tests/tlog_interop/main.go,
// which uses Go's golang.org/x/mod/sumdb/tlog and sumdb/note — code we did not write).
//   tlog_fixture write DIR N   a log of N deterministic entries: tiles and entry bundles under DIR (in
//                              several publishing steps), DIR/checkpoint signed by a fresh Ed25519 key
//                              given as DIR/log.pem, DIR/vkey (its note verifier key), DIR/proofs.txt
//   tlog_fixture check DIR     verifies what the Go side wrote under DIR/go/: its checkpoint (opened with
//                              its vkey) against the tree we compute from the same entries, and each of its
//                              inclusion and consistency proofs, which must also equal ours
// proofs.txt lines: "inclusion T N LEAF ROOT(T) P1,P2,..." and "consistency T M ROOT(T) ROOT(M) P1,...",
// hashes in base64, "-" for an empty proof. Exit status 0 only if everything verifies.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tlog/checkpoint.h"
#include "tlog/merkle.h"
#include "tlog/note.h"
#include "tlog/tiles.h"

namespace {

using namespace osh::tlog;

constexpr char kOrigin[] = "example.test/osh-tlog-interop";

std::string FixtureEntry(int64_t i) {
  return absl::StrCat("osh tlog interop entry ", i, " ", std::string(static_cast<size_t>((i * 7) % 300), 'a' + i % 26));
}

class FixtureEntries final : public EntryReader {
 public:
  absl::StatusOr<std::vector<std::string>> ReadEntries(int64_t begin, int64_t end) const override {
    std::vector<std::string> out;
    for (int64_t i = begin; i < end; ++i) out.push_back(FixtureEntry(i));
    return out;
  }
};

int Fail(absl::string_view what) {
  std::cerr << "tlog_fixture: " << what << "\n";
  return 1;
}

bool WriteText(const std::string& path, absl::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string ProofText(const Proof& proof) {
  if (proof.empty()) return "-";
  std::vector<std::string> parts;
  for (const Hash& h : proof) parts.push_back(HashToBase64(h));
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<Proof> ParseProof(absl::string_view text) {
  Proof proof;
  if (text == "-") return proof;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    absl::StatusOr<Hash> h = HashFromBase64(part);
    if (!h.ok()) return h.status();
    proof.push_back(*h);
  }
  return proof;
}

std::set<int64_t> SampleSizes(int64_t n) {
  std::set<int64_t> sizes;
  for (int64_t t : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{1000},
                    int64_t{65535}, int64_t{65536}, int64_t{65537}, n / 3, n / 2, n - 1, n}) {
    if (t >= 1 && t <= n) sizes.insert(t);
  }
  return sizes;
}

int Write(const std::string& dir, int64_t n) {
  MemoryHashStore store;
  FixtureEntries entries;
  TileWriteOptions options;
  options.sync = false;
  int64_t published = 0;
  for (int64_t step : {n / 5, n / 2, n - 300, n - 1, n}) {
    if (step <= published) continue;
    while (store.size() < step) store.Append(FixtureEntry(store.size()));
    absl::StatusOr<TileWriteStats> stats = WriteTiles(dir, published, step, store, entries, options);
    if (!stats.ok()) return Fail(stats.status().ToString());
    published = step;
  }
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
  if (!key.ok()) return Fail(key.status().ToString());
  absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> signer = Ed25519NoteSigner::FromPem(kOrigin, key->ToPem());
  if (!signer.ok()) return Fail(signer.status().ToString());
  const Checkpoint cp{kOrigin, n, *TreeHash(n, store), {}};
  const NoteSigner* signers[] = {signer->get()};
  absl::StatusOr<std::string> note = SignCheckpoint(cp, signers);
  absl::StatusOr<std::string> vkey = VerifierKeyFromPem(kOrigin, key->ToPem());
  if (!note.ok() || !vkey.ok()) return Fail("cannot sign the checkpoint");
  std::string proofs;
  for (int64_t t : SampleSizes(n)) {
    const std::string root = HashToBase64(*TreeHash(t, store));
    for (int64_t i : {int64_t{0}, t / 2, t - 1, (t * 7919) % t, int64_t{255} % t, int64_t{256} % t}) {
      absl::StatusOr<Proof> p = ProveRecord(t, i, store);
      if (!p.ok()) return Fail(p.status().ToString());
      absl::StrAppend(&proofs, "inclusion ", t, " ", i, " ", HashToBase64(RecordHash(FixtureEntry(i))), " ", root, " ",
                      ProofText(*p), "\n");
    }
    for (int64_t m : {int64_t{1}, t / 3 + 1, t / 2 + 1, t - 1, t}) {
      if (m < 1 || m > t) continue;
      absl::StatusOr<Proof> p = ProveTree(t, m, store);
      if (!p.ok()) return Fail(p.status().ToString());
      absl::StrAppend(&proofs, "consistency ", t, " ", m, " ", root, " ", HashToBase64(*TreeHash(m, store)), " ",
                      ProofText(*p), "\n");
    }
  }
  if (!WriteText(dir + "/checkpoint", *note) || !WriteText(dir + "/vkey", *vkey + "\n") ||
      !WriteText(dir + "/log.pem", key->ToPem()) || !WriteText(dir + "/proofs.txt", proofs)) {
    return Fail("cannot write the fixture files");
  }
  std::cout << "wrote a log of " << n << " entries, root " << HashToBase64(cp.root) << "\n";
  return 0;
}

int Check(const std::string& dir) {
  std::string vkey = ReadText(dir + "/go/vkey");
  while (!vkey.empty() && vkey.back() == '\n') vkey.pop_back();
  absl::StatusOr<std::unique_ptr<NoteVerifier>> verifier = ParseVerifierKey(vkey);
  if (!verifier.ok()) return Fail(absl::StrCat("Go's verifier key: ", verifier.status().ToString()));
  absl::StatusOr<OpenedCheckpoint> opened = OpenCheckpoint(ReadText(dir + "/go/checkpoint"), "", **verifier);
  if (!opened.ok()) return Fail(absl::StrCat("Go's checkpoint: ", opened.status().ToString()));
  const int64_t n = opened->checkpoint.size;
  MemoryHashStore store;
  while (store.size() < n) store.Append(FixtureEntry(store.size()));
  if (*TreeHash(n, store) != opened->checkpoint.root) return Fail("Go's checkpoint root is not our tree's");
  std::istringstream lines(ReadText(dir + "/go/proofs.txt"));
  int checked = 0;
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    int64_t t = 0, i = 0;
    if (f.size() != 6 || !absl::SimpleAtoi(f[1], &t) || !absl::SimpleAtoi(f[2], &i)) return Fail("bad line: " + line);
    absl::StatusOr<Proof> proof = ParseProof(f[5]);
    absl::StatusOr<Hash> a = HashFromBase64(f[3]), b = HashFromBase64(f[4]);
    if (!proof.ok() || !a.ok() || !b.ok()) return Fail("bad hashes: " + line);
    if (f[0] == "inclusion") {
      if (absl::Status s = CheckRecord(*proof, t, *b, i, *a); !s.ok()) return Fail(absl::StrCat(line, ": ", s.ToString()));
      if (*a != RecordHash(FixtureEntry(i))) return Fail("Go's leaf hash differs: " + line);
      if (*ProveRecord(t, i, store) != *proof) return Fail("Go's inclusion proof differs from ours: " + line);
    } else if (f[0] == "consistency") {
      if (absl::Status s = CheckTree(*proof, t, *a, i, *b); !s.ok()) return Fail(absl::StrCat(line, ": ", s.ToString()));
      if (*ProveTree(t, i, store) != *proof) return Fail("Go's consistency proof differs from ours: " + line);
    } else {
      return Fail("bad line: " + line);
    }
    ++checked;
  }
  if (checked == 0) return Fail("Go wrote no proofs");
  std::cout << "verified Go's checkpoint (size " << n << ") and " << checked << " proofs\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 0;
  if (argc == 4 && std::string(argv[1]) == "write" && absl::SimpleAtoi(argv[3], &n) && n > 0) return Write(argv[2], n);
  if (argc == 3 && std::string(argv[1]) == "check") return Check(argv[2]);
  std::cerr << "usage: tlog_fixture write DIR N | tlog_fixture check DIR\n";
  return 2;
}
