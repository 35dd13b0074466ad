# bench_sae_diff: `aquin sae diff` (the CLI, in a child) at Llama-3.2-1B shapes with a rank-16 LoRA
# fine-tune and a TopK SAE (d_sae 32768, k 32) on layer 8 over 32 prompts x 64 tokens: wall time,
# peak RSS and the time of every stage (from the export's timings_s), against the same work in
# PyTorch eager (bench/reference_sae_diff.py) in the same run, and their agreement on every feature.
# Targets: <= 35 s, >= 1.5x the PyTorch way, peak RSS <= 2.5 GB. Generated files are kept in the
# build folder (bench-data/sae-diff).
add_executable(bench_sae_diff ${CMAKE_CURRENT_LIST_DIR}/bench_sae_diff.cpp)
target_link_libraries(bench_sae_diff PRIVATE aquin::sdk)
target_compile_definitions(bench_sae_diff PRIVATE AQUIN_BIN="$<TARGET_FILE:aquin>"
  AQUIN_BENCH_SAE_DIFF_REFERENCE="${CMAKE_CURRENT_LIST_DIR}/reference_sae_diff.py"
  AQUIN_BENCH_SAE_DIFF_DIR="${CMAKE_BINARY_DIR}/bench-data/sae-diff")
add_dependencies(bench_sae_diff aquin aquin_plugin_sae_diff aquin_adapter_llm)
target_include_directories(bench_sae_diff PRIVATE ${PROJECT_SOURCE_DIR}/tests/unit)
