# Included by ctest in a tree configured with OSH_UNIT_TESTS_FROM=<sanitizer tree> (tests/CMakeLists.txt):
# declares the unit tests that tree's unit_tests binary listed when it was built (Catch2's discovery), so
# they run here, one ctest test each, under ASan+UBSan. A missing or unbuilt sanitizer tree is a failing
# test that says what to build, never a silent gap.
file(GLOB osh_unit_test_lists "${OSH_UNIT_TESTS_FROM}/tests/unit_tests_tests-*.cmake")
list(LENGTH osh_unit_test_lists osh_unit_test_list_count)
if(osh_unit_test_list_count EQUAL 1)
  include("${osh_unit_test_lists}")
else()
  add_test("unit tests: ${OSH_UNIT_TESTS_FROM}/tests/unit_tests is not built"
           sh -c "echo 'build it: cmake --build ${OSH_UNIT_TESTS_FROM} --target unit_tests (scripts/test.sh does)'; exit 1")
endif()
