#include "store/envelope.h"

#include <google/protobuf/arena.h>

#include "absl/strings/str_cat.h"
#include "policy/body_codec.h"
#include "policy/digest.h"

namespace osh::store {

Envelope::Envelope(const Projection& header, std::string header_bytes, BodyPtr body)
    : header_bytes_(std::move(header_bytes)),
      body_(std::move(body)),
      policy_version_(header.policy_version()),
      issued_at_unix_(header.issued_at_unix()),
      expires_at_unix_(header.expires_at_unix()),
      context_bound_(!header.context_digest().empty()) {}

Envelope::Projection Envelope::Header() const {
  Projection header;
  header.ParseFromString(header_bytes_);  // bytes of a parsed message (checked when built)
  return header;
}

void Envelope::CopyTo(Projection* out) const {
  out->ParseFromString(header_bytes_);
  out->set_body(*body_);
}

std::shared_ptr<const Envelope::Projection> Envelope::Shared() const {
  absl::MutexLock lock(&mu_);
  if (auto alive = shared_.lock()) return alive;
  auto full = std::make_shared<Projection>();
  CopyTo(full.get());
  shared_ = full;
  return full;
}

std::string EnvelopeInterner::KeyOf(const std::string& header_bytes, const BodyPtr& body) {
  const auto address = reinterpret_cast<uintptr_t>(body.get());
  return absl::StrCat(policy::Sha256(header_bytes),
                      absl::string_view(reinterpret_cast<const char*>(&address), sizeof(address)));
}

EnvelopePtr EnvelopeInterner::Intern(Projection projection) {
  std::string body_bytes = std::move(*projection.mutable_body());
  projection.clear_body();
  std::string header_bytes = policy::SerializeDeterministic(projection);
  absl::MutexLock lock(&mu_);
  BodyPtr body = InternBodyLocked(projection.policy_digest(), std::move(body_bytes));
  return MakeLocked(projection, std::move(header_bytes), body);
}

absl::StatusOr<EnvelopePtr> EnvelopeInterner::Intern(std::string header_bytes, const BodyPtr& body) {
  // The parsed header is only read for a few fields: parse it in a stack-backed arena, so loading 100k
  // envelopes leaves no freed heap blocks between the ones kept.
  alignas(8) char scratch[2048];
  google::protobuf::ArenaOptions options;
  options.initial_block = scratch;
  options.initial_block_size = sizeof(scratch);
  google::protobuf::Arena arena(options);
  auto* header = google::protobuf::Arena::CreateMessage<Projection>(&arena);
  if (!header->ParseFromString(header_bytes) || !header->body().empty()) {
    return absl::DataLossError("a stored envelope header does not decode");
  }
  absl::MutexLock lock(&mu_);
  return MakeLocked(*header, std::move(header_bytes), body);
}

BodyPtr EnvelopeInterner::InternBody(const std::string& digest, std::string bytes) {
  absl::MutexLock lock(&mu_);
  return InternBodyLocked(digest, std::move(bytes));
}

EnvelopePtr EnvelopeInterner::MakeLocked(const Projection& header, std::string header_bytes, const BodyPtr& body) {
  if (!header.context_digest().empty()) {  // one sandbox's own: nothing to share it with
    return std::make_shared<const Envelope>(header, std::move(header_bytes), body);
  }
  auto& slot = envelopes_[KeyOf(header_bytes, body)];
  if (auto alive = slot.lock()) return alive;
  auto made = std::make_shared<const Envelope>(header, std::move(header_bytes), body);
  slot = made;
  if (++inserts_since_sweep_ > 1024 + envelopes_.size()) SweepLocked();
  return made;
}

BodyPtr EnvelopeInterner::InternBodyLocked(const std::string& digest, std::string&& bytes) {
  auto& slot = bodies_[digest];
  if (auto alive = slot.lock(); alive && *alive == bytes) return alive;
  auto made = std::make_shared<const std::string>(std::move(bytes));
  // A body whose digest field lies (refused later by the check) must not evict the true one for good:
  // it takes the slot only while the slot is free.
  if (slot.expired()) slot = made;
  ++inserts_since_sweep_;
  return made;
}

void EnvelopeInterner::SweepLocked() {
  absl::erase_if(envelopes_, [](const auto& kv) { return kv.second.expired(); });
  absl::erase_if(bodies_, [](const auto& kv) { return kv.second.expired(); });
  inserts_since_sweep_ = 0;
}

size_t EnvelopeInterner::envelopes() const {
  absl::MutexLock lock(&mu_);
  return envelopes_.size();
}

size_t EnvelopeInterner::bodies() const {
  absl::MutexLock lock(&mu_);
  return bodies_.size();
}

}  // namespace osh::store
