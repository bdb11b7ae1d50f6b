#include "gateway/server/tls_listener_credentials.h"

#include <stdio.h>

#include <ctime>
#include <filesystem>
#include <memory>

#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"
#include "drivers/unix_server.h"
#include "trust/secure_path.h"
#include "policy/policy_file.h"

namespace osh::gateway {
namespace {

using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;

constexpr unsigned kRefreshIntervalS = 1;

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "not PEM";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// Every certificate in a PEM text, in order; INVALID_ARGUMENT naming `path` when there is none or one is bad.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem, const std::string& key,
                                                       const std::string& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  std::vector<X509Ptr> certificates;
  ERR_clear_error();
  while (X509* certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certificates.emplace_back(certificate, &X509_free);
  }
  const unsigned long error = ERR_peek_last_error();
  // The loop ends on "no start line" at the end of the text; anything else is a damaged certificate.
  if (error != 0 && !(ERR_GET_LIB(error) == ERR_LIB_PEM && ERR_GET_REASON(error) == PEM_R_NO_START_LINE)) {
    return absl::InvalidArgumentError(absl::StrCat(key, " ", path, ": a certificate does not parse: ", OpenSslError()));
  }
  ERR_clear_error();
  if (certificates.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(key, " ", path, ": no PEM certificate in it"));
  }
  return certificates;
}

int64_t NotAfter(const X509* certificate) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(certificate), &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string NameOf(const X509_NAME* name) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string Subject(const X509* certificate) { return NameOf(X509_get_subject_name(certificate)); }

struct CheckedFiles {
  TlsSummary summary;
  std::string cert, key, client_ca;  // the PEM texts, as read
};

}  // namespace

std::string CertificateActor(std::string_view pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  X509Ptr certificate(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
  ERR_clear_error();
  if (certificate == nullptr) return "";
  std::unique_ptr<BIGNUM, decltype(&BN_free)> serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(certificate.get()), nullptr),
                                                     &BN_free);
  std::string hex = "?";
  if (serial != nullptr) {
    char* text = BN_bn2hex(serial.get());
    if (text != nullptr) {
      hex = text;
      OPENSSL_free(text);
    }
  }
  return absl::StrCat("x509:", Subject(certificate.get()), "; issuer ", NameOf(X509_get_issuer_name(certificate.get())),
                      "; serial ", hex);
}

namespace {

absl::StatusOr<CheckedFiles> ReadAndCheck(const TlsFiles& files) {
  CheckedFiles checked;
  auto cert = policy::ReadFileToString(files.cert);
  if (!cert.ok()) return absl::InvalidArgumentError(absl::StrCat("tls_cert: ", cert.status().message()));
  // The listeners' private key: no one else may read or replace it (OpenSSH's rule, as for the signing keys).
  auto key = trust::ReadPrivateKeyFile(files.key, "tls_key");
  if (!key.ok()) return absl::InvalidArgumentError(std::string(key.status().message()));
  auto chain = ParseCertificates(*cert, "tls_cert", files.cert);
  if (!chain.ok()) return chain.status();
  std::unique_ptr<BIO, decltype(&BIO_free)> key_bio(BIO_new_mem_buf(key->data(), static_cast<int>(key->size())), &BIO_free);
  ERR_clear_error();
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> private_key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  if (private_key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tls_key ", files.key, ": no PEM private key in it: ", OpenSslError()));
  }
  if (X509_check_private_key(chain->front().get(), private_key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("tls_key ", files.key, " does not match the certificate in tls_cert ",
                                                   files.cert));
  }
  checked.summary.subject = Subject(chain->front().get());
  checked.summary.not_after_unix = NotAfter(chain->front().get());
  checked.cert = *std::move(cert);
  checked.key = *std::move(key);
  if (!files.client_ca.empty()) {
    // It decides who may call: no one else may replace it (a group-writable CA mints admin certificates;
    // review 106).
    auto ca = trust::ReadFileNoOneElseCanWrite(files.client_ca, "tls_client_ca");
    if (!ca.ok()) return absl::InvalidArgumentError(std::string(ca.status().message()));
    if (auto parsed = ParseCertificates(*ca, "tls_client_ca", files.client_ca); !parsed.ok()) return parsed.status();
    checked.client_ca = *std::move(ca);
    checked.summary.client_certificates_required = true;
  }
  return checked;
}

}  // namespace

absl::StatusOr<TlsSummary> CheckTlsFiles(const TlsFiles& files) {
  auto checked = ReadAndCheck(files);
  if (!checked.ok()) return checked.status();
  return checked->summary;
}

absl::StatusOr<std::unique_ptr<TlsListenerCredentials>> TlsListenerCredentials::Create(const TlsFiles& files,
                                                                                       const std::string& staging_dir) {
  if (auto made = trust::EnsurePrivateDir(staging_dir); !made.ok()) return made;
  std::unique_ptr<TlsListenerCredentials> credentials(new TlsListenerCredentials(files, staging_dir));
  auto staged = credentials->CheckAndStage();
  if (!staged.ok()) return staged.status();
  credentials->initial_ = *staged;
  const std::string key = staging_dir + "/current/key.pem", cert = staging_dir + "/current/cert.pem";
  credentials->provider_ =
      files.client_ca.empty()
          ? std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(key, cert, kRefreshIntervalS)
          : std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(key, cert, staging_dir + "/current/client_ca.pem",
                                                                                 kRefreshIntervalS);
  grpc::experimental::TlsServerCredentialsOptions options(credentials->provider_);
  options.watch_identity_key_cert_pairs();
  if (!files.client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  credentials->credentials_ = grpc::experimental::TlsServerCredentials(options);
  if (credentials->credentials_ == nullptr) return absl::InternalError("gRPC refused the TLS server options");
  return credentials;
}

absl::StatusOr<TlsSummary> TlsListenerCredentials::Reload() { return CheckAndStage(); }

absl::StatusOr<TlsSummary> TlsListenerCredentials::CheckAndStage() {
  absl::MutexLock lock(&mu_);
  auto checked = ReadAndCheck(files_);
  if (!checked.ok()) return checked.status();
  // Each generation is written whole into a folder of its own, then `current` (what the watcher reads
  // through) is switched to it by one rename: the watcher never reads a key of one generation and a
  // certificate of another.
  const std::string generation = absl::StrCat("gen-", ++generation_);
  const std::string folder = absl::StrCat(staging_dir_, "/", generation);
  std::error_code ignored;
  std::filesystem::remove_all(folder, ignored);  // left by an earlier run
  if (auto made = trust::EnsurePrivateDir(folder); !made.ok()) return made;
  for (const auto& [name, text] : {std::pair<const char*, const std::string*>{"key.pem", &checked->key},
                                   {"cert.pem", &checked->cert}, {"client_ca.pem", &checked->client_ca}}) {
    if (auto written = policy::WriteFileAtomically(absl::StrCat(folder, "/", name), *text, 0600); !written.ok()) {
      return written;
    }
  }
  const std::string link = staging_dir_ + "/current", temp_link = staging_dir_ + "/current.tmp";
  std::filesystem::remove(temp_link, ignored);
  std::filesystem::create_directory_symlink(generation, temp_link, ignored);
  if (ignored || ::rename(temp_link.c_str(), link.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot switch ", link, " to ", folder));
  }
  // The generation before stays (a watcher may be reading it); older ones go.
  if (generation_ > 2) std::filesystem::remove_all(absl::StrCat(staging_dir_, "/gen-", generation_ - 2), ignored);
  return checked->summary;
}

}  // namespace osh::gateway
