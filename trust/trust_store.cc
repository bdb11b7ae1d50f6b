#include "trust/trust_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "trust/secure_path.h"
#include "policy/policy_file.h"

namespace osh::trust {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("trust store: ", what)); }

absl::StatusOr<std::optional<int64_t>> ParseTime(const Struct& key, absl::string_view field, absl::string_view where) {
  auto it = key.fields().find(std::string(field));
  if (it == key.fields().end()) return std::optional<int64_t>();
  if (it->second.kind_case() != Value::kStringValue) return Bad(absl::StrCat(where, ".", field, ": must be an RFC 3339 string"));
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, it->second.string_value(), &time, &error)) {
    return Bad(absl::StrCat(where, ".", field, ": not an RFC 3339 time: '", it->second.string_value(), "'"));
  }
  return std::optional<int64_t>(absl::ToUnixSeconds(time));
}

absl::StatusOr<std::string> GetString(const Struct& s, absl::string_view field, absl::string_view where, bool required) {
  auto it = s.fields().find(std::string(field));
  if (it == s.fields().end()) {
    if (required) return Bad(absl::StrCat(where, ": missing ", field));
    return std::string();
  }
  if (it->second.kind_case() != Value::kStringValue) return Bad(absl::StrCat(where, ".", field, ": must be a string"));
  return it->second.string_value();
}

}  // namespace

bool IsValidKeyId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

const TrustedKey* TrustStore::Find(absl::string_view key_id) const {
  for (const auto& key : keys_) {
    if (key.key_id == key_id) return &key;
  }
  return nullptr;
}

namespace {

// JSON nesting depth (objects and arrays), strings skipped; stops counting past `limit`.
int NestingDepth(absl::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') deepest = std::max(deepest, ++depth);
    else if (c == '}' || c == ']') --depth;
    if (deepest > limit) break;
  }
  return deepest;
}

}  // namespace

