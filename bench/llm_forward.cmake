# bench_llm_forward: the llm adapter's forward at Llama-3.2-1B shapes against PyTorch eager
# (bench/reference_llm_forward.py) in the same run, as a fraction of the machine's fp32 GEMM rate,
# the cost of capturing a middle layer, and peak RSS with a LoRA adapter against the base alone.
add_executable(bench_llm_forward ${CMAKE_CURRENT_LIST_DIR}/bench_llm_forward.cpp)
target_link_libraries(bench_llm_forward PRIVATE aquin_host_core aquin::sdk)
target_compile_definitions(bench_llm_forward PRIVATE
  AQUIN_BENCH_LLM_REFERENCE="${CMAKE_CURRENT_LIST_DIR}/reference_llm_forward.py")
add_dependencies(bench_llm_forward aquin_adapter_llm)
