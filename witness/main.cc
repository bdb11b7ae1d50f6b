// policy-log-witness: a C2SP tlog-witness for the policy gateway's verifiable log (docs/witness.md).
#include <pthread.h>
#include <signal.h>

#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "policy/policy_file.h"
#include "trust/secure_path.h"
#include "tlog/cosignature.h"
#include "tlog/ed25519.h"
#include "witness/config.h"
#include "witness/log.h"
#include "witness/server.h"
#include "witness/witness.h"

namespace {

using namespace osh::witness;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

absl::StatusOr<std::unique_ptr<osh::tlog::CosignatureV1Signer>> LoadCosigner(const WitnessConfig& config) {
  absl::StatusOr<std::string> pem = osh::trust::ReadPrivateKeyFile(config.key_file, "witness key");
  if (!pem.ok()) return pem.status();
  absl::StatusOr<osh::tlog::Ed25519PrivateKey> key = osh::tlog::Ed25519PrivateKey::FromPem(*pem);
  if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat(config.key_file, ": ", key.status().message()));
  return osh::tlog::CosignatureV1Signer::Create(config.name, *std::move(key));
}

int Keygen(const std::string& name, const std::string& out) {
  absl::StatusOr<osh::tlog::Ed25519PrivateKey> key = osh::tlog::Ed25519PrivateKey::Generate();
  absl::StatusOr<std::unique_ptr<osh::tlog::CosignatureV1Signer>> signer =
      key.ok() ? osh::tlog::CosignatureV1Signer::Create(name, *key) : key.status();
  if (!signer.ok()) {
    std::cerr << "error: " << signer.status().message() << "\n";
    return kExitUsage;
  }
  if (absl::Status s = osh::policy::CreateFileAtomically(out, key->ToPem(), 0600); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return kExitUsage;
  }
  std::cerr << "witness key written to " << out << " (0600); its cosignature verifier key:\n";
  std::cout << (*signer)->VerifierKey() << "\n";
  return kExitOk;
}

int Init(const std::string& config_path) {
  absl::StatusOr<WitnessConfig> config = ReadWitnessConfig(config_path);
  if (!config.ok()) {
    std::cerr << "error: " << config.status().message() << "\n";
    return kExitUsage;
  }
  if (absl::Status s = InitWitnessState(config->state_file); !s.ok()) {
    std::cerr << "error: state file " << config->state_file << ": " << s.message()
              << (absl::IsAlreadyExists(s) ? " (a witness's state is never started again from nothing)" : "") << "\n";
    return kExitUsage;
  }
  std::cerr << "state file " << config->state_file << " created (0600, empty): the witness cosigns each log's first "
            << "checkpoint it is shown from old 0, and from then on only what extends it\n";
  return kExitOk;
}

int Serve(const std::string& config_path, bool check_only) {
  absl::StatusOr<WitnessConfig> config = ReadWitnessConfig(config_path);
  if (!config.ok()) {
    std::cerr << "error: " << config.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<std::unique_ptr<osh::tlog::CosignatureV1Signer>> cosigner = LoadCosigner(*config);
  if (!cosigner.ok()) {
    std::cerr << "error: witness key: " << cosigner.status().message() << "\n";
    return kExitUsage;
  }
  const std::string verifier_key = (*cosigner)->VerifierKey();
  absl::StatusOr<std::unique_ptr<Witness>> witness = Witness::Create(*std::move(cosigner), config->logs, config->state_file);
  if (!witness.ok()) {
    std::cerr << "error: " << witness.status().message() << "\n";
    return kExitUsage;
  }
  if (check_only) {
    std::cout << "configuration ok: witness " << verifier_key << ", " << config->logs.size() << " log(s)\n";
    return kExitOk;
  }
  // SIGTERM and SIGINT stop the server; they are taken by a thread of ours, never delivered elsewhere.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  absl::StatusOr<std::unique_ptr<WitnessServer>> server = WitnessServer::Bind(**witness, *config);
  if (!server.ok()) {
    WitnessLog(WitnessLogLevel::kError, server.status().message());
    return kExitFailure;
  }
  std::thread stopper([&server, &stop_signals] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    WitnessLog(WitnessLogLevel::kInfo, absl::StrCat("signal ", signal_number, ": stopping"));
    (*server)->Stop();
  });
  stopper.detach();
  const auto [host, port] = *SplitListenAddress(config->listen);
  WitnessLog(WitnessLogLevel::kInfo,
             absl::StrCat("witness ", verifier_key, " listening on ", host, ":", (*server)->port(), " (POST ",
                          config->submission_prefix, kAddCheckpointPath, "); ", config->logs.size(),
                          " log(s); state ", config->state_file));
  (*server)->Run();
  WitnessLog(WitnessLogLevel::kInfo, "stopped");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"policy-log-witness: a C2SP tlog-witness. It cosigns (cosignature/v1) checkpoints of the logs it is "
               "configured with when they extend the last one it cosigned, and refuses forks and shrinking logs.\n"
               "Exit status: 0 stopped by SIGTERM/SIGINT (or --check-config passed), 1 cannot serve, 2 usage or "
               "configuration error."};
  app.set_version_flag("--version", OSH_VERSION);
  std::string config_path;
  bool check_config = false;
  app.add_option("--config", config_path, "TOML configuration file (docs/witness.md)");
  app.add_flag("--check-config", check_config, "read the configuration, key and state, print the witness key, exit");
  auto* keygen = app.add_subcommand("keygen", "Write a new witness key (Ed25519, PKCS#8 PEM, 0600; never overwrites) "
                                              "and print its cosignature verifier key");
  std::string name, out;
  keygen->add_option("--name", name, "the witness's name (its key name, e.g. witness.example/w1)")->required();
  keygen->add_option("--out", out, "the private key file to create")->required();
  auto* init = app.add_subcommand("init", "Create the empty state file of a new witness (--config's state_file, 0600; "
                                          "never over an existing one). Serving refuses to start without it");
  std::string init_config;
  init->add_option("--config", init_config, "TOML configuration file (docs/witness.md)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? kExitOk : kExitUsage;
  }
  if (keygen->parsed()) return Keygen(name, out);
  if (init->parsed()) return Init(init_config);
  if (config_path.empty()) {
    std::cerr << "error: --config is required (or the keygen or init command)\n" << app.help();
    return kExitUsage;
  }
  return Serve(config_path, check_config);
}
