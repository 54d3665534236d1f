# One precompiled header for LibTorch, compiled once and reused by every target that includes
# it (REUSE_FROM needs identical flags, which trm_link_torch guarantees).
add_library(trm_torch_pch OBJECT ${CMAKE_SOURCE_DIR}/cmake/pch_anchor.cpp)
target_link_libraries(trm_torch_pch PUBLIC torch)
target_compile_options(trm_torch_pch PUBLIC ${TRM_TORCH_CXX_FLAGS})
target_precompile_headers(trm_torch_pch PRIVATE ${CMAKE_SOURCE_DIR}/cmake/torch_pch.h)

# Links LibTorch into TARGET and lets it share the LibTorch precompiled header.
function(trm_link_torch target visibility)
  target_link_libraries(${target} ${visibility} torch)
  target_compile_options(${target} ${visibility} ${TRM_TORCH_CXX_FLAGS} -Winvalid-pch)
  target_precompile_headers(${target} REUSE_FROM trm_torch_pch)
endfunction()
