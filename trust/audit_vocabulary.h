// The audit log's vocabulary (SPEC §8, docs/audit.md): every event type and outcome the gateway writes,
// an enum each with one name table. Writers name an enumerator (AuditEvent's fields accept nothing
// else); the chain hashes and the stores keep the table's name, byte for byte as before. A test keeps
// docs/audit.md's table equal to kTypeNames and kOutcomeNames.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "common/name_table.h"

namespace osh::trust::audit {

enum class Type {
  kAdmission,
  kRefusal,
  kRefresh,
  kReprojection,
  kReverificationFailed,
  kDeletion,
  kRelease,
  kMutation,
  kMutationRefused,
  kReport,
  kDriverUp,
  kDriverDown,
  kTrustStoreReload,
  kCeilingSet,
  kAuthenticationFailures,
  kStateRollbackAccepted,
  kInterception,  // one Evaluate of the OpenShell gateway interceptor (docs/openshell-interceptor.md)
};

// Every event type, in docs/audit.md's order.
inline constexpr common::NameTable<Type, 17> kTypeNames{{{
    {Type::kAdmission, "admission"},
    {Type::kRefusal, "refusal"},
    {Type::kRefresh, "refresh"},
    {Type::kReprojection, "reprojection"},
    {Type::kReverificationFailed, "reverification_failed"},
    {Type::kDeletion, "deletion"},
    {Type::kRelease, "release"},
    {Type::kMutation, "mutation"},
    {Type::kMutationRefused, "mutation_refused"},
    {Type::kReport, "report"},
    {Type::kDriverUp, "driver_up"},
    {Type::kDriverDown, "driver_down"},
    {Type::kTrustStoreReload, "trust_store_reload"},
    {Type::kCeilingSet, "ceiling_set"},
    {Type::kAuthenticationFailures, "authentication_failures"},
    {Type::kStateRollbackAccepted, "state_rollback_accepted"},
    {Type::kInterception, "interception"},
}}};

enum class Outcome {
  kOk,
  kRefused,
  kKeptLastGood,
  kPartial,  // a re-projection in which some sandboxes kept the last good
  kLoaded,
  kFailed,
  kUnavailable,
};

inline constexpr common::NameTable<Outcome, 7> kOutcomeNames{{{
    {Outcome::kOk, "ok"},
    {Outcome::kRefused, "refused"},
    {Outcome::kKeptLastGood, "kept_last_good"},
    {Outcome::kPartial, "partial"},
    {Outcome::kLoaded, "loaded"},
    {Outcome::kFailed, "failed"},
    {Outcome::kUnavailable, "unavailable"},
}}};

inline constexpr absl::string_view NameOf(Type type) { return kTypeNames.Name(type); }
inline constexpr absl::string_view NameOf(Outcome outcome) { return kOutcomeNames.Name(outcome); }

template <typename Enum>
struct NamesOf;
template <>
struct NamesOf<Type> {
  static constexpr const auto& kTable = kTypeNames;
};
template <>
struct NamesOf<Outcome> {
  static constexpr const auto& kTable = kOutcomeNames;
};

// An event's type or outcome as it is hashed and stored: the name of an enumerator, or — only for an
// event read back (a database or an export) written by a newer gateway — a name this build does not
// know, kept verbatim so the chain still verifies. Built from an enumerator by writers
// (`event.type = audit::Type::kReport`), from text only by FromStored. Empty until set.
template <typename Enum>
class Word {
 public:
  Word() = default;
  Word(Enum value) : name_(NamesOf<Enum>::kTable.Name(value)) {}  // NOLINT: implicit by design
  static Word FromStored(std::string name) {
    Word word;
    word.name_ = std::move(name);
    return word;
  }
  const std::string& name() const { return name_; }
  // The enumerator, or nullopt for an empty or unknown name.
  std::optional<Enum> value() const { return NamesOf<Enum>::kTable.Parse(name_); }
  bool empty() const { return name_.empty(); }

  friend bool operator==(const Word& a, const Word& b) { return a.name_ == b.name_; }
  friend bool operator==(const Word& word, Enum value) { return word.name_ == NamesOf<Enum>::kTable.Name(value); }

 private:
  std::string name_;
};

using TypeWord = Word<Type>;
using OutcomeWord = Word<Outcome>;

// Whether an event of this type and outcome put the projection it names in force for its sandbox — the
// only events a log proof may show a sandbox for the projection it is served (docs/audit.md, "Proofs for
// sandboxes"): an admission, a refresh or a re-projection that succeeded. A refusal, or a refresh that
// kept the last good, names a projection that was offered and not put in force.
inline bool PutInForce(const TypeWord& type, const OutcomeWord& outcome) {
  return (type == Type::kAdmission || type == Type::kRefresh || type == Type::kReprojection) && outcome == Outcome::kOk;
}

}  // namespace osh::trust::audit
