# Included by ctest (TEST_INCLUDE_FILES of tests/, after the Catch2 tests are declared): gives each test
# the COST it took in the last run, so that `ctest -j` starts the longest first.
#
# ctest keeps those costs itself (Testing/Temporary/CTestCostData.txt) but reads each line back cut at
# the first blank, so a test whose name has blanks — every Catch2 test of this suite — would get none and
# start in declaration order: the 90 s tests last. This reads the same file whole (a line is
# "<name> <runs> <cost>"), or, in a fresh build folder, the reference run's copy (tests/ctest-costs.txt).
# Expects OSH_COST_FILES: the files to try, in order. A test not named in them keeps no COST.
foreach(file IN LISTS OSH_COST_FILES)
  if(EXISTS "${file}")
    file(STRINGS "${file}" osh_cost_lines)
    foreach(osh_cost_line IN LISTS osh_cost_lines)
      if(osh_cost_line STREQUAL "---")
        break()  # what follows are the tests that failed last time
      endif()
      if(osh_cost_line MATCHES "^(.+) [0-9]+ ([0-9.]+)$")
        set_tests_properties("${CMAKE_MATCH_1}" PROPERTIES COST "${CMAKE_MATCH_2}")
      endif()
    endforeach()
    break()
  endif()
endforeach()
