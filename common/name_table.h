// One name per enumerator, written once (Envoy's constexpr flag-name tables): the enum is what code
// passes around, the name is what is stored, hashed, sent or documented. Lookups are linear over a
// handful of entries; constexpr, no allocation, thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <utility>

#include "absl/strings/string_view.h"

namespace osh::common {

template <typename Enum, size_t N>
struct NameTable {
  std::array<std::pair<Enum, absl::string_view>, N> entries;

  // The enumerator's name; "" for a value outside the table (a cast, never a named enumerator: a test
  // keeps every enumerator in its table).
  constexpr absl::string_view Name(Enum value) const {
    for (const auto& [v, name] : entries) {
      if (v == value) return name;
    }
    return {};
  }
  // The enumerator named `name`, or nullopt.
  constexpr std::optional<Enum> Parse(absl::string_view name) const {
    for (const auto& [v, n] : entries) {
      if (n == name) return v;
    }
    return std::nullopt;
  }
  constexpr size_t size() const { return N; }
  constexpr auto begin() const { return entries.begin(); }
  constexpr auto end() const { return entries.end(); }
};

}  // namespace osh::common
