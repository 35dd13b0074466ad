# bench_sae_align: `aquin sae align` (the CLI, in a child) on two generated SAEs of d_sae 16384 and
# d_in 2048 (the sparse candidate path), wall time, peak RSS and the export's stage timings; then the
# exact assignment through the SDK at d_sae 1024 / 4096 / 8192. Target: <= 60 s for the command.
add_executable(bench_sae_align ${CMAKE_CURRENT_LIST_DIR}/bench_sae_align.cpp)
target_link_libraries(bench_sae_align PRIVATE aquin::sdk)
target_compile_definitions(bench_sae_align PRIVATE AQUIN_BIN="$<TARGET_FILE:aquin>")
add_dependencies(bench_sae_align aquin aquin_plugin_sae_align)
target_include_directories(bench_sae_align PRIVATE ${PROJECT_SOURCE_DIR}/tests/unit)
