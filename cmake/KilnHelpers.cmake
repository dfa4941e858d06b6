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
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${labels}")
endfunction()
