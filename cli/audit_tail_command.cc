// policyctl audit tail [--after SEQ] [-f] [-o table|json|ocsf]: the audit chain as it grows
// (docs/policyctl.md). Without -f it prints the events after SEQ up to the head when it started
// (ListAuditEvents pages); with -f it streams (WatchAuditEvents) and follows the chain across gateway
// restarts, resuming after the last seq it printed, until it is killed.
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/ocsf.h"
#include "common/errors.h"
#include "common/grpc_status.h"
#include "trust/audit_chain.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

std::string TailLine(const v1::AuditEvent& e, const std::string& format) {
  if (format == "json") return trust::ToJsonLine(trust::FromProto(e));
  if (format == "ocsf") return ToJson(ToOcsf(e));
  const std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(e.time_unix_ms()),
                                            absl::UTCTimeZone());
  std::string line = absl::StrCat(e.seq(), " ", when, " ", TerminalText(e.type()), " ", TerminalText(e.outcome()));
  if (!e.sandbox_id().empty()) absl::StrAppend(&line, " sandbox=", TerminalWord(e.sandbox_id()));
  if (!e.policy_digest().empty()) absl::StrAppend(&line, " digest=", TerminalText(e.policy_digest().substr(0, 12)));
  if (e.policy_version() != 0) absl::StrAppend(&line, " version=", e.policy_version());
  if (!e.actor().empty()) absl::StrAppend(&line, " actor=", TerminalWord(e.actor()));
  if (!e.reason().empty()) absl::StrAppend(&line, " reason=\"", TerminalText(e.reason(), /*quoted=*/true, 65536), "\"");
  return line;
}

// Prints the events after `*after` up to the head when called; `*after` follows what was printed.
int PrintExisting(const Options& options, const std::string& format, uint64_t* after) {
  auto stub = AdminStub(options);
  if (!stub) return kExitUsage;
  uint64_t target = 0;
  bool first = true;
  do {
    v1::ListAuditEventsRequest request;
    request.set_after_seq(*after);
    request.set_limit(1000);
    v1::ListAuditEventsResponse response;
    auto ctx = MakeContext(options);
    if (auto status = stub->ListAuditEvents(ctx.get(), request, &response); !status.ok()) return ReportRpcError(status);
    if (first) target = response.head_seq();
    first = false;
    if (response.events().empty()) break;
    for (const auto& event : response.events()) {
      if (event.seq() > target) break;
      std::cout << TailLine(event, format) << "\n";
      *after = event.seq();
    }
  } while (*after < target);
  std::cout.flush();
  return kExitOk;
}

// Streams from `*after` on until the stream ends; returns its status (`*after` follows what was printed).
grpc::Status StreamOnce(const std::shared_ptr<grpc::Channel>& channel, const std::string& format, uint64_t* after) {
  auto stub = v1::PolicyGateway::NewStub(channel);
  grpc::ClientContext context;  // no deadline: a stream for as long as the gateway keeps it
  v1::WatchAuditEventsRequest request;
  request.set_after_seq(*after);
  auto reader = stub->WatchAuditEvents(&context, request);
  v1::AuditEvent event;
  while (reader->Read(&event)) {
    if (event.seq() <= *after) continue;  // never printed twice (the gateway sends each once; belt and braces)
    std::cout << TailLine(event, format) << std::endl;
    *after = event.seq();
  }
  return reader->Finish();
}

// Follows the chain: reconnects after the gateway stopped or went away, and after a lagging end.
int Follow(const Options& options, const std::string& format, uint64_t after) {
  auto delay = std::chrono::milliseconds(200);
  for (;;) {
    auto channel = Connect(options, Api::kAdmin);
    grpc::Status ended = channel ? StreamOnce(channel, format, &after)
                                 : grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot connect");
    const absl::Status status = common::FromGrpc(ended);
    const std::string reason = common::ReasonOf(status);
    const bool resume = status.code() == absl::StatusCode::kUnavailable || reason == "audit_stream_lagging";
    if (!resume) return ReportError(status);
    if (channel != nullptr) std::cerr << "audit tail: stream ended (" << status.message() << "); resuming after seq "
                                      << after << "\n";
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(2000));
    if (channel != nullptr) delay = std::chrono::milliseconds(200);  // it was up: try again soon
  }
}

}  // namespace

void AddAuditTail(CLI::App& audit, const Options& options, int& exit_code) {
  auto* cmd = audit.add_subcommand(
      "tail", "Print audit events after --after, one a line; -f: then follow the chain as it grows (across restarts)");
  auto after = std::make_shared<uint64_t>(0);
  auto follow = std::make_shared<bool>(false);
  auto format = std::make_shared<std::string>();
  cmd->add_option("--after", *after, "print events after this seq (0: from the first)");
  cmd->add_flag("-f,--follow", *follow, "keep streaming new events (WatchAuditEvents) until killed");
  cmd->add_option("-o,--output", *format, "table (one line an event), json (one object a line) or ocsf")
      ->check(CLI::IsMember({"table", "json", "ocsf"}));
  cmd->callback([&options, &exit_code, after, follow, format] {
    const std::string out = format->empty() ? options.output : *format;
    if (!*follow) {
      uint64_t cursor = *after;
      exit_code = PrintExisting(options, out, &cursor);
      return;
    }
    exit_code = Follow(options, out, *after);
  });
}

}  // namespace osh::cli
