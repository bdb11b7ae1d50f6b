# The fuzz targets' harnesses built by the sanitizer tree (build-asan/, GCC, ASan+UBSan) with the
# suite's runner (fuzz/replay_main.cc) instead of libFuzzer: the suite replays each target's seeds and a
# fixed number of inputs mutated from them, linked with the libraries this tree compiles anyway for the
# unit tests. Coverage-guided runs are scripts/fuzz.sh (clang, its own tree: fuzz/CMakeLists.txt).
set(OSH_FUZZ_DIR ${PROJECT_SOURCE_DIR}/fuzz)
add_library(osh_fuzz_runner OBJECT ${OSH_FUZZ_DIR}/replay_main.cc)
target_link_libraries(osh_fuzz_runner PUBLIC CLI11::CLI11)
# The runner only reads files and mutates bytes for the harness, which is what the sanitizers watch:
# compiled plainly, like the code that is not ours (most of its compile time is CLI11's headers).
target_compile_options(osh_fuzz_runner PRIVATE ${OSH_NOT_OURS_OPTIONS})
foreach(name projection_check trust_store policy_file decisions config gateway_requests)
  add_executable(fuzz_${name} ${OSH_FUZZ_DIR}/fuzz_${name}.cc)
  set_target_properties(fuzz_${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
  target_include_directories(fuzz_${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(fuzz_${name} PRIVATE osh_fuzz_runner osh_gateway osh_clock osh_store osh_trust osh_policy yaml-cpp)
endforeach()
# The verifiable log's parsers (tlog/) and the witness's request handling (witness/): no gateway needed.
foreach(name note checkpoint tile_path witness_request)
  add_executable(fuzz_${name} ${OSH_FUZZ_DIR}/fuzz_${name}.cc)
  set_target_properties(fuzz_${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
  target_include_directories(fuzz_${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(fuzz_${name} PRIVATE osh_fuzz_runner osh_witness osh_tlog)
endforeach()
add_executable(make_seeds ${OSH_FUZZ_DIR}/make_seeds.cc)
set_target_properties(make_seeds PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
target_link_libraries(make_seeds PRIVATE osh_trust osh_policy)
add_custom_target(fuzz_harnesses DEPENDS make_seeds fuzz_projection_check fuzz_trust_store fuzz_policy_file fuzz_decisions
                                         fuzz_config fuzz_gateway_requests fuzz_note fuzz_checkpoint fuzz_tile_path
                                         fuzz_witness_request)
