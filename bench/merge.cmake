# bench_merge: aquin merge-analysis on a rank-16 LoRA over a generated base with Llama-3.2-1B shapes,
# wall time, peak RSS and the time of every signal (from the export's timings_s). Target: < 10 s.
add_executable(bench_merge ${CMAKE_CURRENT_LIST_DIR}/bench_merge.cpp)
target_link_libraries(bench_merge PRIVATE aquin::sdk)
target_compile_definitions(bench_merge PRIVATE AQUIN_BIN="$<TARGET_FILE:aquin>")
add_dependencies(bench_merge aquin aquin_plugin_merge_analysis aquin_adapter_llm)
target_include_directories(bench_merge PRIVATE ${PROJECT_SOURCE_DIR}/tests/unit)
