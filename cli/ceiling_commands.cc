// policyctl ceiling sign | verify | check (offline) and set | get (admin socket): the signed ceiling
// (managed maximum) every effective policy must stay inside. See docs/decisions-and-ceilings.md.
#include <iostream>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/body_codec.h"
#include "policy/containment.h"
#include "policy/policy_file.h"
#include "trust/ceiling.h"
#include "trust/keys.h"
#include "trust/trust_store.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

absl::StatusOr<trust::CeilingMessage> ReadCeiling(const std::string& path) {
  auto text = policy::ReadFileToString(path);
  if (!text.ok()) return text.status();
  return trust::ParseCeilingJson(*text, path);
}

void PrintInfo(const v1::CeilingInfo& info) {
  std::cout << "ceiling " << info.ceiling_id() << " version " << info.version()
            << (info.audit_label().empty() ? "" : " label '" + info.audit_label() + "'") << "\n"
            << "policy digest: " << info.policy_digest() << "\n"
            << "signed by:     " << absl::StrJoin(info.key_ids(), ", ") << "\n";
}

// Signs with each --key under the --key-id at the same position.
absl::Status SignAll(trust::CeilingMessage* ceiling, const std::vector<std::string>& keys,
                     const std::vector<std::string>& key_ids) {
  if (keys.size() != key_ids.size()) return absl::InvalidArgumentError("give one --key-id for each --key");
  for (size_t i = 0; i < keys.size(); ++i) {
    auto pem = policy::ReadFileToString(keys[i]);
    if (!pem.ok()) return pem.status();
    auto key = trust::PrivateKey::FromPem(*pem);
    if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat(keys[i], ": ", key.status().message()));
    if (auto status = trust::SignCeiling(ceiling, *key, key_ids[i]); !status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

void AddCeilingCommands(CLI::App& app, const Options& options, int& exit_code) {
  auto* ceiling = app.add_subcommand("ceiling", "The signed ceiling (managed maximum) every effective policy must stay inside");
  ceiling->require_subcommand(1);

  // sign
  {
    auto* cmd = ceiling->add_subcommand(
        "sign", "Make a signed ceiling from a policy file (-f, --id, --version), or add a co-signature to one (--ceiling)");
    struct Flags {
      std::string file, existing, id, label, out;
      uint64_t version = 0;
      std::vector<std::string> keys, key_ids;
    };
    auto f = std::make_shared<Flags>();
    auto* source = cmd->add_option_group("source");
    source->add_option("-f,--file", f->file, "the ceiling's policy (YAML or JSON policy file)");
    source->add_option("--ceiling", f->existing, "a signed ceiling file to add signatures to");
    source->require_option(1);
    cmd->add_option("--id", f->id, "ceiling_id (with -f)");
    cmd->add_option("--version", f->version, "ceiling version, above the one in force (with -f)");
    cmd->add_option("--label", f->label, "audit label (with -f)");
    cmd->add_option("--key", f->keys, "PEM private key (repeat with --key-id for k-of-n)")->required();
    cmd->add_option("--key-id", f->key_ids, "trust-store key id of each --key, in order")->required();
    cmd->add_option("--out", f->out, "where to write the signed ceiling (JSON)")->required();
    cmd->callback([&exit_code, f] {
      trust::CeilingMessage c;
      if (!f->file.empty()) {
        if (f->id.empty() || f->version == 0) {
          exit_code = ReportLocalError(absl::InvalidArgumentError("-f needs --id and --version (at least 1)"));
          return;
        }
        auto policy = policy::LoadPolicyFile(f->file);
        if (!policy.ok()) { exit_code = ReportLocalError(policy.status()); return; }
        c = trust::MakeCeiling(*policy, f->id, f->version, f->label, absl::ToUnixSeconds(absl::Now()));
      } else {
        if (!f->id.empty() || f->version != 0 || !f->label.empty()) {
          exit_code = ReportLocalError(absl::InvalidArgumentError("--id, --version and --label are fixed by the signed --ceiling"));
          return;
        }
        auto existing = ReadCeiling(f->existing);
        if (!existing.ok()) { exit_code = ReportLocalError(existing.status()); return; }
        c = *std::move(existing);
      }
      if (auto status = SignAll(&c, f->keys, f->key_ids); !status.ok()) { exit_code = ReportLocalError(status); return; }
      if (auto status = WriteFileAtomically(f->out, trust::CeilingToJson(c), 0644); !status.ok()) {
        exit_code = ReportLocalError(status);
        return;
      }
      std::cout << "wrote " << f->out << ": ceiling " << c.ceiling_id() << " version " << c.version() << ", "
                << c.signatures_size() << " signature(s), policy digest " << c.policy_digest() << "\n";
      exit_code = kExitOk;
    });
  }
  // verify
  {
    auto* cmd = ceiling->add_subcommand("verify", "Verify a signed ceiling file against a trust store (offline)");
    auto file = std::make_shared<std::string>();
    auto trust_path = std::make_shared<std::string>();
    auto in_force = std::make_shared<uint64_t>(0);
    cmd->add_option("ceiling", *file, "signed ceiling file")->required();
    cmd->add_option("--trust-store", *trust_path, "trust store JSON")->required();
    cmd->add_option("--in-force-version", *in_force, "also refuse as rollback unless above this version");
    auto expected_id = std::make_shared<std::string>();
    cmd->add_option("--ceiling-id", *expected_id,
                    "also refuse (invalid_ceiling) unless its ceiling_id is this one, as a gateway with ceiling_id set "
                    "does");
    cmd->callback([&options, &exit_code, file, trust_path, in_force, expected_id] {
      auto c = ReadCeiling(*file);
      if (!c.ok()) { exit_code = ReportLocalError(c.status()); return; }
      auto store = trust::TrustStore::Load(*trust_path);
      if (!store.ok()) { exit_code = ReportLocalError(store.status()); return; }
      trust::CeilingCheckInput input;
      input.trust_store = &*store;
      input.now_unix = absl::ToUnixSeconds(absl::Now());
      if (*in_force > 0) input.in_force_version = *in_force;
      input.expected_ceiling_id = *expected_id;
      const auto result = trust::CheckCeiling(*c, input);
      if (options.json()) {
        google::protobuf::Struct out;
        (*out.mutable_fields())["ok"].set_bool_value(result.ok());
        (*out.mutable_fields())["reason"].set_string_value(result.reason);
        (*out.mutable_fields())["detail"].set_string_value(result.detail);
        std::cout << ToJson(out) << "\n";
      } else if (result.ok()) {
        std::cout << "ok: ceiling " << c->ceiling_id() << " version " << c->version() << " verified by "
                  << absl::StrJoin(result.verified_key_ids, ", ") << "\n";
      } else {
        std::cout << result.Message() << "\n";
      }
      exit_code = result.ok() ? kExitOk : kExitRefused;
    });
  }
  // check
  {
    auto* cmd = ceiling->add_subcommand(
        "check", "Explain offline whether a candidate policy is inside a ceiling (exit 0 inside, 1 outside or unknown, 2 bad input)");
    auto candidate_path = std::make_shared<std::string>();
    auto ceiling_path = std::make_shared<std::string>();
    cmd->add_option("-f,--file", *candidate_path, "candidate policy file (YAML or JSON)")->required();
    cmd->add_option("--ceiling", *ceiling_path, "a signed ceiling file, or a plain policy file")->required();
    cmd->callback([&options, &exit_code, candidate_path, ceiling_path] {
      auto candidate = policy::LoadPolicyFile(*candidate_path);
      if (!candidate.ok()) { exit_code = ReportLocalError(candidate.status()); return; }
      openshell::sandbox::v1::SandboxPolicy ceiling_policy;
      if (auto signed_ceiling = ReadCeiling(*ceiling_path); signed_ceiling.ok()) {
        auto parsed = policy::ParseBodyStrict(signed_ceiling->body());
        if (!parsed.ok()) { exit_code = ReportLocalError(parsed.status()); return; }
        ceiling_policy = *std::move(parsed);
      } else {
        auto plain = policy::LoadPolicyFile(*ceiling_path);
        if (!plain.ok()) { exit_code = ReportLocalError(plain.status()); return; }
        ceiling_policy = *std::move(plain);
      }
      const auto result = policy::CheckContainment(*candidate, ceiling_policy);
      const char* verdict = result.verdict == policy::Containment::kInside    ? "inside"
                            : result.verdict == policy::Containment::kOutside ? "outside"
                                                                              : "unknown";
      if (options.json()) {
        google::protobuf::Struct out;
        (*out.mutable_fields())["verdict"].set_string_value(verdict);
        (*out.mutable_fields())["detail"].set_string_value(result.detail);
        std::cout << ToJson(out) << "\n";
      } else if (result.verdict == policy::Containment::kInside) {
        std::cout << "inside: " << *candidate_path << " stays within the ceiling\n";
      } else {
        std::cout << result.ToStatus().message() << "\n";
      }
      exit_code = result.verdict == policy::Containment::kInside ? kExitOk : kExitRefused;
    });
  }
  // set
  {
    auto* cmd = ceiling->add_subcommand("set", "Put a signed ceiling in force on the gateway (allowed under any driver)");
    auto file = std::make_shared<std::string>();
    cmd->add_option("ceiling", *file, "signed ceiling file")->required();
    cmd->callback([&options, &exit_code, file] {
      auto c = ReadCeiling(*file);
      if (!c.ok()) { exit_code = ReportLocalError(c.status()); return; }
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::SetCeilingRequest request;
      *request.mutable_ceiling() = *c;
      v1::SetCeilingResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->SetCeiling(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        PrintInfo(response.ceiling());
        std::cout << "in force; " << response.sandboxes_outside() << " admitted sandbox(es) outside it\n";
      }
      exit_code = kExitOk;
    });
  }
  // get
  {
    auto* cmd = ceiling->add_subcommand("get", "Show the ceiling in force (its policy as YAML), or save it verbatim");
    auto out_path = std::make_shared<std::string>();
    cmd->add_option("--out", *out_path, "write the signed ceiling file (JSON, verbatim with its signatures)");
    cmd->callback([&options, &exit_code, out_path] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::GetCeilingResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->GetCeiling(ctx.get(), v1::GetCeilingRequest(), &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (!out_path->empty()) {
        if (auto status = WriteFileAtomically(*out_path, trust::CeilingToJson(response.ceiling()), 0644); !status.ok()) {
          exit_code = ReportLocalError(status);
          return;
        }
      }
      if (options.json()) {
        std::cout << ToJson(response.info()) << "\n";
      } else {
        PrintInfo(response.info());
        openshell::sandbox::v1::SandboxPolicy policy;
        if (policy.ParseFromString(response.ceiling().body())) std::cout << "---\n" << policy::PolicyToYaml(policy);
      }
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
