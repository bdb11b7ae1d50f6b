// Every case of containment-vectors.json (ported from upstream's managed-maximum draft): inside,
// outside with the first widening named, or undecidable constructs failing closed.
#include <catch2/catch.hpp>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "policy/containment.h"
#include "policy/policy_file.h"
#include "tests/test_support.h"
#include "tests/vectors.h"

using google::protobuf::Struct;
using osh::policy::CheckContainment;
using osh::policy::Containment;

TEST_CASE("containment vectors: every upstream case is decided as upstream's draft decides it", "[policy][containment][vectors]") {
  const Struct file = osh::test::LoadJson(osh::test::DataDir() / "containment-vectors.json");
  const auto& cases = file.fields().at("cases").list_value().values();
  REQUIRE(cases.size() >= 30);
  for (const auto& item : cases) {
    const Struct& c = item.struct_value();
    const std::string name = c.fields().at("name").string_value();
    INFO(name);
    const auto ceiling = osh::test::vectors::PolicyOfCase(c, "ceiling");
    const auto candidate = osh::test::vectors::PolicyOfCase(c, "candidate");
    const Struct& expect = c.fields().at("expect").struct_value();
    const bool contained = expect.fields().at("contained").bool_value();
    const bool unsupported = expect.fields().contains("unsupported") && expect.fields().at("unsupported").bool_value();
    const auto result = CheckContainment(candidate, ceiling);
    INFO("detail: " << result.detail);
    if (contained) {
      CHECK(result.verdict == Containment::kInside);
      CHECK(result.ToStatus().ok());
    } else if (unsupported) {
      CHECK(result.verdict == Containment::kUnknown);
      CHECK(absl::StartsWith(result.ToStatus().message(), "containment_unknown: "));
    } else {
      CHECK(result.verdict == Containment::kOutside);
      CHECK(absl::StartsWith(result.ToStatus().message(), "exceeds_ceiling: "));
      CHECK(absl::StrContains(absl::AsciiStrToLower(result.detail),
                              absl::AsciiStrToLower(expect.fields().at("widening_contains").string_value())));
    }
  }
}
