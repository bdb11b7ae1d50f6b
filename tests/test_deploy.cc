// The deployment files in deploy/ are well-formed: the Kubernetes manifests parse as YAML with the kinds
// and references they need, and the gateway configuration they embed (and the example gateway.toml)
// resolves as the gateway would resolve it.
#include <catch2/catch.hpp>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "gateway/config.h"
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
