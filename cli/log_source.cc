#include "cli/log_source.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/http_client.h"

namespace osh::cli {
namespace {

class HttpLogSource final : public tlog::PathTileFetcher {
 public:
  HttpLogSource(std::string origin, std::string prefix, int timeout_s)
      : origin_(std::move(origin)), prefix_(std::move(prefix)), timeout_s_(timeout_s) {}

  absl::StatusOr<std::string> Fetch(const std::string& path) const override {
    const std::string url = absl::StrCat(origin_, prefix_, "/", path);
    // A tile is at most 8 KiB and an entry bundle 256 entries of at most 64 KiB: a server sending more is
    // not a log, and is not read into memory without bound; nor are endless headers, nor a trickle of
    // bytes for longer than the timeout (common/http_client.h).
    common::HttpLimits limits;
    limits.timeout = absl::Seconds(timeout_s_);
    limits.max_body_bytes = kMaxFetchBytes;
    absl::StatusOr<common::HttpAnswer> answer = common::HttpGet(url, limits);
    if (absl::IsResourceExhausted(answer.status())) {
      return absl::DataLossError(absl::StrCat("GET ", url, ": ", answer.status().message(), ": not a log's file"));
    }
    if (!answer.ok()) return absl::UnavailableError(absl::StrCat("GET ", url, ": ", answer.status().message()));
    if (answer->status == 404) return absl::NotFoundError(absl::StrCat("GET ", url, ": 404 not found"));
    if (answer->status != 200) {
      return absl::UnavailableError(absl::StrCat("GET ", url, ": HTTP status ", answer->status,
                                                 answer->status / 100 == 3 ? " (a redirect: not followed)" : ""));
    }
    return std::move(answer->body);
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
