// The suite's fuzz runner for a non-clang build of the fuzz targets (the ASan+UBSan tree, build-asan/):
// the same LLVMFuzzerTestOneInput harnesses, driven without coverage guidance. It runs every file of the
// corpus folders given, then --runs inputs mutated from them (bit flips, byte and token insertions,
// erasures, duplications, splices of two inputs), chosen by a PRNG seeded with --seed: the same
// arguments run the same inputs. A crash, an abort or a sanitizer report ends the process non-zero.
//
// Coverage-guided fuzzing (libFuzzer, clang) is scripts/fuzz.sh; this runner keeps the suite's brief
// runs in the one sanitizer build the suite already compiles.
//
// Each input is handed to the harness in a heap buffer of exactly its size, so a read past its end is
// an AddressSanitizer report, as under libFuzzer. --save DIR writes the input about to run to DIR/current
// first, so the input that crashed is on disk to replay.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

using Input = std::vector<uint8_t>;

// Tokens that matter to the formats under test (YAML, TOML, JSON, protobuf wire, globs, hosts).
constexpr std::array<std::string_view, 24> kTokens = {
    "\n", ":", ": ", "- ", "{", "}", "[", "]", "\"", "'", "*", "**", "/", ".", "=", "#", "\\", "\0",
    "\xff\xff\xff\xff\x0f", "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "0", "-1", "9223372036854775807", "&a *a"};

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  size_t Below(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  // One to four stacked mutations of `base`, `other` as the splice partner; at most max_len bytes.
  Input Mutate(const Input& base, const Input& other, size_t max_len) {
    Input out = base;
    const size_t rounds = 1 + Below(4);
    for (size_t i = 0; i < rounds; ++i) MutateOnce(out, other);
    if (out.size() > max_len) out.resize(max_len);
    return out;
  }

 private:
  void MutateOnce(Input& v, const Input& other) {
    switch (Below(8)) {
      case 0:  // flip a bit
        if (!v.empty()) v[Below(v.size())] ^= static_cast<uint8_t>(1u << Below(8));
        break;
      case 1:  // set a byte
        if (!v.empty()) v[Below(v.size())] = static_cast<uint8_t>(Below(256));
        break;
      case 2: {  // insert random bytes
        Input bytes(1 + Below(8));
        for (auto& b : bytes) b = static_cast<uint8_t>(Below(256));
        v.insert(v.begin() + static_cast<ptrdiff_t>(Below(v.size() + 1)), bytes.begin(), bytes.end());
        break;
      }
      case 3: {  // erase a range
        if (v.empty()) break;
        const size_t at = Below(v.size());
        const size_t n = 1 + Below(std::min<size_t>(v.size() - at, 64));
        v.erase(v.begin() + static_cast<ptrdiff_t>(at), v.begin() + static_cast<ptrdiff_t>(at + n));
        break;
      }
      case 4: {  // duplicate a range in place
        if (v.empty()) break;
        const size_t at = Below(v.size());
        const size_t n = 1 + Below(std::min<size_t>(v.size() - at, 64));
        const Input chunk(v.begin() + static_cast<ptrdiff_t>(at), v.begin() + static_cast<ptrdiff_t>(at + n));
        v.insert(v.begin() + static_cast<ptrdiff_t>(Below(v.size() + 1)), chunk.begin(), chunk.end());
        break;
      }
      case 5: {  // insert a token
        const std::string_view t = kTokens[Below(kTokens.size())];
        v.insert(v.begin() + static_cast<ptrdiff_t>(Below(v.size() + 1)), t.begin(), t.end());
        break;
      }
      case 6: {  // splice: a prefix of this input and a suffix of the other
        const size_t keep = Below(v.size() + 1);
        const size_t from = Below(other.size() + 1);
        v.resize(keep);
        v.insert(v.end(), other.begin() + static_cast<ptrdiff_t>(from), other.end());
        break;
      }
      default: {  // overwrite a range with bytes of the other input
        if (v.empty() || other.empty()) break;
        const size_t at = Below(v.size());
        const size_t from = Below(other.size());
        const size_t n = std::min({v.size() - at, other.size() - from, size_t{1} + Below(32)});
        std::copy_n(other.begin() + static_cast<ptrdiff_t>(from), n, v.begin() + static_cast<ptrdiff_t>(at));
        break;
      }
    }
  }

  std::mt19937_64 rng_;
};

void RunOne(const Input& input, const std::filesystem::path& save_dir) {
  if (!save_dir.empty()) {
    std::ofstream(save_dir / "current", std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
  }
  // Exactly the input's size on the heap: an overread is a sanitizer report.
  std::unique_ptr<uint8_t[]> exact(new uint8_t[input.size()]);
  std::copy(input.begin(), input.end(), exact.get());
  LLVMFuzzerTestOneInput(exact.get(), input.size());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Runs a fuzz target's harness on its corpus, then on inputs mutated from it (no coverage guidance)."};
  uint64_t runs = 10000;
  uint64_t seed = 1;
  size_t max_len = 16384;
  std::vector<std::string> dirs;
  std::string save;
  app.add_option("--runs", runs, "mutated inputs to run after the corpus")->capture_default_str();
  app.add_option("--seed", seed, "the PRNG seed (same seed and corpus: same inputs)")->capture_default_str();
  app.add_option("--max-len", max_len, "longest input, in bytes")->capture_default_str();
  app.add_option("--save", save, "a folder to write each input to (as 'current') before it runs")->check(CLI::ExistingDirectory);
  app.add_option("corpus", dirs, "corpus folders (every regular file is one input)")->required()->check(CLI::ExistingDirectory);
  CLI11_PARSE(app, argc, argv);

  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);

  std::vector<std::filesystem::path> files;
  for (const auto& dir : dirs) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());  // directory order is not stable; the run must be
  std::vector<Input> corpus;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    Input bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (bytes.size() > max_len) bytes.resize(max_len);
    corpus.push_back(std::move(bytes));
  }
  if (corpus.empty()) corpus.emplace_back();  // an empty corpus: mutate from the empty input

  for (const auto& input : corpus) RunOne(input, save);
  Mutator mutator(seed);
  for (uint64_t i = 0; i < runs; ++i) {
    const Input& base = corpus[mutator.Below(corpus.size())];
    const Input& other = corpus[mutator.Below(corpus.size())];
    RunOne(mutator.Mutate(base, other, max_len), save);
  }
  std::cout << "fuzz runner: " << files.size() << " corpus input(s) and " << runs << " mutated input(s) run (seed " << seed
            << ", max " << max_len << " bytes): no crash\n";
  return 0;
}
