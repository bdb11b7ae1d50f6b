// policyctl events [--after SEQ] [--sandbox ID] [--count N]: sandbox state changes as they happen
// (WatchSandboxes; docs/policyctl.md, "Watching sandboxes"). Follows across gateway restarts, resuming
// after the last seq it printed, until killed or --count changes were printed.
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "common/errors.h"
#include "common/grpc_status.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

std::string SandboxEventLine(const v1::SandboxEvent& e, bool json) {
  if (json) return ToJson(e);
  const std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(e.time_unix_ms()),
                                            absl::UTCTimeZone());
  std::string line = absl::StrCat(e.seq(), " ", when, " ", TerminalText(e.change()));
  if (!e.sandbox_id().empty()) absl::StrAppend(&line, " sandbox=", TerminalWord(e.sandbox_id()));
  if (!e.scope().empty()) absl::StrAppend(&line, " scope=", TerminalWord(e.scope()));
  if (!e.policy_digest().empty()) absl::StrAppend(&line, " digest=", TerminalText(e.policy_digest().substr(0, 12)));
  if (e.policy_version() != 0) absl::StrAppend(&line, " version=", e.policy_version());
  absl::StrAppend(&line, " outcome=", TerminalText(e.outcome()));
  if (!e.actor().empty()) absl::StrAppend(&line, " actor=", TerminalWord(e.actor()));
  if (!e.reason().empty()) absl::StrAppend(&line, " reason=\"", TerminalText(e.reason(), /*quoted=*/true, 65536), "\"");
  return line;
}

struct EventsWatch {
  uint64_t after = 0;
  std::string sandbox;
  uint64_t count = 0;  // 0: until killed
  uint64_t printed = 0;
};

// Streams from `w->after` until the stream ends or --count is reached (OK then).
grpc::Status StreamEventsOnce(const std::shared_ptr<grpc::Channel>& channel, bool json, EventsWatch* w) {
  auto stub = v1::PolicyGateway::NewStub(channel);
  grpc::ClientContext context;  // no deadline: a stream for as long as the gateway keeps it
  v1::WatchSandboxesRequest request;
  request.set_after_seq(w->after);
  request.set_sandbox_id(w->sandbox);
  auto reader = stub->WatchSandboxes(&context, request);
  v1::SandboxEvent event;
  while (reader->Read(&event)) {
    if (event.seq() <= w->after) continue;  // never printed twice
    std::cout << SandboxEventLine(event, json) << std::endl;
    w->after = event.seq();
    if (w->count != 0 && ++w->printed >= w->count) {
      context.TryCancel();
      reader->Finish();
      return grpc::Status::OK;
    }
  }
  return reader->Finish();
}

int FollowEvents(const Options& options, EventsWatch w) {
  auto delay = std::chrono::milliseconds(200);
  for (;;) {
    auto channel = Connect(options, Api::kAdmin);
    grpc::Status ended = channel ? StreamEventsOnce(channel, options.json(), &w)
                                 : grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot connect");
    if (ended.ok()) return kExitOk;
    const absl::Status status = common::FromGrpc(ended);
    const bool resume = status.code() == absl::StatusCode::kUnavailable || common::ReasonOf(status) == "audit_stream_lagging";
    if (!resume) return ReportError(status);
    if (channel != nullptr) {
      std::cerr << "events: stream ended (" << status.message() << "); resuming after seq " << w.after << "\n";
    }
    std::this_thread::sleep_for(delay);
    delay = channel != nullptr ? std::chrono::milliseconds(200) : std::min(delay * 2, std::chrono::milliseconds(2000));
  }
}

}  // namespace

void AddSandboxEventsCommand(CLI::App& app, const Options& options, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "events",
      "Sandbox state changes as they happen (WatchSandboxes): admitted, refreshed, reprojected, reported, deleted, "
      "... one a line, from the audit chain after --after; follows across gateway restarts until killed or --count");
  auto w = std::make_shared<EventsWatch>();
  cmd->add_option("--after", w->after, "the audit seq to start after (0: every change recorded); print the last seq "
                                       "seen to resume exactly there");
  cmd->add_option("--sandbox", w->sandbox, "only this sandbox's changes (and the scope re-projections)");
  cmd->add_option("--count", w->count, "stop after this many changes (0: follow until killed)");
  cmd->callback([&options, &exit_code, w] { exit_code = FollowEvents(options, *w); });
}

}  // namespace osh::cli
