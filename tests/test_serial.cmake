# Included by ctest after the Catch2 tests are declared (beside tests/test_costs.cmake): tests that measure
# the gateway's own resources under a flood run alone (RUN_SERIAL). What stays resident after an HTTP/2
# rapid-reset flood is the allocator's high-water mark of the resets in flight, which grows with how
# slowly a starved host drains them: 20 MB alone, 422 MB once beside four other tests on 2 cores — the
# bound (400 MB) is there to catch the regression's ~1 GB, not a busy host.
foreach(osh_serial_test IN ITEMS
        "hostile: unauthenticated HTTP/2 floods (half-sent messages, rapid reset) leave memory bounded")
  set_tests_properties("${osh_serial_test}" PROPERTIES RUN_SERIAL ON)
endforeach()
