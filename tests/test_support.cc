#include "tests/test_support.h"

#include <atomic>

#include <sqlite3.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>

namespace osh::test {

void EditDatabase(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  INFO((error ? error : ""));
  sqlite3_free(error);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

std::filesystem::path DataDir() { return OSH_TEST_DATA_DIR; }

google::protobuf::Struct LoadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  google::protobuf::Struct out;
  REQUIRE(google::protobuf::util::JsonStringToMessage(text.str(), &out).ok());
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "osh-test-XXXXXX").string();
  REQUIRE(mkdtemp(pattern.data()) != nullptr);
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void WriteFile(const std::string& path, const std::string& text, int mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
  }
  REQUIRE(chmod(path.c_str(), static_cast<mode_t>(mode)) == 0);
}

std::string HandleFile(const std::string& handle) {
  static TempDir* const dir = new TempDir();  // for the process's life (never destroyed: no exit-order issue)
  static std::atomic<int> next{0};
  const std::string path = *dir / ("handle-" + std::to_string(next++));
  WriteFile(path, handle + "\n");
  return path;
}

}  // namespace osh::test

namespace osh::test {

std::string TrustStoreJson(const std::vector<std::pair<std::string, std::string>>& keys, int threshold,
                           bool require_context_binding) {
  google::protobuf::Struct doc;
  (*doc.mutable_fields())["threshold"].set_number_value(threshold);
  (*doc.mutable_fields())["require_context_binding"].set_bool_value(require_context_binding);
  auto* list = (*doc.mutable_fields())["keys"].mutable_list_value();
  for (const auto& [id, pem] : keys) {
    auto* key = list->add_values()->mutable_struct_value()->mutable_fields();
    (*key)["key_id"].set_string_value(id);
    (*key)["public_key_pem"].set_string_value(pem);
  }
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(doc, &json).ok());
  return json;
}

openshell::policy::driver::v1::RuntimeContext ContextFor(const std::string& sandbox_id, const std::string& subject) {
  openshell::policy::driver::v1::RuntimeContext context;
  context.set_sandbox_id(sandbox_id);
  context.set_user_subject(subject);
  return context;
}

osh::trust::AuditEvent StoredEvent(const std::string& type) {
  osh::trust::AuditEvent e;
  e.type = osh::trust::audit::TypeWord::FromStored(type);
  e.outcome = osh::trust::audit::Outcome::kOk;
  return e;
}

DatagramListener::DatagramListener(const std::string& path, int timeout_s) {
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd_ >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof address.sun_path);
  std::memcpy(address.sun_path, path.data(), path.size());
  REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  timeval wait{timeout_s, 0};
  REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait) == 0);
}

DatagramListener::~DatagramListener() {
  if (fd_ >= 0) ::close(fd_);
}

std::string DatagramListener::Next() {
  char buffer[65536];
  const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
}

}  // namespace osh::test
