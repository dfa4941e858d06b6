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

# kiln_add_test(<stage> LIBS <targets...> [LABELS ...])
# One gtest executable per stage from tests/<stage>/*_test.cpp, tests discovered individually.
function(kiln_add_test stage)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  if(NOT sources)
    return()  # stage without tests yet
  endif()
  add_executable(${stage}_tests ${sources})
  target_link_libraries(${stage}_tests PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main kiln_test_support)
  kiln_set_warnings(${stage}_tests)
  gtest_discover_tests(${stage}_tests
    DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "KILN_BINARY=${PROJECT_BINARY_DIR}/kiln;KILN_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
               LABELS ${stage})
endfunction()
