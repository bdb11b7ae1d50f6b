# Installs the build into PREFIX and checks the layout a driver author and an operator rely on.
# Run by ctest (install_layout) with -DBUILD_DIR= -DPREFIX= -DPROTOC=.
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE install_log)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
# The conffile is only in the package: a plain install never writes /etc (nor anything outside PREFIX).
string(REGEX MATCHALL "-- (Installing|Up-to-date): [^\n]*" installed "${install_log}")
foreach(line ${installed})
  string(REGEX REPLACE "^-- [A-Za-z-]+: " "" path "${line}")
  string(FIND "${path}" "${PREFIX}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "cmake --install --prefix wrote outside the prefix: ${path}")
  endif()
endforeach()
list(LENGTH installed count)
if(count LESS 20)
  message(FATAL_ERROR "cmake --install listed ${count} file(s): ${install_log}")
endif()
set(expected
  bin/policy-gateway
  bin/policyctl
  bin/null-policy-driver
  bin/policy-driver-conformance
  bin/policy-log-witness
  share/openshell/proto/openshell/policy/driver/v1/driver.proto
  share/openshell/proto/openshell/policy/gateway/v1/gateway.proto
  share/openshell/proto/openshell/policy/conformance/v1/conformance.proto
  share/openshell/proto/openshell/sandbox/v1/sandbox.proto
  share/openshell/vectors/projection-vectors.json
  share/doc/openshell-policy-gateway/driver-contract.md
  share/doc/openshell-policy-gateway/threat-model.md
  share/doc/openshell-policy-gateway/audit.md
  share/doc/openshell-policy-gateway/policyctl.md
  share/doc/openshell-policy-gateway/trust-store.md
  share/doc/openshell-policy-gateway/witness.md
  share/openshell/examples/gateway.toml
  share/openshell/examples/python_driver/driver.py
  share/openshell/examples/python_driver/policy.txtpb
  lib/systemd/system/policy-gateway.service
  include/openshell-policy-gateway/sandbox_client/sandbox_client.h
  include/openshell-policy-gateway/sandbox_client/log_proof.h
  include/openshell-policy-gateway/tlog/merkle.h
  lib/openshell-policy-gateway/libosh_tlog.a
  lib/openshell-policy-gateway/libosh_sandbox_client.a
  lib/pkgconfig/openshell-sandbox-client.pc
  share/man/man8/policy-gateway.8.gz
  share/man/man1/policyctl.1.gz
  share/man/man8/policy-log-witness.8.gz
  share/doc/openshell-policy-gateway/copyright
  share/doc/openshell-policy-gateway/changelog.gz
  share/doc/openshell-policy-gateway/contract/SPEC.md
  share/doc/openshell-policy-gateway/contract/SCHEMA.md
  share/openshell/examples/policies/github.yaml
  libexec/openshell-policy-gateway/example-signing-driver
  libexec/openshell-policy-gateway/example-supervisor
  share/bash-completion/completions/policyctl)
foreach(path ${expected})
  if(NOT EXISTS "${PREFIX}/${path}")
    message(FATAL_ERROR "not installed: ${path}")
  endif()
endforeach()
foreach(program policy-gateway policyctl null-policy-driver policy-driver-conformance policy-log-witness)
  execute_process(COMMAND "${PREFIX}/bin/${program}" --help RESULT_VARIABLE rc OUTPUT_VARIABLE help ERROR_VARIABLE help)
  if(NOT rc EQUAL 0 OR NOT help MATCHES "Usage")
    message(FATAL_ERROR "${program} --help failed (${rc}): ${help}")
  endif()
endforeach()
# The installed contract stands alone: driver.proto compiles from the installed tree (for C++ and with
# the well-known types only).
execute_process(COMMAND "${PROTOC}" -I "${PREFIX}/share/openshell/proto" --cpp_out=${PREFIX}
                openshell/policy/driver/v1/driver.proto openshell/policy/gateway/v1/gateway.proto
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed protos do not compile: ${err}")
endif()
# The man pages carry the programs' own options; the completion script is valid bash.
execute_process(COMMAND gzip -dc "${PREFIX}/share/man/man1/policyctl.1.gz" OUTPUT_VARIABLE page RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "policyctl.1.gz does not decompress")
endif()
if(NOT page MATCHES "\\\\-\\\\-server" OR NOT page MATCHES "SEE ALSO")
  message(FATAL_ERROR "policyctl.1 lacks the options or SEE ALSO")
endif()
execute_process(COMMAND bash -n "${PREFIX}/share/bash-completion/completions/policyctl" RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the bash completion does not parse: ${err}")
endif()
# The supervisor client library stands alone too: the example supervisor builds against the installed
# headers, archives and pkg-config file only.
set(ENV{PKG_CONFIG_PATH} "${PREFIX}/lib/pkgconfig")
execute_process(COMMAND pkg-config --cflags --libs openshell-sandbox-client
                RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config openshell-sandbox-client: ${err}")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
execute_process(COMMAND c++ -std=c++20 "${SOURCE_DIR}/examples/supervisor/supervisor.cc" -o "${PREFIX}/example-supervisor"
                        ${flags}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the example supervisor does not build against the installed library: ${err}")
endif()
execute_process(COMMAND "${PREFIX}/example-supervisor" --help RESULT_VARIABLE rc OUTPUT_VARIABLE help)
if(NOT rc EQUAL 0 OR NOT help MATCHES "--trust-store")
  message(FATAL_ERROR "the example supervisor built against the installed library does not run (${rc})")
endif()
message(STATUS "install layout complete: ${PREFIX}")
