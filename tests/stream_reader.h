// A server stream of the admin API read on its own thread (WatchAuditEvents, WatchSandboxes): every message
// kept in order until the stream ends (`status`). With `resume`, a stream ended RESOURCE_EXHAUSTED (lagging)
// is reopened after the last seq received, as a client that keeps up but was outpaced does.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/gateway_fixture.h"

namespace osh::test {

template <class Event>
class StreamReader {
 public:
  // Opens the stream after `after` on `stub` with `context`.
  using Open = std::function<std::unique_ptr<grpc::ClientReader<Event>>(gw::PolicyGateway::Stub& stub,
                                                                        grpc::ClientContext* context, uint64_t after)>;

  StreamReader(const GatewayFixture& g, uint64_t after_seq, Open open, bool resume = false)
      : stub_(gw::PolicyGateway::NewStub(GatewayFixture::Channel(g.admin_socket()))) {
    thread_ = std::thread([this, after_seq, open = std::move(open), resume] {
      uint64_t after = after_seq;
      for (;;) {
        grpc::ClientContext* context = nullptr;
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (stopping_) break;
          context_ = std::make_unique<grpc::ClientContext>();
          context = context_.get();
        }
        auto reader = open(*stub_, context, after);
        Event event;
        while (reader->Read(&event)) {
          std::lock_guard<std::mutex> lock(mu_);
          events_.push_back(event);
          after = event.seq();
        }
        grpc::Status status = reader->Finish();
        std::lock_guard<std::mutex> lock(mu_);
        status_ = status;
        if (resume && status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) continue;
        break;
      }
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    });
  }
  ~StreamReader() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    thread_.join();
  }
  std::vector<Event> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  uint64_t last_seq() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.empty() ? 0 : events_.back().seq();
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  grpc::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::unique_ptr<gw::PolicyGateway::Stub> stub_;
  std::thread thread_;
  std::mutex mu_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::vector<Event> events_;
  grpc::Status status_;
  bool done_ = false;
  bool stopping_ = false;
};

// WatchAuditEvents after `after_seq`.
class AuditStreamReader : public StreamReader<gw::AuditEvent> {
 public:
  AuditStreamReader(const GatewayFixture& g, uint64_t after_seq, bool resume = false)
      : StreamReader(
            g, after_seq,
            [](gw::PolicyGateway::Stub& stub, grpc::ClientContext* context, uint64_t after) {
              gw::WatchAuditEventsRequest request;
              request.set_after_seq(after);
              return stub.WatchAuditEvents(context, request);
            },
            resume) {}
};

// WatchSandboxes after `after_seq`, for one sandbox or ("") all.
class SandboxStreamReader : public StreamReader<gw::SandboxEvent> {
 public:
  SandboxStreamReader(const GatewayFixture& g, uint64_t after_seq, const std::string& sandbox_id = "")
      : StreamReader(g, after_seq, [sandbox_id](gw::PolicyGateway::Stub& stub, grpc::ClientContext* context, uint64_t after) {
          gw::WatchSandboxesRequest request;
          request.set_after_seq(after);
          request.set_sandbox_id(sandbox_id);
          return stub.WatchSandboxes(context, request);
        }) {}
  // "change sandbox-or-scope" for each change, e.g. "admitted sb-1".
  std::vector<std::string> changes() {
    std::vector<std::string> out;
    for (const auto& e : events()) out.push_back(e.change() + " " + (e.sandbox_id().empty() ? e.scope() : e.sandbox_id()));
    return out;
  }
};

}  // namespace osh::test
