// policyctl keygen | sign | verify (offline, no gateway needed) and trust reload (admin socket).
#include <iostream>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "trust/encoding.h"
#include "trust/keys.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;

struct ContextFlags {
  std::string sandbox, subject;
  std::vector<std::string> attrs;
  void Add(CLI::App* cmd, const char* what) {
    cmd->add_option("--sandbox", sandbox, absl::StrCat("sandbox id ", what));
    cmd->add_option("--subject", subject, "user subject (with --sandbox)");
    cmd->add_option("--attr", attrs, "context attribute key=value (repeatable, with --sandbox)");
  }
  absl::StatusOr<std::optional<drv::RuntimeContext>> Build() const {
    if (sandbox.empty()) {
      if (!subject.empty() || !attrs.empty()) return absl::InvalidArgumentError("--subject and --attr need --sandbox");
      return std::optional<drv::RuntimeContext>();
    }
    if (subject.empty()) return absl::InvalidArgumentError("--sandbox needs --subject");
    drv::RuntimeContext context;
    context.set_sandbox_id(sandbox);
    context.set_user_subject(subject);
    if (auto status = ParsePairs(attrs, "--attr", context.mutable_attributes()); !status.ok()) return status;
    return std::optional<drv::RuntimeContext>(context);
  }
};

}  // namespace

