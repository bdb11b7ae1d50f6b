// Certificates made by the tests, with OpenSSL (ECDSA P-256, SHA-256): a CA and leaves it signs, each
// written as PEM files into a folder. For the TLS listener tests only.
#pragma once

#include <string>
#include <vector>

namespace osh::test {

struct CertFiles {
  std::string cert;  // PEM certificate path
  std::string key;   // PEM private key path
};

// A self-signed CA "<name>" valid from an hour ago for a day.
CertFiles MakeCa(const std::string& dir, const std::string& name);

// A leaf "<name>" signed by `ca`, valid from now + not_before_s to now + not_after_s (negative: the
// past), for serverAuth and clientAuth, with subjectAltName DNS:localhost and IP:127.0.0.1.
CertFiles MakeLeaf(const std::string& dir, const std::string& name, const CertFiles& ca, long not_before_s = -3600,
                   long not_after_s = 86400);

}  // namespace osh::test
