#include "gateway/server/service_manager.h"

#include <systemd/sd-daemon.h>

#include "absl/strings/str_cat.h"
#include "gateway/core/log.h"  // OneLine: a STATUS= value on one line (sd_notify separates assignments by newlines)

namespace osh::gateway {
namespace {

void Send(const std::string& state) { sd_notify(0, state.c_str()); }

}  // namespace

void NotifyReady(const std::string& status) { Send(absl::StrCat("READY=1\nSTATUS=", OneLine(status))); }
void NotifyReloading() { Send("RELOADING=1\nSTATUS=reloading the trust store"); }
void NotifyReloaded(const std::string& status) { Send(absl::StrCat("READY=1\nSTATUS=", OneLine(status))); }
void NotifyStopping() { Send("STOPPING=1\nSTATUS=draining"); }

}  // namespace osh::gateway