void AddTrustCommands(CLI::App& app, const Options& options, int& exit_code) {
  // keygen
  {
    auto* cmd = app.add_subcommand("keygen", "Generate a signing key pair (private key written 0600)");
    auto algorithm = std::make_shared<std::string>("ed25519");
    auto private_path = std::make_shared<std::string>();
    auto public_path = std::make_shared<std::string>();
    cmd->add_option("--algorithm", *algorithm, "ed25519 | ecdsa-p256")
        ->check(CLI::IsMember({"ed25519", "ecdsa-p256"}))->capture_default_str();
    cmd->add_option("--out-private", *private_path, "PEM private key file (PKCS#8)")->required();
    cmd->add_option("--out-public", *public_path, "PEM public key file (for the trust store)")->required();
    cmd->callback([&exit_code, algorithm, private_path, public_path] {
      auto key = trust::PrivateKey::Generate(*algorithm);
      if (!key.ok()) { exit_code = ReportLocalError(key.status()); return; }
      if (auto s = WriteFileAtomically(*private_path, key->ToPem(), 0600); !s.ok()) { exit_code = ReportLocalError(s); return; }
      if (auto s = WriteFileAtomically(*public_path, key->PublicKeyPem(), 0644); !s.ok()) { exit_code = ReportLocalError(s); return; }
      auto pub = trust::PublicKey::FromPem(key->PublicKeyPem());
      std::cout << key->algorithm() << " key written: " << *private_path << " (private, 0600), " << *public_path
                << " (public, fingerprint " << (pub.ok() ? pub->fingerprint() : "?") << ")\n";
      exit_code = kExitOk;
    });
  }
  // sign
  {
    auto* cmd = app.add_subcommand("sign", "Make a signed projection (protobuf JSON) from a policy file");
    auto policy_path = std::make_shared<std::string>();
    auto keys = std::make_shared<std::vector<std::string>>();
    auto key_ids = std::make_shared<std::vector<std::string>>();
    auto context = std::make_shared<ContextFlags>();
    auto version = std::make_shared<uint64_t>(0);
    auto expires_in = std::make_shared<int64_t>(0);
    auto audit = std::make_shared<std::vector<std::string>>();
    auto out_path = std::make_shared<std::string>();
    cmd->add_option("--policy", *policy_path, "policy file (YAML or JSON)")->required();
    cmd->add_option("--key", *keys, "PEM private key (repeat with --key-id for k-of-n signatures)")->required();
    cmd->add_option("--key-id", *key_ids, "trust-store key id of each --key, in the same order")->required();
    context->Add(cmd, "to bind the projection to (context_digest)");
    cmd->add_option("--version", *version, "policy_version (0: unversioned)");
    cmd->add_option("--expires-in", *expires_in, "seconds until expires_at_unix (0: never)");
    cmd->add_option("--audit", *audit, "audit_context key=value (repeatable)");
    cmd->add_option("--out", *out_path, "write here instead of standard output");
    cmd->callback([&exit_code, policy_path, keys, key_ids, context, version, expires_in, audit, out_path] {
      if (keys->size() != key_ids->size()) {
        exit_code = ReportLocalError(absl::InvalidArgumentError("give one --key-id for each --key"));
        return;
      }
      auto policy = policy::LoadPolicyFile(*policy_path);
      if (!policy.ok()) { exit_code = ReportLocalError(policy.status()); return; }
      auto bound = context->Build();
      if (!bound.ok()) { exit_code = ReportLocalError(bound.status()); return; }
      drv::Projection p;
      p.set_surface_id("openshell.sandbox.v1");
      p.set_body(policy::SerializeDeterministic(*policy));
      p.set_policy_digest(policy::Sha256Hex(p.body()));
      p.set_policy_version(*version);
      if (*bound) p.set_context_digest(trust::ContextDigest(**bound));
      const int64_t now = absl::ToUnixSeconds(absl::Now());
      p.set_issued_at_unix(now);
      if (*expires_in > 0) p.set_expires_at_unix(now + *expires_in);
      if (auto s = ParsePairs(*audit, "--audit", p.mutable_audit_context()); !s.ok()) { exit_code = ReportLocalError(s); return; }
      const std::string signed_bytes = trust::SignedBytes(p);
      for (size_t i = 0; i < keys->size(); ++i) {
        auto pem = policy::ReadFileToString((*keys)[i]);
        if (!pem.ok()) { exit_code = ReportLocalError(pem.status()); return; }
        auto key = trust::PrivateKey::FromPem(*pem);
        if (!key.ok()) { exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat((*keys)[i], ": ", key.status().message()))); return; }
        auto signature = key->Sign(signed_bytes);
        if (!signature.ok()) { exit_code = ReportLocalError(signature.status()); return; }
        if (i == 0) {
          p.set_signature(*signature);
          p.set_signing_key_id((*key_ids)[i]);
        } else {
          auto* extra = p.add_additional_signatures();
          extra->set_key_id((*key_ids)[i]);
          extra->set_signature(*signature);
        }
      }
      const std::string json = ToJson(p, /*pretty=*/true) + "\n";
      if (out_path->empty()) {
        std::cout << json;
      } else if (auto s = WriteFileAtomically(*out_path, json, 0644); !s.ok()) {
        exit_code = ReportLocalError(s);
        return;
      }
      exit_code = kExitOk;
    });
  }
  // verify
  {
    auto* cmd = app.add_subcommand("verify",
                                   "Check a projection against a trust store, offline: first line `ok` or the reason code");
    auto projection_path = std::make_shared<std::string>();
    auto trust_path = std::make_shared<std::string>();
    auto context = std::make_shared<ContextFlags>();
    auto surfaces = std::make_shared<std::vector<std::string>>();
    auto now = std::make_shared<int64_t>(0);
    auto skew = std::make_shared<int64_t>(60);
    cmd->add_option("--projection", *projection_path, "projection JSON (from fetch or sign)")->required();
    cmd->add_option("--trust-store", *trust_path, "trust store JSON")->required();
    context->Add(cmd, "the projection is for (checks context_digest)");
    cmd->add_option("--accepted-surface", *surfaces, "accepted surface (repeatable; default openshell.sandbox.v1)");
    cmd->add_option("--now", *now, "judge as of this Unix time (default: now)");
    cmd->add_option("--skew", *skew, "clock skew in seconds")->capture_default_str();
    cmd->callback([&options, &exit_code, projection_path, trust_path, context, surfaces, now, skew] {
      auto text = policy::ReadFileToString(*projection_path);
      if (!text.ok()) { exit_code = ReportLocalError(text.status()); return; }
      drv::Projection projection;
      google::protobuf::util::JsonParseOptions parse_options;
      parse_options.ignore_unknown_fields = true;  // unknown envelope fields are ignored, as on the wire
      if (auto s = google::protobuf::util::JsonStringToMessage(*text, &projection, parse_options); !s.ok()) {
        exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat(*projection_path, ": not a projection in protobuf JSON: ", s.message().as_string())));
        return;
      }
      auto store = trust::TrustStore::Load(*trust_path);
      if (!store.ok()) { exit_code = ReportLocalError(store.status()); return; }
      auto bound = context->Build();
      if (!bound.ok()) { exit_code = ReportLocalError(bound.status()); return; }
      std::vector<std::string> accepted = surfaces->empty() ? std::vector<std::string>{"openshell.sandbox.v1"} : *surfaces;
      trust::CheckInput input;
      input.context = *bound ? &**bound : nullptr;
      input.accepted_surfaces = &accepted;
      input.trust_store = &*store;
      input.now_unix = *now != 0 ? *now : absl::ToUnixSeconds(absl::Now());
      input.clock_skew_s = *skew;
      const auto result = trust::CheckProjection(projection, input);
      if (options.json()) {
        google::protobuf::Struct doc;
        auto& fields = *doc.mutable_fields();
        fields["result"].set_string_value(result.ok() ? "ok" : result.reason);
        fields["detail"].set_string_value(result.detail);
        fields["policy_digest"].set_string_value(projection.policy_digest());
        // 64-bit integers as decimal strings, as protobuf's JSON mapping writes them (a double loses precision).
        fields["policy_version"].set_string_value(absl::StrCat(projection.policy_version()));
        auto* ids = fields["verified_key_ids"].mutable_list_value();
        for (const auto& id : result.verified_key_ids) ids->add_values()->set_string_value(id);
        fields["context_checked"].set_bool_value(bool(*bound));
        std::cout << ToJson(doc) << "\n";
      } else if (result.ok()) {
        std::cout << "ok\n"
                  << "digest:        " << projection.policy_digest() << "\n"
                  << "version:       " << projection.policy_version() << "\n"
                  << "verified keys: " << absl::StrJoin(result.verified_key_ids, ", ") << "\n";
        if (!*bound && !projection.context_digest().empty()) {
          std::cout << "note:          bound to a runtime context that was not checked (give --sandbox/--subject)\n";
        }
      } else {
        std::cout << result.reason << "\n" << result.Message() << "\n";
      }
      exit_code = result.ok() ? kExitOk : kExitRefused;
    });
  }
  // trust reload
  {
    auto* trust = app.add_subcommand("trust", "Trust stores: edit and show a file (offline); reload the gateway's");
    trust->require_subcommand(1);
    AddTrustStoreFileCommands(trust, options, exit_code);
    auto* cmd = trust->add_subcommand("reload", "Reload the gateway's trust store (a bad file keeps the last good one)");
    cmd->callback([&options, &exit_code] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::ReloadTrustStoreResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->ReloadTrustStore(ctx.get(), v1::ReloadTrustStoreRequest(), &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) std::cout << ToJson(response) << "\n";
      else std::cout << "reloaded " << response.trust_store() << ": " << response.keys() << " key(s), threshold " << response.threshold() << "\n";
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
