# Debian packages (cpack -G DEB; scripts/package-deb.sh), split as Debian splits a daemon with a library:
#   openshell-policy-gateway          the daemon, policyctl, the drivers and tools, the systemd unit,
#                                     /etc/openshell/gateway.toml (a conffile), man pages, docs, protos
#   libopenshell-sandbox-client-dev   the supervisor client library: static archives, headers, pkg-config
#   openshell-policy-gateway-examples example policies, ceilings and drivers (the Python one as source;
#                                     example-signing-driver and example-supervisor built)
# Every install() rule names its component (the default is `gateway`, set at the top of CMakeLists.txt).
# Each package carries its own copyright and changelog.gz, as Debian policy asks; tests/check_deb.sh runs
# lintian on all three in the suite (no errors allowed).
include(GNUInstallDirs)

# The conffile: only in the package (EXCLUDE_FROM_ALL keeps `cmake --install --prefix P` from writing /etc).
install(FILES ${PROJECT_SOURCE_DIR}/deploy/gateway.toml DESTINATION /etc/openshell COMPONENT gateway EXCLUDE_FROM_ALL)

# Examples: everything under examples/ but the C++ sources and build files of the built ones.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/ DESTINATION share/openshell/examples COMPONENT examples
        USE_SOURCE_PERMISSIONS PATTERN "CMakeLists.txt" EXCLUDE PATTERN "*.cc" EXCLUDE PATTERN "__pycache__" EXCLUDE)
install(TARGETS example-signing-driver example-supervisor RUNTIME DESTINATION libexec/openshell-policy-gateway
        COMPONENT examples)

# copyright and changelog.gz (gzip -n: no time stamp, so the package is reproducible) for each package.
set(OSH_CHANGELOG_GZ ${PROJECT_BINARY_DIR}/deploy/changelog.gz)
add_custom_command(OUTPUT ${OSH_CHANGELOG_GZ}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/deploy
  COMMAND sh -c "gzip -9n -c '${PROJECT_SOURCE_DIR}/deploy/debian/changelog' > '${OSH_CHANGELOG_GZ}'"
  DEPENDS ${PROJECT_SOURCE_DIR}/deploy/debian/changelog VERBATIM)
add_custom_target(debian_changelog ALL DEPENDS ${OSH_CHANGELOG_GZ})
foreach(entry "gateway|openshell-policy-gateway" "dev|libopenshell-sandbox-client-dev"
              "examples|openshell-policy-gateway-examples")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 component)
  list(GET parts 1 package)
  install(FILES ${PROJECT_SOURCE_DIR}/deploy/debian/copyright ${OSH_CHANGELOG_GZ}
          DESTINATION share/doc/${package} COMPONENT ${component})
endforeach()

set(CPACK_PACKAGE_NAME "openshell-policy-gateway")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_CONTACT "OpenShell policy gateway maintainers <policy-gateway@openshell.invalid>")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_GENERATOR "DEB")
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL gateway dev examples)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)  # the build is RelWithDebInfo; the packages ship stripped binaries
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/openshell/policy-gateway")

set(CPACK_DEBIAN_GATEWAY_PACKAGE_NAME "openshell-policy-gateway")
set(CPACK_DEBIAN_GATEWAY_PACKAGE_SECTION "admin")
# libpq5 is loaded at run time for postgresql:// databases (store/libpq.h): dpkg-shlibdeps cannot see it.
set(CPACK_DEBIAN_GATEWAY_PACKAGE_DEPENDS "libpq5")
set(CPACK_DEBIAN_GATEWAY_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/deploy/debian/conffiles;${PROJECT_SOURCE_DIR}/deploy/debian/postinst;${PROJECT_SOURCE_DIR}/deploy/debian/prerm;${PROJECT_SOURCE_DIR}/deploy/debian/postrm")
set(CPACK_DEBIAN_GATEWAY_DESCRIPTION "decides which policy each agent sandbox enforces, and proves it
The OpenShell policy gateway decides which filesystem, process and network
policy each agent sandbox enforces and proves that it is the policy an
authority issued. It takes each sandbox's policy from its builtin driver
(policies authored through its API, with revisions) or from a third-party
PolicyDriver over a Unix socket, checks every projection against a trust
store of authority keys (Ed25519, ECDSA P-256, k-of-n), and admits it whole
or not at all. Sandboxes fetch and watch their admitted policy with a secret
handle; every decision is audited in a hash chain, optionally published as a
verifiable log. This package holds the daemon (policy-gateway, a systemd
service), policyctl, null-policy-driver, policy-driver-conformance and
policy-log-witness, with man pages, docs and the contract's protos.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME "libopenshell-sandbox-client-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION "libdevel")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libgrpc++-dev, libprotobuf-dev, libssl-dev, libyaml-cpp-dev, libabsl-dev, pkg-config")
set(CPACK_DEBIAN_DEV_DESCRIPTION "OpenShell policy gateway supervisor client library (development)
The client side of the OpenShell policy gateway's sandbox API: a sandbox
supervisor links it to fetch its admitted policy over a Unix socket or TLS,
verify the projection end to end against its own trust store and the
verifiable log, watch for updates and report what it loaded. Static
archives, headers and a pkg-config file (openshell-sandbox-client).")

set(CPACK_DEBIAN_EXAMPLES_PACKAGE_NAME "openshell-policy-gateway-examples")
set(CPACK_DEBIAN_EXAMPLES_PACKAGE_SECTION "admin")
set(CPACK_DEBIAN_EXAMPLES_PACKAGE_DEPENDS "openshell-policy-gateway (= ${PROJECT_VERSION}), python3")
# The Python driver runs with these (and its stubs are generated with protoc and grpc_python_plugin).
set(CPACK_DEBIAN_EXAMPLES_PACKAGE_SUGGESTS "python3-grpcio, python3-protobuf, protobuf-compiler-grpc")
set(CPACK_DEBIAN_EXAMPLES_DESCRIPTION "OpenShell policy gateway examples: policies, ceilings and drivers
What the OpenShell policy gateway's walkthroughs use: example sandbox
policies and merge operations, ceilings, a minimal PolicyDriver in Python
(source), and two built examples in /usr/libexec/openshell-policy-gateway:
example-signing-driver, a third-party driver that signs its projections, and
example-supervisor, a sandbox supervisor built on the client library.")

include(CPack)
