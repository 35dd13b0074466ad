# bench_spectral: aquin::spectral_norm and aquin::lora_spectral_norm against at::linalg_svdvals, both
# timed in the same run so the printed ratio does not depend on the machine. Included from
# bench/CMakeLists.txt; needs the aquin::sdk target.
add_executable(bench_spectral ${CMAKE_CURRENT_LIST_DIR}/bench_spectral.cpp)
target_link_libraries(bench_spectral PRIVATE aquin::sdk)
target_compile_options(bench_spectral PRIVATE -Wall -Wextra)
