# kiln_add_library(<stage> DEPS <targets...>)
# One library per stage folder: kiln_<stage>, alias kiln::<stage>. Sources are the folder's .cpp files.
function(kiln_add_library stage)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  add_library(kiln_${stage} STATIC ${sources})
  add_library(kiln::${stage} ALIAS kiln_${stage})
  target_include_directories(kiln_${stage} PUBLIC ${PROJECT_SOURCE_DIR}/src
                                                  ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(kiln_${stage} PUBLIC ${ARG_DEPS})
  kiln_set_warnings(kiln_${stage})
  if(ARG_DEPS MATCHES "torch")
    kiln_use_torch_pch(kiln_${stage})
  endif()
endfunction()

# One precompiled header (cmake/torch_pch.h) built once by kiln_torch_pch and reused by every
# target that links LibTorch. Reuse needs identical flags and definitions, so the anchor links the
# same interface targets as kiln_core plus torch, and every user gets the same warning flags.
# KILN_NO_PCH=ON turns it off (e.g. to check that each file includes what it uses).
option(KILN_NO_PCH "Build without the precompiled LibTorch header" OFF)
function(kiln_add_torch_pch)
  if(KILN_NO_PCH)
    return()
  endif()
  add_library(kiln_torch_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/torch_pch.cpp)
  target_link_libraries(kiln_torch_pch PUBLIC OpenSSL::Crypto spdlog::spdlog fmt::fmt
                        nlohmann_json::nlohmann_json Threads::Threads yaml-cpp ${TORCH_LIBRARIES})
  kiln_set_warnings(kiln_torch_pch)
  target_precompile_headers(kiln_torch_pch PRIVATE ${PROJECT_SOURCE_DIR}/cmake/torch_pch.h)
endfunction()

function(kiln_use_torch_pch target)
  if(TARGET kiln_torch_pch)
    target_precompile_headers(${target} REUSE_FROM kiln_torch_pch)
  endif()
endfunction()

function(kiln_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# kiln_add_test(<stage> LIBS <targets...>)
# One gtest executable per stage from tests/<stage>/*_test.cpp, each test discovered on its own
# and labelled <stage>. Files named *_slow_test.cpp go into <stage>_slow_tests, labelled slow
# (one label only: gtest_discover_tests splits list-valued properties; `ctest -LE slow` skips
# them, `make test` runs them).
function(kiln_add_test stage)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  file(GLOB all_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cpp)
  file(GLOB slow_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_slow_test.cpp)
  set(fast_sources ${all_sources})
  if(slow_sources)
    list(REMOVE_ITEM fast_sources ${slow_sources})
  endif()
  if(fast_sources)
    kiln_add_test_executable(${stage}_tests "${fast_sources}" "${ARG_LIBS}" "${stage}")
  endif()
  if(slow_sources)
    kiln_add_test_executable(${stage}_slow_tests "${slow_sources}" "${ARG_LIBS}" "slow")
  endif()
endfunction()

function(kiln_add_test_executable name sources libs labels)
  add_executable(${name} ${sources})
  target_link_libraries(${name} PRIVATE ${libs} GTest::gtest GTest::gtest_main kiln_test_support)
  kiln_set_warnings(${name})
  if(libs MATCHES "kiln::(features|model|registry|data|train|serve)")
    kiln_use_torch_pch(${name})
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${labels}")
endfunction()
