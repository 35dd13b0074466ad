# bench_bert_forward: the embedding adapter's BERT forward on a generated gte-small-shaped model
# (fp32, 32 x 128 tokens) against the same forward in PyTorch eager (bench/reference_bert_forward.py)
# measured in the same run: sentences/s of both and the ratio.
add_executable(bench_bert_forward ${CMAKE_CURRENT_LIST_DIR}/bench_bert_forward.cpp)
target_link_libraries(bench_bert_forward PRIVATE aquin_host_core)
target_compile_definitions(bench_bert_forward PRIVATE
  AQUIN_BENCH_REFERENCE="${CMAKE_CURRENT_LIST_DIR}/reference_bert_forward.py")
add_dependencies(bench_bert_forward aquin_adapter_embedding)
