# Every third-party dependency comes from a Debian package (scripts/setup.sh installs them).
option(TRM_BUILD_TESTS "Build the GoogleTest suite" ON)

find_package(Torch REQUIRED)
# LibTorch 2.12 and later refuse to compile below C++20 (ATen's own #error); the code builds as
# either (TRM_CXX_STANDARD=20 checks it against older LibTorch too).
if(Torch_VERSION VERSION_GREATER_EQUAL 2.12 AND CMAKE_CXX_STANDARD LESS 20)
  message(STATUS "LibTorch ${Torch_VERSION} needs C++20: building as C++20")
  set(CMAKE_CXX_STANDARD 20)
endif()
find_package(nlohmann_json 3 REQUIRED)
find_package(spdlog REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED)
# The control plane (proto/, coordinator/, the worker agent, trmctl).
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(civetweb CONFIG REQUIRED)  # the dashboard's HTTP server (libcivetweb-dev)
find_program(TRM_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
if(TRM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# LibTorch exports its flags through TORCH_CXX_FLAGS (the _GLIBCXX_USE_CXX11_ABI setting);
# every target that includes a LibTorch header needs them.
separate_arguments(TRM_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")
message(STATUS "LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")
