// libFuzzer target: policy-log-witness's add-checkpoint requests (witness/witness.h) on arbitrary bodies,
// answered by a witness of the fuzz log that starts from an empty state for each input. Invariants (abort
// on violation): never crashes; a body that parses is the canonical form of what it parsed to; the answer
// is one of the spec's statuses (200, 400, 403, 404, 409, 422) with a body; 409 about the size is
// text/x.tlog.size; 200 only for a body that parses and a checkpoint the log signed, and it is a
// cosignature that verifies on that checkpoint's text.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_check.h"
#include "fuzz/fuzz_log_key.h"
#include "tlog/checkpoint.h"
#include "witness/witness.h"

namespace {

const std::string& WitnessFuzzState() {
  static const std::string* path = [] {
    char dir[] = "/tmp/fuzz-witness-XXXXXX";
    if (::mkdtemp(dir) == nullptr) std::abort();
    return new std::string(std::string(dir) + "/state.toml");
  }();
  return *path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace osh;
  const std::string body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<witness::AddCheckpointRequest> request = witness::ParseAddCheckpointRequest(body);
  if (request.ok()) {
    osh::fuzz::FuzzCheck(witness::FormatAddCheckpointRequest(request->old_size, request->proof, request->checkpoint) == body);
    osh::fuzz::FuzzCheck(request->proof.size() <= witness::kMaxProofLines);
  } else {
    osh::fuzz::FuzzCheck(absl::IsInvalidArgument(request.status()));
  }
  ::unlink(WitnessFuzzState().c_str());
  osh::fuzz::FuzzCheck(witness::InitWitnessState(WitnessFuzzState()).ok());  // a new witness's empty state
  auto cosigner = tlog::CosignatureV1Signer::Create(fuzz::kWitnessName, fuzz::FuzzLogKey(), [] { return uint64_t{1'900'000'000}; });
  static const std::string log_key = fuzz::FuzzLogVerifier()->VerifierKey();
  auto w = witness::Witness::Create(*std::move(cosigner), {{fuzz::kLogOrigin, log_key}}, WitnessFuzzState());
  osh::fuzz::FuzzCheck(w.ok());
  const witness::WitnessResponse r = (*w)->AddCheckpoint(body);
  osh::fuzz::FuzzCheck(r.status == 200 || r.status == 400 || r.status == 403 || r.status == 404 || r.status == 409 ||
                      r.status == 422);
  osh::fuzz::FuzzCheck(!r.body.empty() && r.body.back() == '\n');
  if (r.status == 200) {
    osh::fuzz::FuzzCheck(request.ok());
    // The checkpoint opens under the log key, and the answer is a cosignature of its text (the request's
    // own signature lines, even one claiming the witness's name, are not the witness's business).
    static const std::unique_ptr<tlog::Ed25519NoteVerifier> log = fuzz::FuzzLogVerifier();
    absl::StatusOr<tlog::OpenedCheckpoint> opened = tlog::OpenCheckpoint(request->checkpoint, fuzz::kLogOrigin, *log);
    osh::fuzz::FuzzCheck(opened.ok());
    auto witness_key = tlog::ParseVerifierKey((*w)->cosigner().VerifierKey());
    const tlog::NoteVerifier* known[] = {witness_key->get()};
    osh::fuzz::FuzzCheck(tlog::OpenNote(opened->note.text + "\n" + r.body, known).ok());
  }
  if (r.status == 409 && r.content_type == witness::kSizeContentType) osh::fuzz::FuzzCheck(r.body == "0\n");
  return 0;
}
