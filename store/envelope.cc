#include "store/envelope.h"

#include "absl/strings/str_cat.h"
#include "policy/body_codec.h"

namespace osh::store {

Envelope::Envelope(Projection header, std::string header_bytes, BodyPtr body)
    : header_(std::move(header)), header_bytes_(std::move(header_bytes)), body_(std::move(body)) {}

void Envelope::CopyTo(Projection* out) const {
  *out = header_;
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

EnvelopePtr EnvelopeInterner::Intern(const Projection& projection) {
  Projection header = projection;
  header.clear_body();
  std::string header_bytes = policy::SerializeDeterministic(header);
  absl::MutexLock lock(&mu_);
  BodyPtr body = InternBodyLocked(projection.policy_digest(), projection.body());
  return InternLocked(std::move(header), std::move(header_bytes), body);
}

EnvelopePtr EnvelopeInterner::Intern(std::string header_bytes, const BodyPtr& body) {
  absl::MutexLock lock(&mu_);
  const std::string key = absl::StrCat(header_bytes, "@", reinterpret_cast<uintptr_t>(body.get()));
  if (auto it = envelopes_.find(key); it != envelopes_.end()) {
    if (auto alive = it->second.lock()) return alive;
  }
  Projection header;
  header.ParseFromString(header_bytes);  // the caller checked it decodes (LoadSandboxes)
  return InternLocked(std::move(header), std::move(header_bytes), body);
}

BodyPtr EnvelopeInterner::InternBody(const std::string& digest, std::string bytes) {
  absl::MutexLock lock(&mu_);
  return InternBodyLocked(digest, std::move(bytes));
}

EnvelopePtr EnvelopeInterner::InternLocked(Projection header, std::string header_bytes, const BodyPtr& body) {
  const std::string key = absl::StrCat(header_bytes, "@", reinterpret_cast<uintptr_t>(body.get()));
  auto& slot = envelopes_[key];
  if (auto alive = slot.lock()) return alive;
  auto made = std::make_shared<const Envelope>(std::move(header), std::move(header_bytes), body);
  slot = made;
  if (++inserts_since_sweep_ > 1024 + envelopes_.size()) SweepLocked();
  return made;
}

BodyPtr EnvelopeInterner::InternBodyLocked(const std::string& digest, std::string bytes) {
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
