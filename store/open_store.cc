#include "store/open_store.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "store/postgres_store.h"
#include "store/sqlite_store.h"

namespace osh::store {

std::string SqlitePathOf(const std::string& url) {
  constexpr absl::string_view kScheme = "sqlite:";
  if (absl::StartsWith(url, kScheme)) return url.substr(kScheme.size());
  return absl::StrContains(url, "://") ? "" : url;
}

bool IsPostgresUrl(const std::string& url) {
  return absl::StartsWith(url, "postgresql://") || absl::StartsWith(url, "postgres://");
}

std::string DisplayName(const std::string& url) {
  if (IsPostgresUrl(url)) return absl::StrCat("postgresql (", RedactedConninfo(url), ")");
  return SqlitePathOf(url);
}

std::string AnchorPathFor(const std::string& url, const std::string& state_dir) {
  if (const std::string path = SqlitePathOf(url); !path.empty()) return path + ".head";
  return (std::filesystem::path(state_dir) / "postgresql.head").string();
}

absl::StatusOr<std::unique_ptr<Database>> OpenStore(const std::string& url, const StoreOptions& options) {
  if (const std::string path = SqlitePathOf(url); !path.empty()) {
    auto store = SqliteStore::Open(path, options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Database>(*std::move(store));
  }
  if (IsPostgresUrl(url)) {
    auto store = PostgresStore::Open(url, options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Database>(*std::move(store));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("database: '", url, "' is not a store URL (expected sqlite:<path> or postgresql://...)"));
}

}  // namespace osh::store
