# libFuzzer targets (issue 14): every fuzz/fuzz_<name>.cpp becomes an executable fuzz_<name>, built
# with clang and -fsanitize=fuzzer,address,undefined over its own instrumented copy of the sft_core
# sources. Configure a separate build dir: CC=clang CXX=clang++ cmake -DSFT_FUZZ=ON (scripts/fuzz.sh
# does it). ctest label "fuzz": replay of the seed corpus and regression inputs (-runs=0) and a short
# fixed-seed smoke per target (tests/fuzz/run_target.sh).
option(SFT_FUZZ "Build the libFuzzer targets of fuzz/ (needs clang)" OFF)
if(SFT_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SFT_FUZZ=ON needs clang (CC=clang CXX=clang++), got ${CMAKE_CXX_COMPILER_ID}")
  endif()
  set(SFT_FUZZ_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
  # The parsers and what they call (core, tokenizer, data, io, the model's config and tables, the
  # option table, --fsdp_config's reader), with coverage instrumentation for libFuzzer: a third of
  # sft_core, so that CI builds it in minutes. The model is built over a host-memory backend of the targets' own
  # (fuzz/host_backend.h) instead of the CPU kernels. ISA options of *_avx512.cpp are source properties.
  set(SFT_FUZZ_SOURCES ${SFT_SOURCES})
  list(FILTER SFT_FUZZ_SOURCES INCLUDE REGEX
       ".*/src/(core|tokenizer|data|io|model)/[^/]*\\.cpp$|.*/src/backend/backend\\.cpp$|.*/src/cli/options\\.cpp$|.*/src/train/schedule\\.cpp$|.*/src/dist/fsdp_config\\.cpp$")
  list(FILTER SFT_FUZZ_SOURCES EXCLUDE REGEX ".*/src/model/(generate|init|presets)\\.cpp$")
  add_library(sft_fuzz_core STATIC ${SFT_FUZZ_SOURCES})
  target_include_directories(sft_fuzz_core PUBLIC src ${DNNL_INCLUDE_DIR} ${CLI11_INCLUDE_DIR})
  target_compile_options(sft_fuzz_core PUBLIC ${SFT_FUZZ_FLAGS} -fsanitize=fuzzer-no-link)
  target_link_libraries(sft_fuzz_core PUBLIC OpenMP::OpenMP_CXX fmt::fmt nlohmann_json::nlohmann_json yaml-cpp
    PkgConfig::SENTENCEPIECE PkgConfig::PCRE2 PkgConfig::XXHASH ${DNNL_LIBRARY})
  set(SFT_FUZZ_TARGETS "")
  file(GLOB fuzz_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/fuzz/fuzz_*.cpp)
  list(FILTER fuzz_sources EXCLUDE REGEX ".*/fuzz_util\\.cpp$")  # shared by every target
  foreach(src ${fuzz_sources})
    get_filename_component(target ${src} NAME_WE)   # fuzz_<name>
    string(REGEX REPLACE "^fuzz_" "" name ${target})
    add_executable(${target} ${src} ${CMAKE_SOURCE_DIR}/fuzz/fuzz_util.cpp)
    target_link_libraries(${target} PRIVATE sft_fuzz_core)
    target_link_options(${target} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_compile_definitions(${target} PRIVATE SFT_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    list(APPEND SFT_FUZZ_TARGETS ${target})
    # Replay: every seed and every regression input once; smoke: a fixed-seed run of a few seconds.
    add_test(NAME fuzz.${name}.replay
             COMMAND bash ${CMAKE_SOURCE_DIR}/tests/fuzz/run_target.sh replay $<TARGET_FILE:${target}> ${name})
    add_test(NAME fuzz.${name}.smoke
             COMMAND bash ${CMAKE_SOURCE_DIR}/tests/fuzz/run_target.sh smoke $<TARGET_FILE:${target}> ${name})
    set_tests_properties(fuzz.${name}.replay fuzz.${name}.smoke PROPERTIES LABELS fuzz TIMEOUT 180)
  endforeach()
  add_custom_target(fuzz_all DEPENDS ${SFT_FUZZ_TARGETS})
endif()
