#include "common/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace osh::common {
namespace {

struct Received {
  const HttpLimits* limits = nullptr;
  size_t header_bytes = 0;
  std::string body;
  const char* exceeded = nullptr;  // "headers" or "body" when a bound ended the request
};

size_t OnHeader(char* /*data*/, size_t size, size_t count, void* user) {
  auto* received = static_cast<Received*>(user);
  const size_t length = size * count;
  received->header_bytes += length;
  if (received->header_bytes > received->limits->max_header_bytes) {
    received->exceeded = "headers";
    return 0;  // ends the transfer (CURLE_WRITE_ERROR)
  }
  return length;
}

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* received = static_cast<Received*>(user);
  const size_t length = size * count;
  if (received->body.size() + length > received->limits->max_body_bytes) {
    received->exceeded = "body";
    return 0;
  }
  received->body.append(data, length);
  return length;
}

void InitialiseOnce() {
  // curl_global_init is not thread-safe in every libcurl build: once, before any handle.
  static const CURLcode initialised = curl_global_init(CURL_GLOBAL_DEFAULT);
  (void)initialised;
}

absl::Status BodyTooLarge(const HttpLimits& limits) {
  return absl::ResourceExhaustedError(absl::StrCat("the answer's body exceeds ", limits.max_body_bytes, " bytes"));
}

struct EasyDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct ListDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

absl::StatusOr<HttpAnswer> Perform(const std::string& url, const absl::string_view* post_body,
                                   absl::string_view content_type, const HttpLimits& limits) {
  if (!absl::StartsWith(url, "http://") && !absl::StartsWith(url, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' is not an http:// or https:// URL"));
  }
  InitialiseOnce();
  std::unique_ptr<CURL, EasyDeleter> curl(curl_easy_init());
  if (curl == nullptr) return absl::ResourceExhaustedError("libcurl: cannot make a handle");
  Received received;
  received.limits = &limits;
  const long timeout_ms = static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(limits.timeout)));
  char error[CURL_ERROR_SIZE] = {0};
  std::unique_ptr<curl_slist, ListDeleter> headers;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for name lookups
  curl_easy_setopt(c, CURLOPT_QUICK_EXIT, 1L);  // a timed-out name lookup is not waited for at cleanup
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_PROXY, "");  // never a proxy from the environment
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(limits.max_body_bytes));
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &received);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &received);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  if (post_body != nullptr) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body->empty() ? "" : post_body->data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(post_body->size()));
    curl_slist* list = curl_slist_append(nullptr, absl::StrCat("Content-Type: ", content_type).c_str());
    if (list != nullptr) list = curl_slist_append(list, "Expect:");
    if (list == nullptr) return absl::ResourceExhaustedError("libcurl: cannot make a header list");
    headers.reset(list);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  }
  const CURLcode code = curl_easy_perform(c);
  if (received.exceeded != nullptr) {
    return absl::string_view(received.exceeded) == "body" ? BodyTooLarge(limits)
                                                          : absl::ResourceExhaustedError(absl::StrCat(
                                                                "the answer's headers exceed ", limits.max_header_bytes, " bytes"));
  }
  if (code == CURLE_FILESIZE_EXCEEDED) return BodyTooLarge(limits);
  if (code != CURLE_OK) {
    return absl::UnavailableError(error[0] != '\0' ? std::string(error) : std::string(curl_easy_strerror(code)));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  return HttpAnswer{static_cast<int>(status), std::move(received.body)};
}

}  // namespace

absl::StatusOr<HttpAnswer> HttpGet(const std::string& url, const HttpLimits& limits) {
  return Perform(url, nullptr, "", limits);
}

absl::StatusOr<HttpAnswer> HttpPost(const std::string& url, absl::string_view body, absl::string_view content_type,
                                    const HttpLimits& limits) {
  return Perform(url, &body, content_type, limits);
}

}  // namespace osh::common
