// policyctl trust init | add-key | revoke | show: edit and inspect a trust store file (SPEC §4,
// docs/trust-store.md) without writing JSON by hand. Offline. Every edit re-validates the whole store
// with the gateway's own parser before it replaces the file (atomically, 0600): a command either writes
// a store the gateway will load or changes nothing.
#include <iostream>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "openshell/policy/trust/v1/trust_store.pb.h"
#include "policy/policy_file.h"
#include "trust/keys.h"
#include "trust/trust_store.h"

namespace osh::cli {
namespace {

using google::protobuf::Struct;
using StoreFile = openshell::policy::trust::v1::TrustStoreFile;
using StoreKey = openshell::policy::trust::v1::TrustStoreKey;

// The file, after the gateway's parser has accepted it.
absl::StatusOr<StoreFile> ReadStore(const std::string& path) {
  auto text = policy::ReadFileToString(path);
  if (!text.ok()) return text.status();
  if (auto parsed = trust::TrustStore::Parse(*text); !parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.status().message()));
  }
  StoreFile root;
  if (!google::protobuf::util::JsonStringToMessage(*text, &root).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  return root;
}

// Validates `root` as a trust store and writes it over `path`.
absl::Status WriteStore(const std::string& path, const StoreFile& root) {
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(root, &json, print).ok()) {
    return absl::InternalError("cannot write the trust store as JSON");
  }
  if (auto parsed = trust::TrustStore::Parse(json); !parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the result would not be a valid trust store, nothing written: ",
                                                   parsed.status().message()));
  }
  return WriteFileAtomically(path, json, 0600);
}

// A key entry from a PEM public-key file.
absl::StatusOr<StoreKey> KeyEntry(const std::string& key_id, const std::string& pem_path, const std::string& not_before,
                                  const std::string& not_after) {
  auto pem = policy::ReadFileToString(pem_path);
  if (!pem.ok()) return pem.status();
  auto key = trust::PublicKey::FromPem(*pem);
  if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat(pem_path, ": ", key.status().message()));
  StoreKey entry;
  entry.set_key_id(key_id);
  entry.set_algorithm(key->algorithm());
  entry.set_public_key_pem(*pem);
  entry.set_not_before(not_before);
  entry.set_not_after(not_after);
  return entry;
}

std::string Rfc3339(const std::optional<int64_t>& unix_seconds) {
  if (!unix_seconds) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(*unix_seconds), absl::UTCTimeZone());
}

struct KeyFlags {
  std::string key_id, public_key, not_before, not_after;
  void Add(CLI::App* cmd) {
    cmd->add_option("--key-id", key_id, "the key's id (1..128 of [A-Za-z0-9._:-])")->required();
    cmd->add_option("--public-key", public_key, "PEM public key file (from policyctl keygen --out-public)")->required();
    cmd->add_option("--not-before", not_before, "valid from (RFC 3339, e.g. 2026-01-01T00:00:00Z)");
    cmd->add_option("--not-after", not_after, "valid until (RFC 3339)");
  }
};

}  // namespace

