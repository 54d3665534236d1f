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

# Debian's LibTorch loads the system's libblas.so.3, by default OpenBLAS's pthread build, whose
# threads spin between products on the cores LibTorch's OpenMP threads (and our kernels') then
# need. Its OpenMP build runs the products on that same libgomp pool: on 2 cores the tiny
# preset's step took 0.089 s against 0.122 s (docs/performance.md). Where it is installed our
# binaries load it whatever the system's default, through a DT_RPATH (not RUNPATH: only RPATH
# also applies to libtorch_cpu's own dependencies).
option(TRM_OPENBLAS_OPENMP "Load OpenBLAS's OpenMP build where it is installed" ON)
set(TRM_OPENBLAS_OPENMP_DIR "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp")
set(TRM_LOADS_OPENBLAS_OPENMP OFF)
if(TRM_OPENBLAS_OPENMP AND EXISTS "${TRM_OPENBLAS_OPENMP_DIR}/libblas.so.3")
  message(STATUS "BLAS: OpenBLAS's OpenMP build (${TRM_OPENBLAS_OPENMP_DIR})")
  set(TRM_LOADS_OPENBLAS_OPENMP ON)
  add_link_options("LINKER:--disable-new-dtags" "LINKER:-rpath,${TRM_OPENBLAS_OPENMP_DIR}")
endif()
message(STATUS "LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")
