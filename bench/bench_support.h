// Shared pieces of the benchmarks: a timed closed-loop load from client threads, and a 4 KiB policy.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "openshell/sandbox/v1/sandbox.pb.h"
#include "policy/body_codec.h"
#include "policy/policy_file.h"

namespace osh::bench {

struct LoadResult {
  double calls_per_second = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;
};

// The median of a non-empty list of measurements (the upper one of an even count).
inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Wall-clock seconds `f()` takes.
template <typename F>
double SecondsOf(F f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The p-quantile (0..1) of `v` (the nearest rank at or above it; 1 gives the max); 0 for an empty list.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Runs `call` (true = success) from `threads` threads for `seconds`, after a short warm-up.
inline LoadResult RunLoad(int threads, double seconds, const std::function<bool(int thread)>& call) {
  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<uint64_t> calls{0}, errors{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      while (!stop.load(std::memory_order_relaxed)) {
        const bool ok = call(t);
        if (measuring.load(std::memory_order_relaxed)) (ok ? calls : errors).fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // warm-up: connections, caches
  const auto start = std::chrono::steady_clock::now();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop = true;
  for (auto& w : workers) w.join();
  return {static_cast<double>(calls) / elapsed, calls, errors};
}

// A valid policy whose canonical body is at least `bytes` long.
inline openshell::sandbox::v1::SandboxPolicy PolicyOfSize(size_t bytes) {
  auto policy = policy::RestrictiveDefaultPolicy();
  // At most 256 paths of at most 4096 characters (SCHEMA.md): past 16 KiB each path is longer.
  const std::string padding(bytes > 16384 ? std::min<size_t>(4000, bytes / 200) : 0, 'd');
  for (int i = 0; policy::SerializeDeterministic(policy).size() < bytes; ++i) {
    policy.mutable_filesystem()->add_read_only("/opt/bench/tool-" + std::to_string(i) + "/share/data" + padding);
  }
  return policy;
}

// A one-key trust store (SPEC §4, plain form) for `pem`.
inline std::string TrustStoreJsonFor(const std::string& key_id, const std::string& pem) {
  google::protobuf::Struct key;
  (*key.mutable_fields())["key_id"].set_string_value(key_id);
  (*key.mutable_fields())["public_key_pem"].set_string_value(pem);
  google::protobuf::Struct store;
  *(*store.mutable_fields())["keys"].mutable_list_value()->add_values()->mutable_struct_value() = key;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(store, &json);  // a Struct of strings always prints
  return json;
}

}  // namespace osh::bench