void AddTrustStoreFileCommands(CLI::App* trust, const Options& options, int& exit_code) {
  // init
  {
    auto* cmd = trust->add_subcommand("init", "Create a trust store file with its first key (0600)");
    auto file = std::make_shared<std::string>();
    auto key = std::make_shared<KeyFlags>();
    auto threshold = std::make_shared<uint32_t>(1);
    auto binding = std::make_shared<bool>(false);
    auto force = std::make_shared<bool>(false);
    cmd->add_option("--file", *file, "trust store file to create")->required();
    key->Add(cmd);
    cmd->add_option("--threshold", *threshold, "distinct valid signatures a projection needs")->capture_default_str();
    cmd->add_flag("--require-context-binding", *binding, "refuse projections not bound to their sandbox's context");
    cmd->add_flag("--force", *force, "replace an existing file");
    cmd->callback([&exit_code, file, key, threshold, binding, force] {
      if (!*force && std::filesystem::exists(*file)) {
        exit_code = ReportLocalError(absl::AlreadyExistsError(absl::StrCat(*file, ": exists (use --force to replace it)")));
        return;
      }
      auto entry = KeyEntry(key->key_id, key->public_key, key->not_before, key->not_after);
      if (!entry.ok()) { exit_code = ReportLocalError(entry.status()); return; }
      StoreFile root;
      root.set_threshold(*threshold);
      root.set_require_context_binding(*binding);
      *root.add_keys() = *std::move(entry);
      if (auto s = WriteStore(*file, root); !s.ok()) { exit_code = ReportLocalError(s); return; }
      std::cout << "trust store written: " << *file << " (1 key, threshold " << *threshold << ")\n";
      exit_code = kExitOk;
    });
  }
  // add-key
  {
    auto* cmd = trust->add_subcommand("add-key", "Add a public key to a trust store file");
    auto file = std::make_shared<std::string>();
    auto key = std::make_shared<KeyFlags>();
    auto threshold = std::make_shared<uint32_t>(0);
    cmd->add_option("--file", *file, "trust store file")->required();
    key->Add(cmd);
    cmd->add_option("--threshold", *threshold, "also set the threshold (0: leave it)");
    cmd->callback([&exit_code, file, key, threshold] {
      auto root = ReadStore(*file);
      if (!root.ok()) { exit_code = ReportLocalError(root.status()); return; }
      auto entry = KeyEntry(key->key_id, key->public_key, key->not_before, key->not_after);
      if (!entry.ok()) { exit_code = ReportLocalError(entry.status()); return; }
      *root->add_keys() = *std::move(entry);
      if (*threshold > 0) root->set_threshold(*threshold);
      if (auto s = WriteStore(*file, *root); !s.ok()) { exit_code = ReportLocalError(s); return; }
      std::cout << "added " << key->key_id << " to " << *file << " (" << root->keys_size()
                << " keys); run `policyctl trust reload` or send SIGHUP to the gateway\n";
      exit_code = kExitOk;
    });
  }
  // revoke
  {
    auto* cmd = trust->add_subcommand("revoke", "Revoke a key id in a trust store file (listed or not)");
    auto file = std::make_shared<std::string>();
    auto key_id = std::make_shared<std::string>();
    cmd->add_option("--file", *file, "trust store file")->required();
    cmd->add_option("--key-id", *key_id, "the key id to revoke")->required();
    cmd->callback([&exit_code, file, key_id] {
      if (!trust::IsValidKeyId(*key_id)) {
        exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat("--key-id: invalid key id '", *key_id, "'")));
        return;
      }
      auto root = ReadStore(*file);
      if (!root.ok()) { exit_code = ReportLocalError(root.status()); return; }
      for (const auto& id : root->revoked_key_ids()) {
        if (id == *key_id) {
          std::cout << *key_id << " is already revoked in " << *file << "\n";
          exit_code = kExitOk;
          return;
        }
      }
      root->add_revoked_key_ids(*key_id);
      if (auto s = WriteStore(*file, *root); !s.ok()) { exit_code = ReportLocalError(s); return; }
      std::cout << "revoked " << *key_id << " in " << *file
                << "; run `policyctl trust reload` or send SIGHUP: admitted sandboxes it signed are re-checked at once\n";
      exit_code = kExitOk;
    });
  }
  // show
  {
    auto* cmd = trust->add_subcommand("show", "Show a trust store file as the gateway reads it");
    auto file = std::make_shared<std::string>();
    cmd->add_option("--file", *file, "trust store file")->required();
    cmd->callback([&options, &exit_code, file] {
      auto text = policy::ReadFileToString(*file);
      if (!text.ok()) { exit_code = ReportLocalError(text.status()); return; }
      auto store = trust::TrustStore::Parse(*text);
      if (!store.ok()) {
        exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat(*file, ": ", store.status().message())));
        return;
      }
      if (options.json()) {
        Struct out;
        auto& fields = *out.mutable_fields();
        fields["threshold"].set_number_value(store->threshold());
        fields["require_context_binding"].set_bool_value(store->require_context_binding());
        auto* keys = fields["keys"].mutable_list_value();
        for (const auto& k : store->keys()) {
          auto& f = *keys->add_values()->mutable_struct_value()->mutable_fields();
          f["key_id"].set_string_value(k.key_id);
          f["algorithm"].set_string_value(k.public_key.algorithm());
          f["fingerprint"].set_string_value(k.public_key.fingerprint());
          if (k.not_before_unix) f["not_before"].set_string_value(Rfc3339(k.not_before_unix));
          if (k.not_after_unix) f["not_after"].set_string_value(Rfc3339(k.not_after_unix));
          f["revoked"].set_bool_value(k.revoked);
        }
        auto* revoked = fields["revoked_key_ids"].mutable_list_value();
        for (const auto& id : store->revoked_key_ids()) revoked->add_values()->set_string_value(id);
        std::cout << ToJson(out) << "\n";
      } else {
        std::cout << "threshold: " << store->threshold() << "\nrequire_context_binding: "
                  << (store->require_context_binding() ? "true" : "false") << "\n";
        size_t id_width = 6;
        for (const auto& k : store->keys()) id_width = std::max(id_width, k.key_id.size());
        auto pad = [](const std::string& s, size_t width) { return s + std::string(width > s.size() ? width - s.size() : 0, ' '); };
        std::cout << pad("KEY_ID", id_width + 2) << pad("ALGORITHM", 19) << pad("FINGERPRINT", 18)
                  << pad("NOT_BEFORE", 22) << pad("NOT_AFTER", 22) << "STATE\n";
        for (const auto& k : store->keys()) {
          std::cout << pad(k.key_id, id_width + 2) << pad(k.public_key.algorithm(), 19)
                    << pad(k.public_key.fingerprint().substr(0, 16), 18) << pad(Rfc3339(k.not_before_unix), 22)
                    << pad(Rfc3339(k.not_after_unix), 22) << (k.revoked ? "revoked" : "trusted") << "\n";
        }
      }
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
