// Who is behind the audit events a thread writes (AuditEvent::actor): the admin service opens a scope
// around each call; the store stamps the scope's actor on the events that carry none — also when a group
// commit writes them on another thread (the writer's actor travels with its write). Thread-local; a
// scope restores the previous actor when it ends. Outside any scope the actor is "" (the gateway itself).
#pragma once

#include <string>

namespace osh::store {

class AuditActorScope {
 public:
  explicit AuditActorScope(std::string actor);
  ~AuditActorScope();
  AuditActorScope(const AuditActorScope&) = delete;
  AuditActorScope& operator=(const AuditActorScope&) = delete;

  static const std::string& Current();

 private:
  std::string previous_;
};

}  // namespace osh::store
