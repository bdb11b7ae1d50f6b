// The deployment files in deploy/ are well-formed: the Kubernetes manifests parse as YAML with the kinds
// and references they need, and the gateway configuration they embed (and the example gateway.toml)
// resolves as the gateway would resolve it.
#include <catch2/catch.hpp>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <fstream>
#include <set>
#include <string>

#include "gateway/core/config.h"
#include "policy/policy_file.h"

namespace osh::test {

TEST_CASE("deploy: the Kubernetes manifests parse and their gateway.toml resolves", "[deploy]") {
  const std::string path = std::string(OSH_SOURCE_DIR) + "/deploy/kubernetes/policy-gateway.yaml";
  std::vector<YAML::Node> documents;
  REQUIRE_NOTHROW(documents = YAML::LoadAllFromFile(path));
  std::set<std::string> kinds;
  std::string config_text;
  for (const auto& document : documents) {
    REQUIRE(document["apiVersion"]);
    REQUIRE(document["metadata"]["name"]);
    kinds.insert(document["kind"].as<std::string>());
    if (document["kind"].as<std::string>() == "ConfigMap") config_text = document["data"]["gateway.toml"].as<std::string>();
    if (document["kind"].as<std::string>() == "StatefulSet") {
      const auto pod = document["spec"]["template"]["spec"];
      CHECK(pod["securityContext"]["runAsNonRoot"].as<bool>());
      CHECK(document["spec"]["replicas"].as<int>() == 1);  // SQLite: one gateway per database
      std::set<std::string> volumes;
      for (const auto& volume : pod["volumes"]) volumes.insert(volume["name"].as<std::string>());
      for (const auto& mount : pod["containers"][0]["volumeMounts"]) {
        const std::string name = mount["name"].as<std::string>();
        INFO(name);
        CHECK((volumes.count(name) == 1 || name == "state"));  // state: the volume claim template
      }
    }
  }
  CHECK(kinds == std::set<std::string>{"ConfigMap", "StatefulSet", "Service", "NetworkPolicy"});
  REQUIRE(!config_text.empty());
  gateway::ConfigOrigins origins;
  auto values = gateway::ParseConfigText(config_text, "policy-gateway.yaml gateway.toml", &origins);
  REQUIRE(values.ok());
  auto config = gateway::ResolveConfig({}, {}, *values, origins);
  INFO(config.status().message());
  REQUIRE(config.ok());
  CHECK(!config->admin_listen.empty());
  CHECK(!config->tls_client_ca.empty());
  CHECK(!config->sandbox_client_ca.empty());
  CHECK(config->sandbox_client_ca != config->tls_client_ca);  // a supervisor is never an operator
  CHECK(!config->metrics_allow.empty());                      // metrics: not open to every address
}

TEST_CASE("deploy: the example gateway.toml resolves", "[deploy]") {
  const std::string path = std::string(OSH_SOURCE_DIR) + "/deploy/gateway.toml";
  gateway::ConfigOrigins origins;
  auto values = gateway::ReadConfigFile(path, &origins);
  REQUIRE(values.ok());
  CHECK(gateway::ResolveConfig({}, {}, *values, origins).ok());
}

}  // namespace osh::test

namespace osh::test {

TEST_CASE("suite: no test name holds a semicolon (ctest splits a name there and runs two halves that match nothing)",
          "[deploy]") {
  for (const auto& entry : std::filesystem::directory_iterator(std::string(OSH_SOURCE_DIR) + "/tests")) {
    if (entry.path().extension() != ".cc") continue;
    std::ifstream in(entry.path());
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      const size_t at = line.find("TEST_CASE(\"");
      if (at == std::string::npos) continue;
      const size_t end = line.find('"', at + 11);
      INFO(entry.path().filename().string() << ":" << number);
      CHECK(line.substr(at + 11, end - at - 11).find(';') == std::string::npos);
    }
  }
}

}  // namespace osh::test

namespace osh::test {

// The house's floors (README, "What is where"): a file may include its own folder's headers and those of
// a folder on a lower floor, never one on its own floor or above — so no arrow points up and no two
// folders include each other. A folder not listed here fails the test until it is given its floor.
TEST_CASE("layout: every project include points down the layers (no upward arrows, no circles)", "[deploy]") {
  const std::map<std::string, int> floor = {
      {"proto", 0},          {"common", 1},         {"policy", 2},
      {"trust", 3},          {"tlog", 4},           {"store", 5},
      {"drivers", 5},        {"sandbox_client", 5}, {"builtin_driver", 6}, {"witness", 6},
      {"drivers/driver_kit", 6}, {"drivers/conformance", 6}, {"gateway/core", 7},
      {"drivers/null_policy_driver", 7}, {"examples/signing_driver", 7}, {"examples/supervisor", 7},
      {"gateway/server", 8}, {"cli", 9}};
  // "gateway/core/x.h" -> "gateway/core"; "policy/x.h" -> "policy"; generated protos -> "proto".
  auto folder_of = [](const std::string& path) {
    if (path.rfind("openshell/", 0) == 0 || path.rfind("google/", 0) == 0 || path.rfind("grpc/", 0) == 0) {
      return std::string("proto");
    }
    const size_t first = path.find('/');
    if (first == std::string::npos) return std::string();
    const std::string top = path.substr(0, first);
    const size_t second = path.find('/', first + 1);
    if ((top == "gateway" || top == "drivers" || top == "examples") && second != std::string::npos) {
      return path.substr(0, second);
    }
    return top;
  };
  const std::filesystem::path root(OSH_SOURCE_DIR);
  size_t checked = 0;
  for (const auto& [name, own_floor] : floor) {
    if (name == "proto") continue;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root / name)) {
      const auto ext = entry.path().extension();
      if (ext != ".h" && ext != ".cc") continue;
      const std::string relative = std::filesystem::relative(entry.path(), root).string();
      if (folder_of(relative) != name) continue;  // a sub-folder with a floor of its own
      std::ifstream in(entry.path());
      std::string line;
      for (int number = 1; std::getline(in, line); ++number) {
        if (line.rfind("#include \"", 0) != 0) continue;
        const std::string included = line.substr(10, line.find('"', 10) - 10);
        const std::string target = folder_of(included);
        if (target == name || target.empty()) continue;
        if (floor.count(target) == 0 && !std::filesystem::exists(root / target)) continue;  // a library's (absl/...)
        INFO(relative << ":" << number << " includes " << included);
        REQUIRE(floor.count(target) == 1);
        CHECK(floor.at(target) < own_floor);
        ++checked;
      }
    }
  }
  CHECK(checked > 100);  // the scan saw the tree
}

}  // namespace osh::test
