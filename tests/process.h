// Real child processes for integration tests: start a binary, signal it, wait for it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace osh::test {

class Process {
 public:
  // Starts `argv` with stdout and stderr appended to `log_path`, in `cwd` when given.
  Process(std::vector<std::string> argv, const std::string& log_path, const std::string& cwd = "",
          std::vector<std::string> env = {});
  ~Process();  // SIGKILLs a still-running child
  Process(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void Signal(int signal_number);
  // Waits for exit; returns the exit status (128 + signal for a signalled child), or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool running();

 private:
  pid_t pid_ = -1;
  int exit_status_ = -1;
};

// True once something accepts connections on the Unix socket.
bool WaitForSocket(const std::string& path, std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Runs a command to completion; returns its exit status and fills `output` with stdout (stderr to `err`).
// `env`: "NAME=value" entries added to the environment.
int RunCommand(const std::vector<std::string>& argv, std::string* output, std::string* err = nullptr,
               const std::string& cwd = "", const std::vector<std::string>& env = {});

std::string ReadAll(const std::string& path);

}  // namespace osh::test
