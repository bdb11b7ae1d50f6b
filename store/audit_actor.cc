#include "store/audit_actor.h"

#include <utility>

namespace osh::store {
namespace {
thread_local std::string current_actor;
}  // namespace

AuditActorScope::AuditActorScope(std::string actor) : previous_(std::exchange(current_actor, std::move(actor))) {}
AuditActorScope::~AuditActorScope() { current_actor = std::move(previous_); }
const std::string& AuditActorScope::Current() { return current_actor; }

}  // namespace osh::store
