// Catch2's main, for every test binary.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>

int main(int argc, char* argv[]) {
  // A gRPC client that is not in a call reads its connection only when its backup poller runs, every
  // 5 s by default; a stopping gateway's server waits for that idle client to acknowledge its GOAWAY
  // ping before it closes the connection, so each stop with a test's idle channel open took the whole
  // 5 s drain deadline. Tests poll every 100 ms (the product's clients are the operator's business;
  // docs/policy-gateway.md, "Signals and health", says what a stop waits for). Set before gRPC starts; an explicit setting wins.
  setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100", /*overwrite=*/0);
  return Catch::Session().run(argc, argv);
}
