# bench_weight_diff: aquin weight-diff on a generated pair with Llama-3.2-1B shapes against the plain
# PyTorch way (bench/reference_weight_diff.py), wall time and peak RSS of both in the same run.
add_executable(bench_weight_diff ${CMAKE_CURRENT_LIST_DIR}/bench_weight_diff.cpp)
target_link_libraries(bench_weight_diff PRIVATE aquin::sdk)
target_compile_definitions(bench_weight_diff PRIVATE
  AQUIN_BIN="$<TARGET_FILE:aquin>"
  AQUIN_BENCH_REFERENCE="${CMAKE_CURRENT_LIST_DIR}/reference_weight_diff.py")
add_dependencies(bench_weight_diff aquin aquin_plugin_weight_diff aquin_adapter_llm)
