#include "store/libpq.h"

#include <dlfcn.h>

#include <cstdlib>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "store/storage_error.h"

namespace osh::store {
namespace {

constexpr char kLibrary[] = "libpq.so.5";

absl::once_flag loaded_once;
LibPq table;
absl::Status load_status = absl::UnknownError("libpq: not loaded");

absl::Status Load() {
  void* library = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* why = dlerror();
    return PostgresStorageError(absl::StatusCode::kUnavailable,
                                absl::StrCat(": the client library ", kLibrary, " cannot be loaded (",
                                             why ? why : "unknown error", "): install Debian's libpq5"));
  }
#define OSH_LIBPQ_RESOLVE(name)                                                                    \
  table.name = reinterpret_cast<decltype(table.name)>(dlsym(library, #name));                     \
  if (table.name == nullptr) {                                                                     \
    return PostgresStorageError(absl::StatusCode::kUnavailable,                                 \
                                absl::StrCat(": ", kLibrary, " has no ", #name, ": too old a libpq")); \
  }
  OSH_LIBPQ_FUNCTIONS(OSH_LIBPQ_RESOLVE)
#undef OSH_LIBPQ_RESOLVE
  return absl::OkStatus();  // never dlclose'd: connections may outlive any one user
}

}  // namespace

absl::StatusOr<const LibPq*> LoadLibPq() {
  absl::call_once(loaded_once, [] { load_status = Load(); });
  if (!load_status.ok()) return load_status;
  return &table;
}

const LibPq& Pq() {
  auto loaded = LoadLibPq();
  if (!loaded.ok()) std::abort();  // a PgConn or PgResult exists only after a successful load
  return **loaded;
}

}  // namespace osh::store
