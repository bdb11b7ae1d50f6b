// Tells the service manager (systemd's sd_notify protocol, via libsystemd) how the daemon is doing, so a
// `Type=notify` unit is "active" only once both sockets serve. Every call is a no-op when NOTIFY_SOCKET
// is unset (not started by a service manager). Thread-safe; errors are ignored (a status line is not
// worth failing for).
#pragma once

#include <string>

namespace osh::gateway {

void NotifyReady(const std::string& status);  // READY=1 with a STATUS= line
void NotifyReloading();                       // RELOADING=1 (a trust-store reload began)
void NotifyReloaded(const std::string& status);  // READY=1 again after a reload
void NotifyStopping();                        // STOPPING=1 (the drain began)

}  // namespace osh::gateway
