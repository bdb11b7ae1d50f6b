// What the interceptor knows of each OpenShell sandbox (by workspace and name, Key): the policy and providers of the last request about
// it that the interceptor allowed at validate (CreateSandbox, UpdateConfig with a full or merged policy,
// DetachSandboxProvider). It is the base mergeOperations are applied to (README §9). An allow is not a
// commit (the OpenShell handler can still refuse), so a record may be ahead of upstream; it is never wider
// than what was checked against the ceiling.
//
// The records live in the gateway's store (store::InterceptorRecordStore; one row per sandbox name, a
// serialized openshell.policy.interceptor.v1.InterceptorRecord), so they survive a restart of
// policy-gateway and every replica on a shared PostgreSQL database sees the same ones. Nothing is cached
// here: Get reads the store each time, so a record another replica wrote (or replaced) is what the next
// merge is applied to. Put returns only once the record is durable; an error from any method means the
// caller must not allow what depends on it (the evaluator denies: fail closed).
//
// Writes from this process are serialised; between replicas
// a write built from a read names the bytes it read (Put's `previous`) and commits only over them; other
// writes (a CreateSandbox validate) replace whatever is stored. Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "store/store.h"

namespace osh::gateway {

class InterceptorRecords {
 public:
  struct Record {
    openshell::sandbox::v1::SandboxPolicy policy;
    std::vector<std::string> providers;
  };
  // A record's parts where they are already held (nothing copied): what Put and Encode take.
  struct RecordView {
    RecordView(const openshell::sandbox::v1::SandboxPolicy& policy, const std::vector<std::string>& providers)
        : policy(policy), providers(providers) {}
    RecordView(const Record& record) : policy(record.policy), providers(record.providers) {}  // NOLINT: implicit
    const openshell::sandbox::v1::SandboxPolicy& policy;
    const std::vector<std::string>& providers;
  };

  // `store` (not owned) must outlive this.
  explicit InterceptorRecords(store::InterceptorRecordStore* store) : store_(store) {}

  // Records `record` as the sandbox's, durably; nothing is written when the store already holds exactly it.
  // `catalogue_generation`: the provider-profile catalogue generation its providers' layers were read at
  // (ProviderProfileCatalogue::Entry::generation), and then it commits only while the catalogue is still
  // there (ABORTED catalogue_changed otherwise; store::InterceptorRecordStore::PutInterceptorRecord).
  // `previous` (not null): the record's bytes as Get read them (nullopt: none), and it commits only if the
  // store still holds exactly that (ABORTED record_changed otherwise): a record built from one read is never
  // written over a write made since. When the store holds `record` already, OK and nothing is asked.
  // `event` (not null): an audit event committed in the record's transaction — neither commits without the
  // other; when the store holds `record` already, the event is committed over exactly those bytes
  // (record_changed when they were replaced meanwhile), the generation not asked. OK means it is durable.
  absl::Status Put(const std::string& key, RecordView record,
                   std::optional<uint64_t> catalogue_generation = std::nullopt,
                   const std::optional<std::string>* previous = nullptr, store::AuditEvent* event = nullptr);
  // The same for a record Encode made (`encoded`), for a caller that keeps encodings it made before.
  absl::Status PutEncoded(const std::string& key, std::string encoded,
                          std::optional<uint64_t> catalogue_generation = std::nullopt,
                          const std::optional<std::string>* previous = nullptr, store::AuditEvent* event = nullptr);
  // The sandbox's record as the store holds it now, or nullopt when none is. DATA_LOSS when the stored
  // record does not decode. `raw` (may be null): set to the stored bytes (nullopt: none), for Put's `previous`.
  absl::StatusOr<std::optional<Record>> Get(const std::string& key, std::optional<std::string>* raw = nullptr) const;
  // The sandbox's policy changed in a way not seen here (an undone draft chunk): unknown from now on.
  absl::Status Forget(const std::string& key);

  // A record with its key.
  struct Entry {
    std::string key;
    Record record;
  };

  // The key a sandbox's record is kept under: its name in the default workspace ("" or "default"), and
  // workspace + U+001F + name in another. Sandbox names and workspaces are checked as sandbox ids first
  // (no control characters), so no two sandboxes share a key: OpenShell names a sandbox within its
  // workspace, and one of another workspace with the same name is another sandbox.
  static std::string Key(absl::string_view workspace, absl::string_view name);
  // A key as a person reads it: 'build-7', or 'build-7' (workspace 'team-a').
  static std::string Describe(absl::string_view key);
  // A key's workspace ("" for the default one) and name.
  static std::pair<std::string, std::string> Split(absl::string_view key);

  // The stored form of a record, and back (false when the bytes do not decode).
  static std::string Encode(RecordView record);
  static bool Decode(const std::string& bytes, Record* record);

 private:
  store::InterceptorRecordStore* const store_;
  absl::Mutex write_mu_;  // this process's writes, one at a time
};

}  // namespace osh::gateway
