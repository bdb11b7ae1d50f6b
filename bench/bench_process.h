// Real processes for the end-to-end benchmarks: spawn a binary with its output in a log file, wait for
// a gRPC server on a Unix socket, read a process's resident memory.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "bench/bench_support.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

extern char** environ;

namespace osh::bench {

// Starts argv[0] with stdout and stderr appended to `log`; -1 when it cannot be started.
inline pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

// Stops a spawned process (SIGTERM, then waits for it) when it goes out of scope, so that a benchmark's early
// return leaves none running.
class StopOnExit {
 public:
  explicit StopOnExit(pid_t pid) : pid_(pid) {}
  ~StopOnExit() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  StopOnExit(const StopOnExit&) = delete;
  StopOnExit& operator=(const StopOnExit&) = delete;

 private:
  pid_t pid_;
};

inline bool WaitForChannel(const std::string& socket, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  return channel->WaitForConnected(std::chrono::system_clock::now() + timeout);
}

// A channel of its own (its own connection): channels created with different ids are not shared.
inline std::shared_ptr<grpc::Channel> ChannelWithId(const std::string& socket, int id) {
  grpc::ChannelArguments args;
  args.SetInt("grpc.channel_id", id);
  return grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
}

// SetPolicy of the "default" scope to a policy of `bytes` (PolicyOfSize); false (said on stderr) when refused.
inline bool SetDefaultPolicy(openshell::policy::gateway::v1::PolicyGateway::Stub& admin, size_t bytes) {
  openshell::policy::gateway::v1::SetPolicyRequest request;
  request.set_scope("default");
  *request.mutable_policy() = PolicyOfSize(bytes);
  grpc::ClientContext ctx;
  openshell::policy::gateway::v1::PolicyRevision revision;
  const grpc::Status status = admin.SetPolicy(&ctx, request, &revision);
  if (status.ok()) return true;
  std::fprintf(stderr, "SetPolicy failed: %s\n", status.error_message().c_str());
  return false;
}

// A field of /proc/<pid>/status in KiB ("VmRSS", "VmHWM"); 0 when unreadable.
inline long ProcStatusKiB(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return 0;
}

// The CPU time (user + system) a process has used, in seconds; 0 when unreadable.
inline double ProcCpuSeconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return 0;
  const size_t after_name = line.rfind(')');  // the name may hold spaces
  if (after_name == std::string::npos) return 0;
  std::istringstream fields(line.substr(after_name + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state; 14 utime, 15 stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace osh::bench
