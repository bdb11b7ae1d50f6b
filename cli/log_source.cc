#include "cli/log_source.h"

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace osh::cli {
namespace {

class HttpLogSource final : public tlog::PathTileFetcher {
 public:
  HttpLogSource(std::string origin, std::string prefix, int timeout_s)
      : origin_(std::move(origin)), prefix_(std::move(prefix)), timeout_s_(timeout_s) {}

  absl::StatusOr<std::string> Fetch(const std::string& path) const override {
    // One client per fetch: the fetcher is shared across threads by contract, a client is not.
    httplib::Client client(origin_);
    client.set_connection_timeout(timeout_s_, 0);
    client.set_read_timeout(timeout_s_, 0);
    client.set_follow_location(true);
    const std::string url = absl::StrCat(prefix_, "/", path);
    // A tile is at most 8 KiB and an entry bundle 256 entries of at most 64 KiB: a server sending more is
    // not a log, and is not read into memory without bound.
    std::string body;
    bool too_large = false;
    httplib::Result result = client.Get(url, [&](const char* data, size_t length) {
      if (body.size() + length > kMaxFetchBytes) {
        too_large = true;
        return false;
      }
      body.append(data, length);
      return true;
    });
    if (too_large) {
      return absl::DataLossError(absl::StrCat("GET ", origin_, url, ": more than ", kMaxFetchBytes, " bytes: not a log's file"));
    }
    if (!result) {
      return absl::UnavailableError(absl::StrCat("GET ", origin_, url, ": ", httplib::to_string(result.error())));
    }
    if (result->status == 404) return absl::NotFoundError(absl::StrCat("GET ", origin_, url, ": 404 not found"));
    if (result->status != 200) {
      return absl::UnavailableError(absl::StrCat("GET ", origin_, url, ": HTTP status ", result->status));
    }
    return body;
  }
  static constexpr size_t kMaxFetchBytes = size_t{256} * 65536 + 256 * 2 + 4096;

 private:
  std::string origin_;  // scheme://host[:port]
  std::string prefix_;  // path below it, no trailing slash ("" or "/logs/a")
  int timeout_s_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<tlog::PathTileFetcher>> OpenLogSource(const std::string& where, int timeout_s) {
  if (where.empty()) return absl::InvalidArgumentError("--log: a directory or an http(s) URL is required");
  if (!absl::StartsWith(where, "http://") && !absl::StartsWith(where, "https://")) {
    return std::make_unique<tlog::DirTileFetcher>(where);
  }
  const size_t host_begin = where.find("://") + 3;
  const size_t path_begin = where.find('/', host_begin);
  std::string origin = where.substr(0, path_begin);
  std::string prefix = path_begin == std::string::npos ? "" : where.substr(path_begin);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (origin.size() == host_begin || prefix.find_first_of("?#") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--log ", where, ": expected http(s)://host[:port][/prefix]"));
  }
  return std::make_unique<HttpLogSource>(std::move(origin), std::move(prefix), timeout_s);
}

}  // namespace osh::cli
