// policyctl profile set | get | list | delete (admin socket): the provider-profile catalogue the OpenShell
// interceptor serves and composes (docs/openshell-interceptor.md, "Provider profiles"); profile sign
// (offline): an authority's governance signature on a profile file, kept as it is by `profile set`. Profile
// files are upstream's YAML form (../shared/interceptor/README.md §7), read by
// policy::LoadProviderProfileFile.
#include <iostream>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "gateway/core/governance_signature.h"
#include "trust/keys.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/policy_file.h"
#include "policy/provider_profile.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

void PrintProfileSummary(const v1::ProviderProfileInfo& info) {
  std::cout << "profile " << info.profile().id() << " (" << info.profile().display_name() << ")\n"
            << "hash:      " << info.profile_hash() << "\n"
            << "signed:    " << (info.signature_kid().empty() ? "no" : "kid " + info.signature_kid()) << "\n";
}

}  // namespace

void AddProfileCommands(CLI::App& app, const Options& options, int& exit_code) {
  auto* profile = app.add_subcommand(
      "profile", "The provider-profile catalogue the OpenShell interceptor serves and checks against the ceiling");
  profile->require_subcommand(1);

  // set
  {
    auto* cmd = profile->add_subcommand(
        "set", "Create or replace a provider profile from a profile file (upstream's YAML form); signed when the "
               "gateway has a signing key, or kept as signed when the file is (profile sign; behind the mutation "
               "gate)");
    auto file = std::make_shared<std::string>();
    cmd->add_option("-f,--file", *file, "profile file (YAML or JSON)")->required();
    cmd->callback([&options, &exit_code, file] {
      auto parsed = policy::LoadProviderProfileFile(*file);
      if (!parsed.ok()) { exit_code = ReportLocalError(parsed.status()); return; }
      v1::SetProviderProfileRequest request;
      *request.mutable_profile() = *std::move(parsed);
      v1::ProviderProfileInfo response;
      if (!CallAdmin(options, exit_code, &v1::PolicyGateway::Stub::SetProviderProfile, request, &response)) return;
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        PrintProfileSummary(response);
      }
      exit_code = kExitOk;
    });
  }
  // sign (offline)
  {
    auto* cmd = profile->add_subcommand(
        "sign", "Sign a profile file with an authority's Ed25519 key, offline (README §8's governance signature); "
                "`profile set` keeps the signature, so a gateway without a signing key of its own serves it");
    struct Flags {
      std::string file, key, out;
    };
    auto f = std::make_shared<Flags>();
    cmd->add_option("-f,--file", f->file, "profile file (YAML or JSON), unsigned")->required();
    cmd->add_option("--key", f->key, "the authority's Ed25519 private key (PEM), a trust-store key of the gateways "
                                     "that will serve the profile")->required();
    cmd->add_option("--out", f->out, "where to write the signed profile (YAML, as `profile set -f` reads it)")->required();
    cmd->callback([&options, &exit_code, f] {
      auto parsed = policy::LoadProviderProfileFile(f->file);
      if (!parsed.ok()) { exit_code = ReportLocalError(parsed.status()); return; }
      if (policy::ProviderProfileSigned(*parsed)) {
        exit_code = ReportLocalError(absl::InvalidArgumentError(
            absl::StrCat(f->file, ": signed already (its openshell.nvidia.com/profile-* annotations): sign the "
                                  "unsigned file")));
        return;
      }
      auto pem = policy::ReadFileToString(f->key);
      if (!pem.ok()) { exit_code = ReportLocalError(pem.status()); return; }
      auto key = trust::PrivateKey::FromPem(*pem);
      if (!key.ok()) { exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat(f->key, ": ", key.status().message()))); return; }
      auto kid = gateway::SignProviderProfile(*key, &*parsed);
      if (!kid.ok()) { exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat(f->key, ": ", kid.status().message()))); return; }
      if (auto written = WriteFileAtomically(f->out, policy::ProviderProfileToYaml(*parsed), 0644); !written.ok()) {
        exit_code = ReportLocalError(written);
        return;
      }
      const std::string& hash = parsed->annotations().at(policy::kProfileHashAnnotation);
      if (options.json()) {
        google::protobuf::Struct out;
        (*out.mutable_fields())["file"].set_string_value(f->out);
        (*out.mutable_fields())["id"].set_string_value(parsed->id());
        (*out.mutable_fields())["profile_hash"].set_string_value(hash);
        (*out.mutable_fields())["signature_kid"].set_string_value(*kid);
        std::cout << ToJson(out) << "\n";
      } else {
        std::cout << "wrote " << f->out << ": profile " << parsed->id() << ", hash " << hash << ", signed with kid "
                  << *kid << "\n";
      }
      exit_code = kExitOk;
    });
  }
  // get
  {
    auto* cmd = profile->add_subcommand("get", "Show a provider profile as stored (YAML, or -o json with its hash)");
    auto id = std::make_shared<std::string>();
    cmd->add_option("id", *id, "profile id")->required();
    cmd->callback([&options, &exit_code, id] {
      v1::GetProviderProfileRequest request;
      request.set_id(*id);
      v1::ProviderProfileInfo response;
      if (!CallAdmin(options, exit_code, &v1::PolicyGateway::Stub::GetProviderProfile, request, &response)) return;
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        std::cout << "# hash " << response.profile_hash()
                  << (response.signature_kid().empty() ? "" : absl::StrCat(", signed by kid ", response.signature_kid()))
                  << "\n"
                  << policy::ProviderProfileToYaml(response.profile());
      }
      exit_code = kExitOk;
    });
  }
  // list
  {
    auto* cmd = profile->add_subcommand("list", "List the catalogue's profiles and the revision it is served with");
    cmd->callback([&options, &exit_code] {
      v1::ListProviderProfilesResponse response;
      if (!CallAdmin(options, exit_code, &v1::PolicyGateway::Stub::ListProviderProfiles,
                     v1::ListProviderProfilesRequest(), &response)) {
        return;
      }
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& info : response.profiles()) {
          rows.push_back({info.profile().id(), info.profile().display_name(),
                          absl::StrCat(info.profile().endpoints_size()),
                          info.signature_kid().empty() ? "-" : info.signature_kid(), info.profile_hash()});
        }
        PrintTable({"ID", "DISPLAY NAME", "ENDPOINTS", "SIGNED BY", "HASH"}, rows);
        std::cout << "revision " << response.revision() << " (" << response.profiles_size() << " profile(s))\n";
      }
      exit_code = kExitOk;
    });
  }
  // delete
  {
    auto* cmd = profile->add_subcommand("delete", "Remove a provider profile (behind the mutation gate)");
    auto id = std::make_shared<std::string>();
    cmd->add_option("id", *id, "profile id")->required();
    cmd->callback([&options, &exit_code, id] {
      v1::DeleteProviderProfileRequest request;
      request.set_id(*id);
      v1::DeleteProviderProfileResponse response;
      if (!CallAdmin(options, exit_code, &v1::PolicyGateway::Stub::DeleteProviderProfile, request, &response)) return;
      std::cout << (options.json() ? ToJson(response) : "deleted profile " + *id) << "\n";
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