absl::StatusOr<TrustStore> TrustStore::Parse(absl::string_view json_text) {
  // Bounded before the JSON parser sees it: deeply nested input makes it slow (quadratic or worse).
  if (json_text.size() > kMaxTrustStoreBytes) {
    return Bad(absl::StrCat(json_text.size(), " bytes, more than the ", kMaxTrustStoreBytes, " a trust store may have"));
  }
  if (NestingDepth(json_text, kMaxTrustStoreDepth) > kMaxTrustStoreDepth) {
    return Bad(absl::StrCat("nested more than ", kMaxTrustStoreDepth, " levels deep (a trust store needs 3)"));
  }
  Struct root;
  google::protobuf::util::JsonParseOptions options;
  if (!google::protobuf::util::JsonStringToMessage(std::string(json_text), &root, options).ok()) {
    return Bad("not valid JSON (expected an object such as {\"keys\": [...]})");
  }
  static const std::set<std::string> kTopFields = {"threshold", "require_context_binding", "keys", "revoked_key_ids"};
  static const std::set<std::string> kKeyFields = {"key_id", "algorithm", "public_key_pem", "not_before", "not_after"};
  for (const auto& [name, value] : root.fields()) {
    if (!kTopFields.contains(name)) return Bad(absl::StrCat("unknown field '", name, "'"));
  }
  TrustStore store;
  if (auto it = root.fields().find("require_context_binding"); it != root.fields().end()) {
    if (it->second.kind_case() != Value::kBoolValue) return Bad("require_context_binding: must be true or false");
    store.require_context_binding_ = it->second.bool_value();
  }
  auto keys_it = root.fields().find("keys");
  if (keys_it == root.fields().end()) return Bad("no keys: 'keys' is missing");
  if (keys_it->second.kind_case() != Value::kListValue) return Bad("keys: must be a list");
  const auto& keys = keys_it->second.list_value().values();
  if (keys.empty()) return Bad("no keys: 'keys' is empty");

  std::set<std::string> revoked;
  if (auto it = root.fields().find("revoked_key_ids"); it != root.fields().end()) {
    if (it->second.kind_case() != Value::kListValue) return Bad("revoked_key_ids: must be a list of key ids");
    for (const auto& id : it->second.list_value().values()) {
      if (id.kind_case() != Value::kStringValue) return Bad("revoked_key_ids: must be a list of key ids");
      // A malformed id (" k1", "k1 ") names no key: the key meant stayed trusted (review 106).
      if (!IsValidKeyId(id.string_value())) {
        return Bad(absl::StrCat("revoked_key_ids: invalid key id '", id.string_value(), "' (1..128 of [A-Za-z0-9._:-])"));
      }
      revoked.insert(id.string_value());
      store.revoked_key_ids_.push_back(id.string_value());
    }
  }

  std::set<std::string> ids;
  std::map<std::string, std::string> fingerprints;  // fingerprint -> key id
  for (int i = 0; i < keys.size(); ++i) {
    const std::string where = absl::StrCat("keys[", i, "]");
    if (keys[i].kind_case() != Value::kStructValue) return Bad(absl::StrCat(where, ": must be an object"));
    const Struct& key = keys[i].struct_value();
    for (const auto& [name, value] : key.fields()) {
      if (!kKeyFields.contains(name)) return Bad(absl::StrCat(where, ": unknown field '", name, "'"));
    }
    auto key_id = GetString(key, "key_id", where, true);
    if (!key_id.ok()) return key_id.status();
    if (key_id->empty()) return Bad(absl::StrCat(where, ".key_id: empty key id"));
    if (!IsValidKeyId(*key_id)) {
      return Bad(absl::StrCat(where, ".key_id: invalid key id '", *key_id, "' (1..128 of [A-Za-z0-9._:-])"));
    }
    if (!ids.insert(*key_id).second) return Bad(absl::StrCat(where, ".key_id: duplicate key id '", *key_id, "'"));
    auto pem = GetString(key, "public_key_pem", where, true);
    if (!pem.ok()) return pem.status();
    auto public_key = PublicKey::FromPem(*pem);
    if (!public_key.ok()) return Bad(absl::StrCat(where, " (", *key_id, ").public_key_pem: ", public_key.status().message()));
    auto algorithm = GetString(key, "algorithm", where, false);
    if (!algorithm.ok()) return algorithm.status();
    if (!algorithm->empty()) {
      if (*algorithm != kEd25519 && *algorithm != kEcdsaP256) {
        return Bad(absl::StrCat(where, " (", *key_id, ").algorithm: unsupported algorithm '", *algorithm,
                                "' (ed25519, ecdsa-p256-sha256)"));
      }
      if (*algorithm != public_key->algorithm()) {
        return Bad(absl::StrCat(where, " (", *key_id, ").algorithm: '", *algorithm, "' does not match the PEM key, which is ",
                                public_key->algorithm()));
      }
    }
    if (auto [it, inserted] = fingerprints.emplace(public_key->fingerprint(), *key_id); !inserted) {
      return Bad(absl::StrCat(where, " (", *key_id, "): the same public key is already listed as '", it->second, "'"));
    }
    auto not_before = ParseTime(key, "not_before", where);
    if (!not_before.ok()) return not_before.status();
    auto not_after = ParseTime(key, "not_after", where);
    if (!not_after.ok()) return not_after.status();
    if (*not_before && *not_after && **not_after < **not_before) {
      return Bad(absl::StrCat(where, " (", *key_id, "): not_after is before not_before"));
    }
    store.keys_.push_back(TrustedKey{*key_id, *std::move(public_key), *not_before, *not_after, revoked.contains(*key_id)});
  }

  if (auto it = root.fields().find("threshold"); it != root.fields().end()) {
    const Value& t = it->second;
    if (t.kind_case() != Value::kNumberValue || t.number_value() != std::floor(t.number_value())) {
      return Bad("threshold: must be a whole number");
    }
    if (t.number_value() < 1) return Bad("threshold: must be at least 1");
    if (t.number_value() > static_cast<double>(store.keys_.size())) {
      return Bad(absl::StrCat("threshold: ", t.number_value(), " is more than the number of keys (", store.keys_.size(), ")"));
    }
    store.threshold_ = static_cast<uint32_t>(t.number_value());
  }
  return store;
}

absl::StatusOr<TrustStore> TrustStore::Load(const std::string& path) {
  // Symlinks resolved (a Kubernetes Secret volume holds links: docs/policy-gateway.md), checked, and read
  // through the path checked (review 106: lstat refused the manifest's own mount, and a link swapped
  // between the check and the read was followed).
  auto text = ReadFileNoOneElseCanWrite(path, "trust store");
  if (!text.ok()) {
    if (absl::IsNotFound(text.status()) || absl::IsPermissionDenied(text.status())) return text.status();
    return absl::PermissionDeniedError(absl::StrCat("trust store ", text.status().message()));
  }
  auto store = Parse(*text);
  if (!store.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", store.status().message()));
  return store;
}

}  // namespace osh::trust
