#include "tlog/note.h"

#include <openssl/evp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tlog/cosignature.h"
#include "trust/keys.h"

namespace osh::tlog {

namespace note_internal {

constexpr absl::string_view kSignaturePrefix = "\xE2\x80\x94 ";  // U+2014 em dash, space

// Decodes one UTF-8 code point at s[i], advancing i; -1 for an invalid sequence (overlong, surrogate,
// beyond U+10FFFF, truncated), as Go's utf8 package judges them.
int32_t DecodeUtf8(absl::string_view s, size_t& i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int len = 0;
  int32_t cp = 0, min = 0;
  if ((b0 & 0xE0) == 0xC0) len = 2, cp = b0 & 0x1F, min = 0x80;
  else if ((b0 & 0xF0) == 0xE0) len = 3, cp = b0 & 0x0F, min = 0x800;
  else if ((b0 & 0xF8) == 0xF0) len = 4, cp = b0 & 0x07, min = 0x10000;
  else return -1;
  if (i + len > s.size()) return -1;
  for (int k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  i += len;
  return cp;
}

// Unicode White_Space (Go's unicode.IsSpace).
bool IsUnicodeSpace(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Valid UTF-8 with no control character but newline.
bool IsValidNoteText(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int32_t c = DecodeUtf8(s, i);
    if (c < 0 || (c < 0x20 && c != '\n')) return false;
  }
  return true;
}

// Strict standard base64: absl also accepts missing padding and whitespace.
bool CanonicalBase64(absl::string_view text, std::string* out) {
  return absl::Base64Unescape(text, out) && absl::Base64Escape(*out) == text;
}

// A signature line's base64 as Go's sumdb/note reads it (base64.StdEncoding: padding required, nothing
// but the alphabet, and the unused low bits of the last character before the padding ignored — RFC 4648
// §3.5 lets a decoder refuse them, Go does not). A note Go opens must open here (review 102: a line by an
// unknown key with such bits sank the whole note, and a witness answered 400 to a checkpoint Go accepts).
bool SignatureBase64(absl::string_view text, std::string* out) {
  static constexpr absl::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string cleared(text);
  size_t pad = 0;
  while (pad < 2 && pad < cleared.size() && cleared[cleared.size() - 1 - pad] == '=') ++pad;
  if (pad > 0 && cleared.size() > pad) {
    char& last = cleared[cleared.size() - 1 - pad];
    const size_t value = kAlphabet.find(last);
    if (value == absl::string_view::npos) return false;
    last = kAlphabet[value & (pad == 2 ? 0x30 : 0x3c)];  // "xx==": 4 bits unused; "xxx=": 2
  }
  return CanonicalBase64(cleared, out);
}

std::string KeyIdBytes(uint32_t id) {
  return std::string{static_cast<char>(id >> 24), static_cast<char>(id >> 16), static_cast<char>(id >> 8),
                     static_cast<char>(id)};
}

uint32_t KeyIdOf(absl::string_view bytes) {
  return (uint32_t{static_cast<uint8_t>(bytes[0])} << 24) | (uint32_t{static_cast<uint8_t>(bytes[1])} << 16) |
         (uint32_t{static_cast<uint8_t>(bytes[2])} << 8) | uint32_t{static_cast<uint8_t>(bytes[3])};
}

absl::Status Malformed(absl::string_view why) { return absl::InvalidArgumentError(absl::StrCat("malformed note: ", why)); }

// Splits "a+b" at the first '+' (Go's chop).
std::pair<absl::string_view, absl::string_view> ChopPlus(absl::string_view s) {
  const size_t at = s.find('+');
  if (at == absl::string_view::npos) return {s, {}};
  return {s.substr(0, at), s.substr(at + 1)};
}

// <name>+<8 hex>+<base64(type || key)>: {name, id, type||key}, the id checked.
absl::StatusOr<std::tuple<std::string, uint32_t, std::string>> ParseKeyText(absl::string_view text) {
  const auto [name, rest] = ChopPlus(text);
  const auto [hex, b64] = ChopPlus(rest);
  uint32_t id = 0;
  std::string key;
  if (hex.size() != 8 || !absl::SimpleHexAtoi(hex, &id) || hex.find_first_not_of("0123456789abcdefABCDEF") != hex.npos ||
      !CanonicalBase64(b64, &key) || !IsValidKeyName(name) || key.empty()) {
    return absl::InvalidArgumentError("malformed key text (want <name>+<8 hex digits>+<base64>)");
  }
  if (KeyId(name, static_cast<uint8_t>(key[0]), absl::string_view(key).substr(1)) != id) {
    return absl::InvalidArgumentError("key text: the key ID does not match the name and key");
  }
  return std::make_tuple(std::string(name), id, std::move(key));
}

}  // namespace note_internal

using namespace note_internal;

bool IsValidKeyName(absl::string_view name) {
  if (name.empty() || absl::StrContains(name, '+')) return false;
  for (size_t i = 0; i < name.size();) {
    const int32_t c = DecodeUtf8(name, i);
    if (c < 0 || IsUnicodeSpace(c)) return false;
  }
  return true;
}

absl::Status ValidateKeyName(absl::string_view name) {
  if (IsValidKeyName(name)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("invalid key name \"", name, "\" (empty, a space, '+' or not UTF-8)"));
}

uint32_t KeyId(absl::string_view name, uint8_t signature_type, absl::string_view public_key) {
  std::string input = absl::StrCat(name, "\n");
  input.push_back(static_cast<char>(signature_type));
  input.append(public_key.data(), public_key.size());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha256(), nullptr);
  return KeyIdOf(absl::string_view(reinterpret_cast<const char*>(digest), 4));
}

std::string FormatVerifierKey(absl::string_view name, uint8_t signature_type, absl::string_view public_key) {
  std::string typed(1, static_cast<char>(signature_type));
  typed.append(public_key.data(), public_key.size());
  return absl::StrFormat("%s+%08x+%s", name, KeyId(name, signature_type, public_key), absl::Base64Escape(typed));
}

bool VerifyEd25519NoteSignature(const Ed25519PublicKey& key, absl::string_view text, absl::string_view signature) {
  return key.Verify(text, signature);
}

absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> Ed25519NoteSigner::FromSignerKey(absl::string_view skey) {
  const auto [private_word, rest1] = ChopPlus(skey);
  const auto [key_word, rest2] = ChopPlus(rest1);
  const auto [name, rest3] = ChopPlus(rest2);
  const auto [hex, b64] = ChopPlus(rest3);
  uint32_t id = 0;
  std::string key;
  if (private_word != "PRIVATE" || key_word != "KEY" || hex.size() != 8 || !absl::SimpleHexAtoi(hex, &id) ||
      hex.find_first_not_of("0123456789abcdefABCDEF") != hex.npos || !CanonicalBase64(b64, &key) ||
      !IsValidKeyName(name) || key.size() != 1 + kEd25519KeySize || key[0] != kSignatureTypeEd25519) {
    return absl::InvalidArgumentError("malformed signer key (want PRIVATE+KEY+<name>+<8 hex>+<base64>)");
  }
  absl::StatusOr<Ed25519PrivateKey> private_key = Ed25519PrivateKey::FromSeed(absl::string_view(key).substr(1));
  if (!private_key.ok()) return private_key.status();
  auto signer = Create(name, *std::move(private_key));
  if (signer.ok() && (*signer)->key_id() != id) {
    return absl::InvalidArgumentError("signer key: the key ID does not match the name and key");
  }
  return signer;
}

absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> Ed25519NoteSigner::FromPem(absl::string_view name,
                                                                              absl::string_view pem) {
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::FromPem(pem);
  if (!key.ok()) return key.status();
  return Create(name, *std::move(key));
}

absl::StatusOr<std::string> Ed25519NoteSigner::Sign(absl::string_view text) const { return key().Sign(text); }

std::string Ed25519NoteSigner::SignerKey() const {
  std::string typed(1, static_cast<char>(kSignatureTypeEd25519));
  typed.append(key().seed());
  return absl::StrFormat("PRIVATE+KEY+%s+%08x+%s", name(), key_id(), absl::Base64Escape(typed));
}

absl::StatusOr<std::string> VerifierKeyFromPem(absl::string_view name, absl::string_view pem) {
  if (absl::Status s = ValidateKeyName(name); !s.ok()) return s;
  absl::StatusOr<Ed25519PublicKey> key = Ed25519PublicKey::FromPem(pem);
  if (!key.ok()) {
    absl::StatusOr<Ed25519PrivateKey> private_key = Ed25519PrivateKey::FromPem(pem);
    if (!private_key.ok()) return absl::InvalidArgumentError("not a PEM Ed25519 public or private key");
    key = private_key->public_key();
  }
  return FormatVerifierKey(name, kSignatureTypeEd25519, key->raw());
}

absl::StatusOr<std::unique_ptr<NoteVerifier>> ParseVerifierKey(absl::string_view vkey) {
  auto parsed = ParseKeyText(vkey);
  if (!parsed.ok()) return parsed.status();
  auto& [name, id, typed] = *parsed;
  absl::StatusOr<Ed25519PublicKey> key = Ed25519PublicKey::FromRaw(absl::string_view(typed).substr(1));
  if (!key.ok()) return key.status();
  // A witness's or the log's key anyone can forge under would make its signatures (a quorum) mean nothing
  // (review 107).
  if (const std::string weak = trust::WeakEd25519Key(reinterpret_cast<const unsigned char*>(key->raw().data()));
      !weak.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("verifier key ", name, ": an Ed25519 key that is ", weak, " is refused"));
  }
  switch (static_cast<uint8_t>(typed[0])) {
    case kSignatureTypeEd25519: {
      auto v = Ed25519NoteVerifier::Create(name, *std::move(key));
      if (!v.ok()) return v.status();
      return std::unique_ptr<NoteVerifier>(*std::move(v));
    }
    case kSignatureTypeCosignatureV1: {
      auto v = CosignatureV1Verifier::Create(name, *std::move(key));
      if (!v.ok()) return v.status();
      return std::unique_ptr<NoteVerifier>(*std::move(v));
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown verifier key type ", static_cast<int>(typed[0])));
  }
}

absl::StatusOr<std::string> SignatureBytes(const NoteSignature& signature) {
  std::string raw;
  if (!SignatureBase64(signature.base64, &raw) || raw.size() < 5) return Malformed("bad signature encoding");
  return raw.substr(4);
}

absl::StatusOr<Note> OpenNote(absl::string_view message, absl::Span<const NoteVerifier* const> known) {
  absl::flat_hash_map<std::pair<std::string, uint32_t>, const NoteVerifier*> by_key;
  for (const NoteVerifier* v : known) {
    if (!by_key.try_emplace(std::make_pair(v->name(), v->key_id()), v).second) {
      return absl::InvalidArgumentError(absl::StrFormat("ambiguous key %s+%08x", v->name(), v->key_id()));
    }
  }
  if (message.size() > kMaxNoteSize) return Malformed("too large");
  if (!IsValidNoteText(message)) return Malformed("not UTF-8, or a control character other than newline");
  const size_t split = message.rfind("\n\n");
  if (split == absl::string_view::npos) return Malformed("no blank line before the signatures");
  Note note;
  note.text = std::string(message.substr(0, split + 1));
  absl::string_view sigs = message.substr(split + 2);
  if (sigs.empty() || sigs.back() != '\n') return Malformed("no signature, or the last line does not end in a newline");
  sigs.remove_suffix(1);
  absl::flat_hash_set<std::pair<std::string, uint32_t>> seen;
  absl::flat_hash_set<std::string> seen_unverified;
  size_t count = 0;
  for (absl::string_view line : absl::StrSplit(sigs, '\n')) {
    if (++count > kMaxSignatures) return Malformed("too many signatures");
    if (!absl::ConsumePrefix(&line, kSignaturePrefix)) return Malformed("a signature line does not start with \"— \"");
    const size_t space = line.find(' ');
    if (space == absl::string_view::npos) return Malformed("a signature line has no signature");
    NoteSignature sig{std::string(line.substr(0, space)), 0, std::string(line.substr(space + 1))};
    std::string raw;
    if (!IsValidKeyName(sig.name) || !SignatureBase64(sig.base64, &raw) || raw.size() < 5) {
      return Malformed("bad key name or signature encoding");
    }
    sig.key_id = KeyIdOf(raw);
    const auto key = std::make_pair(sig.name, sig.key_id);
    auto it = by_key.find(key);
    if (it == by_key.end()) {
      if (seen_unverified.insert(std::string(line)).second) note.unverified.push_back(std::move(sig));
      continue;
    }
    if (!seen.insert(key).second) continue;
    if (!it->second->Verify(note.text, absl::string_view(raw).substr(4))) {
      return absl::PermissionDeniedError(absl::StrFormat("invalid signature for key %s+%08x", sig.name, sig.key_id));
    }
    note.verified.push_back(std::move(sig));
  }
  if (note.verified.empty()) return absl::UnauthenticatedError("note has no signature by a known key");
  return note;
}

absl::StatusOr<std::string> SignNote(absl::string_view text, absl::Span<const NoteSigner* const> signers,
                                     absl::Span<const NoteSignature> keep) {
  if (text.empty() || text.back() != '\n' || !IsValidNoteText(text)) {
    return Malformed("the text must be UTF-8 without control characters and end in a newline");
  }
  absl::flat_hash_set<std::pair<std::string, uint32_t>> signing;
  std::string new_lines;
  for (const NoteSigner* s : signers) {
    if (!IsValidKeyName(s->name())) return absl::InvalidArgumentError(absl::StrCat("invalid signer name \"", s->name(), "\""));
    signing.insert(std::make_pair(s->name(), s->key_id()));
    absl::StatusOr<std::string> sig = s->Sign(text);
    if (!sig.ok()) return sig.status();
    absl::StrAppend(&new_lines, kSignaturePrefix, s->name(), " ", absl::Base64Escape(KeyIdBytes(s->key_id()) + *sig), "\n");
  }
  std::string out = absl::StrCat(text, "\n");
  for (const NoteSignature& sig : keep) {
    std::string raw;
    if (!IsValidKeyName(sig.name) || !SignatureBase64(sig.base64, &raw) || raw.size() < 5 || KeyIdOf(raw) != sig.key_id) {
      return Malformed("a kept signature is malformed");
    }
    if (signing.contains(std::make_pair(sig.name, sig.key_id))) continue;
    absl::StrAppend(&out, kSignaturePrefix, sig.name, " ", sig.base64, "\n");
  }
  out.append(new_lines);
  return out;
}

}  // namespace osh::tlog
