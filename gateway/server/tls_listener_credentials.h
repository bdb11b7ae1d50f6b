// TLS credentials for the gateway's TCP listeners (sandbox_listen, admin_listen), reloadable on SIGHUP.
//
// The operator's files (tls_cert, tls_key, tls_client_ca) are read and checked here with OpenSSL — the
// certificate chain parses, the key parses and matches the first certificate, the CA bundle parses —
// and only then copied into a private folder (0700, files 0600) that gRPC's FileWatcherCertificateProvider
// watches. So gRPC never sees a bad or half-written file: a bad file at start-up is a start-up error, and a
// bad file at a reload leaves the last good material in force (the reload returns why). gRPC picks staged
// material up within its refresh interval (1 s) for new handshakes; open connections keep theirs, so
// watch streams are not dropped by a rotation.
//
// Thread-safe: Reload may run while the servers serve.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace osh::gateway {

struct TlsFiles {
  std::string cert;       // PEM certificate chain, leaf first
  std::string key;        // PEM private key of the leaf
  std::string client_ca;  // PEM CA bundle for client certificates; "": none asked for
};

// What a check of the files found, for the log: the leaf's subject and expiry.
struct TlsSummary {
  std::string subject;
  int64_t not_after_unix = 0;
  bool client_certificates_required = false;
};

// Reads and checks `files` (see above). INVALID_ARGUMENT naming the file and what is wrong.
absl::StatusOr<TlsSummary> CheckTlsFiles(const TlsFiles& files);

// The audit actor of an admin_listen caller, from its client certificate (the PEM gRPC's auth context
// gives as x509_pem_cert): "x509:<subject>; issuer <issuer>; serial <hex>", names in RFC 2253. Two CAs,
// or one reissuing, can give two certificates one subject: the subject alone named no one (review 117).
// "" when the text holds no certificate.
std::string CertificateActor(std::string_view pem);

class TlsListenerCredentials {
 public:
  // Checks `files`, stages them under `staging_dir` (created 0700) and builds credentials that require
  // and verify a client certificate when files.client_ca is set.
  static absl::StatusOr<std::unique_ptr<TlsListenerCredentials>> Create(const TlsFiles& files,
                                                                        const std::string& staging_dir);

  // Re-reads the operator's files; on success stages them and returns the new summary. On error nothing
  // changes and the last good material stays in force.
  absl::StatusOr<TlsSummary> Reload();

  std::shared_ptr<grpc::ServerCredentials> credentials() const { return credentials_; }
  const TlsSummary& initial_summary() const { return initial_; }

 private:
  TlsListenerCredentials(TlsFiles files, std::string staging_dir) : files_(std::move(files)), staging_dir_(std::move(staging_dir)) {}
  absl::StatusOr<TlsSummary> CheckAndStage();

  const TlsFiles files_;
  const std::string staging_dir_;
  absl::Mutex mu_;  // one reload at a time
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // of the staged material (folders gen-<N>)
  TlsSummary initial_;
  std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> provider_;
  std::shared_ptr<grpc::ServerCredentials> credentials_;
};

}  // namespace osh::gateway
