# bench_tokenizer: encode throughput (tokens/s) of GPT-2 byte-level BPE (slow files), BERT WordPiece
# (tokenizer.json) and the Llama-3-style fixture on a few hundred KB of text, cold (empty word
# cache) and warm, with sanity checks (same ids on every run, byte-level round trip). There is no
# Python reference tokenizer on this machine, so it prints throughput, not a ratio.
add_executable(bench_tokenizer ${CMAKE_CURRENT_LIST_DIR}/bench_tokenizer.cpp)
target_link_libraries(bench_tokenizer PRIVATE aquin::sdk)
target_compile_options(bench_tokenizer PRIVATE -Wall -Wextra)
target_compile_definitions(bench_tokenizer PRIVATE
  AQUIN_SHARED_DIR="${CMAKE_SOURCE_DIR}/../shared"
  AQUIN_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
