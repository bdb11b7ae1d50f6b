#include "trust/audit_chain.h"

#include <google/protobuf/stubs/common.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/type_resolver_util.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "policy/digest.h"
#include "trust/encoding.h"

namespace osh::trust {
namespace {

namespace gateway_v1 = openshell::policy::gateway::v1;

void MakeUtf8(std::string* text) {
  if (!google::protobuf::internal::IsStructurallyValidUTF8(text->data(), static_cast<int>(text->size()))) {
    *text = absl::CHexEscape(*text);
  }
}

ChainVerdict Broken(ChainVerdict verdict, uint64_t seq, uint64_t line, std::string detail) {
  verdict.whole = false;
  verdict.first_broken_seq = seq;
  verdict.line = line;
  verdict.detail = std::move(detail);
  return verdict;
}

}  // namespace

std::string CanonicalAuditBytes(const AuditEvent& e) {
  std::string out;
  PutField(&out, "openshell.policy.audit.v1");
  PutU64(&out, e.seq);
  PutU64(&out, static_cast<uint64_t>(e.time_unix_ms));
  PutField(&out, e.type.name());
  PutField(&out, e.sandbox_id);
  PutField(&out, e.surface_id);
  PutField(&out, e.policy_digest);
  PutU64(&out, e.policy_version);
  PutU32(&out, static_cast<uint32_t>(e.key_ids.size()));
  for (const auto& id : e.key_ids) PutField(&out, id);
  PutField(&out, e.outcome.name());
  PutField(&out, e.reason);
  PutU32(&out, static_cast<uint32_t>(e.audit_context.size()));
  for (const auto& [k, v] : e.audit_context) {  // std::map<std::string> orders bytewise
    PutField(&out, k);
    PutField(&out, v);
  }
  if (!e.actor.empty()) {
    PutField(&out, "actor");
    PutField(&out, e.actor);
  }
  return out;
}

absl::StatusOr<AuditEvent> ParseCanonicalAuditBytes(absl::string_view bytes) {
  absl::string_view rest = bytes;
  bool ok = true;
  auto u64 = [&](int width) -> uint64_t {
    if (!ok || rest.size() < static_cast<size_t>(width)) return ok = false, 0;
    uint64_t n = 0;
    for (int i = 0; i < width; ++i) n = (n << 8) | static_cast<unsigned char>(rest[i]);
    rest.remove_prefix(width);
    return n;
  };
  auto field = [&]() -> std::string {
    const uint64_t n = u64(4);
    if (!ok || rest.size() < n) return ok = false, std::string();
    std::string out(rest.substr(0, n));
    rest.remove_prefix(n);
    return out;
  };
  AuditEvent e;
  const std::string domain = field();
  e.seq = u64(8);
  e.time_unix_ms = static_cast<int64_t>(u64(8));
  e.type = audit::TypeWord::FromStored(field());
  e.sandbox_id = field();
  e.surface_id = field();
  e.policy_digest = field();
  e.policy_version = u64(8);
  for (uint64_t n = u64(4); ok && n > 0; --n) e.key_ids.push_back(field());
  e.outcome = audit::OutcomeWord::FromStored(field());
  e.reason = field();
  for (uint64_t n = u64(4); ok && n > 0; --n) {
    std::string k = field();
    e.audit_context[k] = field();
  }
  if (ok && !rest.empty()) {
    if (field() != "actor") ok = false;
    e.actor = field();
  }
  if (!ok) return absl::InvalidArgumentError("not an audit event's canonical bytes: cut short or malformed");
  if (domain != "openshell.policy.audit.v1") {
    return absl::InvalidArgumentError("not an audit event's canonical bytes: another domain");
  }
  if (CanonicalAuditBytes(e) != bytes) {
    return absl::InvalidArgumentError("not an audit event's canonical bytes: they do not encode back the same");
  }
  return e;
}

std::string ChainHash(const std::string& prev_hash_hex, const AuditEvent& event) {
  return policy::Sha256Hex(absl::HexStringToBytes(prev_hash_hex) + CanonicalAuditBytes(event));
}

void MakeTextUtf8(AuditEvent* e) {
  for (std::string* text : {&e->sandbox_id, &e->surface_id, &e->policy_digest, &e->reason, &e->actor}) MakeUtf8(text);
  // A writer names an enumerator (valid UTF-8); an event read back may carry a newer gateway's name.
  std::string type = e->type.name(), outcome = e->outcome.name();
  MakeUtf8(&type);
  MakeUtf8(&outcome);
  e->type = audit::TypeWord::FromStored(std::move(type));
  e->outcome = audit::OutcomeWord::FromStored(std::move(outcome));
  for (auto& id : e->key_ids) MakeUtf8(&id);
  std::map<std::string, std::string> context;
  for (const auto& [key, value] : e->audit_context) {
    std::string k = key, v = value;
    MakeUtf8(&k);
    MakeUtf8(&v);
    context.emplace(std::move(k), std::move(v));
  }
  e->audit_context = std::move(context);
}

// An upper bound on CanonicalAuditBytes(e).size(), without building them (every field framed in at most
// 8 bytes, the fixed ones in 128): the common event is not encoded twice under the store's write lock.
static size_t CanonicalSizeBound(const AuditEvent& e) {
  size_t n = 128 + e.type.name().size() + e.outcome.name().size();
  for (const std::string* text : {&e.sandbox_id, &e.surface_id, &e.policy_digest, &e.reason, &e.actor}) {
    n += text->size() + 8;
  }
  for (const auto& id : e.key_ids) n += id.size() + 8;
  for (const auto& [k, v] : e.audit_context) n += k.size() + v.size() + 16;
  return n;
}

void FitCanonicalSize(AuditEvent* e) {
  if (CanonicalSizeBound(*e) <= kMaxCanonicalAuditBytes) return;
  static constexpr char kMarker[] = "\u2026[cut: an audit event is a verifiable-log entry of at most 65535 bytes]";
  const size_t marker = sizeof(kMarker) - 1;
  for (int guard = 0; guard < 64; ++guard) {
    const size_t size = CanonicalAuditBytes(*e).size();
    if (size <= kMaxCanonicalAuditBytes) return;
    // Only free text: the identifying fields (sandbox, surface, digest, actor) are bounded where events
    // are made, and readers (the log's index, event streams) match on them.
    std::string* longest = &e->reason;
    for (auto& [key, value] : e->audit_context) {
      if (value.size() > longest->size()) longest = &value;
    }
    const size_t over = size - kMaxCanonicalAuditBytes + marker;
    size_t keep = longest->size() > over ? longest->size() - over : 0;
    while (keep > 0 && (static_cast<unsigned char>((*longest)[keep]) & 0xC0) == 0x80) --keep;  // a whole character
    longest->resize(keep);
    longest->append(kMarker);
  }
  // Many small fields (a context of thousands of keys): the context goes, said in its place.
  if (CanonicalAuditBytes(*e).size() > kMaxCanonicalAuditBytes) {
    e->audit_context = {{"openshell.truncated", kMarker}};
  }
  // A backstop (review 114): an identifying field some caller forgot to bound is cut too, rather than an
  // event the log cannot take (which stopped its integration for good).
  if (CanonicalAuditBytes(*e).size() > kMaxCanonicalAuditBytes) {
    constexpr size_t kKeep = 1024;
    auto cut = [&](std::string* field) {
      if (field->size() <= kKeep) return;
      size_t keep = kKeep;
      while (keep > 0 && (static_cast<unsigned char>((*field)[keep]) & 0xC0) == 0x80) --keep;
      field->resize(keep);
      field->append(kMarker);
    };
    for (std::string* field : {&e->sandbox_id, &e->surface_id, &e->policy_digest, &e->actor}) cut(field);
    if (e->key_ids.size() > 16) e->key_ids.resize(16);
    for (std::string& id : e->key_ids) cut(&id);
  }
}

gateway_v1::AuditEvent ToProto(const AuditEvent& e) {
  gateway_v1::AuditEvent out;
  out.set_seq(e.seq);
  out.set_time_unix_ms(e.time_unix_ms);
  out.set_type(e.type.name());
  out.set_sandbox_id(e.sandbox_id);
  out.set_surface_id(e.surface_id);
  out.set_policy_digest(e.policy_digest);
  out.set_policy_version(e.policy_version);
  for (const auto& id : e.key_ids) out.add_key_ids(id);
  out.set_outcome(e.outcome.name());
  out.set_reason(e.reason);
  for (const auto& [k, v] : e.audit_context) (*out.mutable_audit_context())[k] = v;
  out.set_actor(e.actor);
  out.set_prev_hash(e.prev_hash);
  out.set_hash(e.hash);
  return out;
}

AuditEvent FromProto(const gateway_v1::AuditEvent& e) {
  AuditEvent out;
  out.seq = e.seq();
  out.time_unix_ms = e.time_unix_ms();
  out.type = audit::TypeWord::FromStored(e.type());
  out.sandbox_id = e.sandbox_id();
  out.surface_id = e.surface_id();
  out.policy_digest = e.policy_digest();
  out.policy_version = e.policy_version();
  out.key_ids.assign(e.key_ids().begin(), e.key_ids().end());
  out.outcome = audit::OutcomeWord::FromStored(e.outcome());
  out.reason = e.reason();
  out.audit_context = {e.audit_context().begin(), e.audit_context().end()};
  out.actor = e.actor();
  out.prev_hash = e.prev_hash();
  out.hash = e.hash();
  return out;
}

std::string ToJsonLine(const AuditEvent& event) {
  // Through deterministic binary (map entries sorted by key), so the same event always prints the same
  // line and two exports of one chain are byte-identical.
  std::string binary;
  {
    google::protobuf::io::StringOutputStream stream(&binary);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    ToProto(event).SerializeToCodedStream(&coded);
  }
  static auto* const resolver = google::protobuf::util::NewTypeResolverForDescriptorPool(  // thread-safe, never freed
      "type.googleapis.com", google::protobuf::DescriptorPool::generated_pool());
  static const std::string type_url =
      absl::StrCat("type.googleapis.com/", gateway_v1::AuditEvent::descriptor()->full_name());
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  // Cannot fail: every text field is UTF-8 (MakeTextUtf8 ran before the event was stored).
  (void)google::protobuf::util::BinaryToJsonString(resolver, type_url, binary, &out, options);
  return out;
}

namespace {

// Whether `text` is the line `audit export` writes for `event`, allowing what genuine exports differ by: a
// CR before the newline (a file through a Windows tool), and no "actor" in exports made before the field
// existed (2026-11-28) for an event without one (review 107).
bool WrittenAsExported(const AuditEvent& event, absl::string_view text) {
  absl::ConsumeSuffix(&text, "\r");
  std::string expected = ToJsonLine(event);
  if (expected == text) return true;
  if (!event.actor.empty()) return false;
  const std::string kEmptyActor = ",\"actor\":\"\"";
  const size_t at = expected.find(kEmptyActor);
  if (at == std::string::npos) return false;
  expected.erase(at, kEmptyActor.size());
  return expected == text;
}

}  // namespace

ChainVerdict VerifyExport(std::istream& lines, const std::string& anchor_hash) {
  ChainVerdict verdict;
  bool anchor_seen = anchor_hash.empty();
  std::string text;
  uint64_t line = 0;
  while (std::getline(lines, text)) {
    ++line;
    const uint64_t expected_seq = verdict.head_seq + 1;
    gateway_v1::AuditEvent wire;
    google::protobuf::util::JsonParseOptions strict;  // unknown fields are an error
    if (auto s = google::protobuf::util::JsonStringToMessage(text, &wire, strict); !s.ok()) {
      return Broken(verdict, expected_seq, line,
                    absl::StrCat("line ", line, " is not an audit event: ", s.message().as_string()));
    }
    const AuditEvent event = FromProto(wire);
    // Byte for byte as `audit export` writes it: JSON readers disagree on a line the protobuf parser takes
    // (a field given twice, once as `sandbox_id` and once as `sandboxId`: it keeps the last, jq and Python
    // the named one), so what a verified line says to them could differ from what was hashed (review 106).
    if (!WrittenAsExported(event, text)) {
      return Broken(verdict, expected_seq, line,
                    absl::StrCat("line ", line, " is not written as `audit export` writes an event (a field given twice "
                                 "or under another spelling, other spacing or order): what it says may not be what "
                                 "was hashed"));
    }
    if (event.seq != expected_seq) {
      return Broken(verdict, expected_seq, line,
                    event.seq > expected_seq
                        ? absl::StrCat("seq ", expected_seq, event.seq - 1 > expected_seq ? absl::StrCat("..", event.seq - 1) : "",
                                       " missing: line ", line, " has seq ", event.seq)
                        : absl::StrCat("line ", line, " has seq ", event.seq, ", expected ", expected_seq,
                                       " (repeated or reordered)"));
    }
    if (event.prev_hash != verdict.head_hash) {
      return Broken(verdict, event.seq, line,
                    absl::StrCat("seq ", event.seq, ": prev_hash ", event.prev_hash, " does not link to ",
                                 verdict.head_seq == 0 ? "the genesis hash " : absl::StrCat("seq ", verdict.head_seq, "'s hash "),
                                 verdict.head_hash));
    }
    if (const std::string recomputed = ChainHash(event.prev_hash, event); recomputed != event.hash) {
      return Broken(verdict, event.seq, line,
                    absl::StrCat("seq ", event.seq, ": hash ", event.hash, " does not match its contents (recomputed ",
                                 recomputed, "): the event was altered"));
    }
    ++verdict.events;
    anchor_seen = anchor_seen || event.hash == anchor_hash;
    verdict.head_seq = event.seq;
    verdict.head_hash = event.hash;
  }
  if (!anchor_seen) {
    return Broken(verdict, verdict.head_seq + 1, line + 1,
                  absl::StrCat("no event carries the anchor hash ", anchor_hash, "; the export ends at seq ",
                               verdict.head_seq, ": events are missing at the end (or the chain was rewritten)"));
  }
  return verdict;
}

void ChainSealer::Seal(AuditEvent* event, int64_t now_unix_ms) {
  MakeTextUtf8(event);
  FitCanonicalSize(event);
  event->seq = head_.seq + 1;
  if (event->time_unix_ms == 0) event->time_unix_ms = now_unix_ms;
  event->prev_hash = head_.hash;
  event->hash = ChainHash(head_.hash, *event);
  head_ = {event->seq, event->hash};
}

}  // namespace osh::trust
