// libpq, loaded when the first PostgreSQL connection is made (dlopen of Debian's libpq5), not linked: a
// gateway on SQLite never maps it nor the ~20 libraries it pulls in (GnuTLS, Kerberos, LDAP), which cost
// ~5.5 MB of resident memory per process. Thread-safe; the table, once loaded, lives until exit.
#pragma once

#include <libpq-fe.h>

#include "absl/status/statusor.h"

namespace osh::store {

// Every libpq function the store uses, by its own name and exact type.
#define OSH_LIBPQ_FUNCTIONS(X)                                                                                  \
  X(PQconnectdb) X(PQfinish) X(PQreset) X(PQstatus) X(PQerrorMessage) X(PQsetNoticeProcessor) X(PQsocket)     \
  X(PQexec) X(PQexecParams) X(PQprepare) X(PQexecPrepared) X(PQtransactionStatus) X(PQcmdStatus) X(PQresultStatus) X(PQresultErrorMessage) X(PQresultErrorField) X(PQclear)        \
  X(PQntuples) X(PQgetvalue) X(PQgetlength) X(PQgetisnull) X(PQftype) X(PQcmdTuples) X(PQconsumeInput)        \
  X(PQnotifies) X(PQfreemem) X(PQconninfoParse) X(PQconninfoFree) X(PQconnectdbParams)

struct LibPq {
#define OSH_LIBPQ_MEMBER(name) decltype(&::name) name = nullptr;
  OSH_LIBPQ_FUNCTIONS(OSH_LIBPQ_MEMBER)
#undef OSH_LIBPQ_MEMBER
};

// Loads libpq once; UNAVAILABLE naming the library or the missing function when it cannot (install
// Debian's libpq5 to use a postgresql:// database).
absl::StatusOr<const LibPq*> LoadLibPq();

// The loaded table. Only for code that runs after a successful LoadLibPq() (every PgConn and PgResult
// exists only after one); aborts otherwise.
const LibPq& Pq();

}  // namespace osh::store
