// policyctl audit export | verify | head: the audit hash chain (SPEC §8). `verify` is offline.
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "trust/audit_chain.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

constexpr uint32_t kPage = 1000;

// A 64-bit count or seq as a decimal string, as protobuf's JSON mapping writes uint64 (a JSON number is
// a double and loses precision above 2^53).
google::protobuf::Value Number(uint64_t n) {
  google::protobuf::Value v;
  v.set_string_value(absl::StrCat(n));
  return v;
}

std::string Range(uint64_t events, uint64_t head_seq) {
  return events == 0 ? "no events" : absl::StrCat(events, " events (seq ", head_seq - events + 1, "..", head_seq, ")");
}

void AddExport(CLI::App& audit, const Options& options, int& exit_code) {
  auto* cmd = audit.add_subcommand("export", "Write the audit chain as JSON lines, one event a line with its hash");
  auto out_path = std::make_shared<std::string>();
  cmd->add_option("--out", *out_path, "write here (atomically, 0600) instead of standard output");
  cmd->callback([&options, &exit_code, out_path] {
    auto stub = AdminStub(options);
    if (!stub) { exit_code = kExitUsage; return; }
    std::string lines;
    uint64_t last_seq = 0;  // seqs run 1, 2, 3, ... without gaps: also how many events were exported
    std::string head_hash = trust::kGenesisHash;
    std::optional<uint64_t> target;  // the head when the export began; later events wait for the next one
    do {
      v1::ListAuditEventsRequest request;
      request.set_after_seq(last_seq);
      request.set_limit(kPage);
      v1::ListAuditEventsResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->ListAuditEvents(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (!target) target = response.head_seq();
      if (response.events().empty()) break;
      for (const auto& event : response.events()) {
        if (event.seq() > *target) break;
        const std::string line = trust::ToJsonLine(trust::FromProto(event)) + "\n";
        if (out_path->empty()) std::cout << line;
        else lines += line;
        last_seq = event.seq();
        head_hash = event.hash();
      }
    } while (last_seq < *target);
    if (!out_path->empty()) {
      if (auto s = WriteFileAtomically(*out_path, lines, 0600); !s.ok()) { exit_code = ReportLocalError(s); return; }
    }
    std::cout.flush();
    if (options.json() && !out_path->empty()) {
      google::protobuf::Struct summary;
      (*summary.mutable_fields())["file"] = TextValue(*out_path);
      (*summary.mutable_fields())["events"] = Number(last_seq);
      (*summary.mutable_fields())["head_seq"] = Number(last_seq);
      (*summary.mutable_fields())["head_hash"] = TextValue(head_hash);
      std::cout << ToJson(summary) << "\n";
    } else {
      std::cerr << "exported " << Range(last_seq, last_seq) << (out_path->empty() ? "" : " to " + *out_path)
                << "; head hash " << head_hash << "\n";
    }
    exit_code = kExitOk;
  });
}

void AddVerify(CLI::App& audit, const Options& options, int& exit_code) {
  auto* cmd = audit.add_subcommand(
      "verify", "Recompute an exported chain offline. Exit 0 when whole, 1 naming the first broken seq, 2 on I/O errors");
  auto path = std::make_shared<std::string>();
  auto anchor = std::make_shared<std::string>();
  cmd->add_option("file", *path, "a file written by `policyctl audit export`")->required();
  cmd->add_option("--anchor", *anchor,
                  "a head hash recorded earlier (`policyctl audit head`): the export must contain it, which "
                  "catches a truncated or rewritten tail");
  cmd->callback([&options, &exit_code, path, anchor] {
    std::ifstream in(*path, std::ios::binary);
    if (!in) {
      exit_code = ReportLocalError(absl::NotFoundError(absl::StrCat(*path, ": cannot open")));
      return;
    }
    const trust::ChainVerdict verdict = trust::VerifyExport(in, *anchor);
    if (in.bad()) {
      exit_code = ReportLocalError(absl::DataLossError(absl::StrCat(*path, ": read error")));
      return;
    }
    if (options.json()) {
      google::protobuf::Struct out;
      auto& f = *out.mutable_fields();
      f["whole"].set_bool_value(verdict.whole);
      f["events"] = Number(verdict.events);
      f["head_seq"] = Number(verdict.head_seq);
      f["head_hash"] = TextValue(verdict.head_hash);
      if (!verdict.whole) {
        f["first_broken_seq"] = Number(verdict.first_broken_seq);
        f["line"] = Number(verdict.line);
        f["detail"] = TextValue(verdict.detail);
      }
      std::cout << ToJson(out) << "\n";
    } else if (verdict.whole) {
      std::cout << "audit chain whole: " << Range(verdict.events, verdict.head_seq) << ", head hash "
                << verdict.head_hash << "\n";
    } else {
      std::cout << "audit chain BROKEN at seq " << verdict.first_broken_seq << " (" << *path << ":" << verdict.line
                << "): " << verdict.detail << "\n"
                << "the " << Range(verdict.events, verdict.head_seq) << " before it are linked\n";
    }
    exit_code = verdict.whole ? kExitOk : kExitRefused;
  });
}

void AddHead(CLI::App& audit, const Options& options, int& exit_code) {
  auto* cmd = audit.add_subcommand("head", "Print the chain's newest seq and hash (record it as an anchor for verify)");
  cmd->callback([&options, &exit_code] {
    auto stub = AdminStub(options);
    if (!stub) { exit_code = kExitUsage; return; }
    v1::ListAuditEventsRequest request;
    request.set_after_seq(UINT64_MAX);  // no events: the head only
    v1::ListAuditEventsResponse response;
    auto ctx = MakeContext(options);
    if (auto status = stub->ListAuditEvents(ctx.get(), request, &response); !status.ok()) {
      exit_code = ReportRpcError(status);
      return;
    }
    if (options.json()) {
      std::cout << ToJson(response) << "\n";
    } else {
      std::cout << "head seq:  " << response.head_seq() << "\nhead hash: " << response.head_hash() << "\n";
    }
    exit_code = kExitOk;
  });
}

}  // namespace

void AddAuditCommands(CLI::App& app, const Options& options, int& exit_code) {
  auto* audit = app.add_subcommand("audit", "The audit hash chain: export, verify (offline), head, tail");
  audit->require_subcommand(1);
  AddExport(*audit, options, exit_code);
  AddVerify(*audit, options, exit_code);
  AddHead(*audit, options, exit_code);
  AddAuditTail(*audit, options, exit_code);
}

}  // namespace osh::cli
