# bench_trajectory: trajectory-analysis over 20 generated checkpoints of a small Llama-shaped model:
# cost per checkpoint after the first against one weight-diff, and peak RSS with 5 vs 20 checkpoints.
add_executable(bench_trajectory ${CMAKE_CURRENT_LIST_DIR}/bench_trajectory.cpp)
target_link_libraries(bench_trajectory PRIVATE aquin::sdk)
target_compile_definitions(bench_trajectory PRIVATE AQUIN_BIN="$<TARGET_FILE:aquin>")
add_dependencies(bench_trajectory aquin aquin_plugin_weight_diff aquin_plugin_trajectory_analysis aquin_adapter_llm)
