# ccache in front of the compiler. The sloppiness settings let ccache cache objects built with a
# precompiled header (the LibTorch PCH), which is where most of the build time goes.
option(TRM_USE_CCACHE "Compile through ccache when it is installed" ON)
find_program(CCACHE_PROGRAM ccache)
if(TRM_USE_CCACHE AND CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_BASEDIR=${CMAKE_SOURCE_DIR} ${CCACHE_PROGRAM})
  message(STATUS "ccache: ${CCACHE_PROGRAM}")
endif()
