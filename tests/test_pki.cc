#include "tests/test_pki.h"

#include <sys/stat.h>

#include <cstdio>
#include <memory>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace osh::test {
namespace {

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

void Require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test PKI: ") + what);
}

void AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  Require(extension != nullptr && X509_add_ext(cert, extension, -1) == 1, "extension");
  X509_EXTENSION_free(extension);
}

void WritePem(const std::string& path, X509* cert) {
  FILE* file = std::fopen(path.c_str(), "w");
  Require(file != nullptr && PEM_write_X509(file, cert) == 1, "write certificate");
  std::fclose(file);
}

void WritePem(const std::string& path, EVP_PKEY* key) {
  FILE* file = std::fopen(path.c_str(), "w");
  Require(file != nullptr && PEM_write_PrivateKey(file, key, nullptr, nullptr, 0, nullptr, nullptr) == 1, "write key");
  std::fclose(file);
  // Private keys are read only when no one else can read them (trust::ReadPrivateKeyFile).
  Require(::chmod(path.c_str(), 0600) == 0, "chmod key");
}

KeyPtr ReadKey(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  Require(file != nullptr, "read key");
  KeyPtr key(PEM_read_PrivateKey(file, nullptr, nullptr, nullptr), &EVP_PKEY_free);
  std::fclose(file);
  Require(key != nullptr, "parse key");
  return key;
}

CertPtr ReadCert(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  Require(file != nullptr, "read certificate");
  CertPtr cert(PEM_read_X509(file, nullptr, nullptr, nullptr), &X509_free);
  std::fclose(file);
  Require(cert != nullptr, "parse certificate");
  return cert;
}

// A certificate for `key` named `name`, valid over [now + from_s, now + to_s], not yet signed.
CertPtr NewCert(EVP_PKEY* key, const std::string& name, long from_s, long to_s) {
  static long serial = 1;
  CertPtr cert(X509_new(), &X509_free);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), from_s);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), to_s);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  return cert;
}

}  // namespace

CertFiles MakeCa(const std::string& dir, const std::string& name) {
  KeyPtr key(EVP_EC_gen("P-256"), &EVP_PKEY_free);
  Require(key != nullptr, "CA key");
  CertPtr cert = NewCert(key.get(), name, -3600, 86400);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  Require(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "sign CA");
  CertFiles files{dir + "/" + name + ".pem", dir + "/" + name + "-key.pem"};
  WritePem(files.cert, cert.get());
  WritePem(files.key, key.get());
  return files;
}

CertFiles MakeLeaf(const std::string& dir, const std::string& name, const CertFiles& ca, long not_before_s,
                   long not_after_s) {
  KeyPtr ca_key = ReadKey(ca.key);
  CertPtr ca_cert = ReadCert(ca.cert);
  KeyPtr key(EVP_EC_gen("P-256"), &EVP_PKEY_free);
  Require(key != nullptr, "leaf key");
  CertPtr cert = NewCert(key.get(), name, not_before_s, not_after_s);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  AddExtension(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  AddExtension(cert.get(), ca_cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  AddExtension(cert.get(), ca_cert.get(), NID_ext_key_usage, "serverAuth,clientAuth");
  AddExtension(cert.get(), ca_cert.get(), NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  Require(X509_sign(cert.get(), ca_key.get(), EVP_sha256()) > 0, "sign leaf");
  CertFiles files{dir + "/" + name + ".pem", dir + "/" + name + "-key.pem"};
  WritePem(files.cert, cert.get());
  WritePem(files.key, key.get());
  return files;
}

}  // namespace osh::test
