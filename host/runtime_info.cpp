#include "runtime_info.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/api/include/torch/version.h>

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <thread>

namespace aquin::host {

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    if (const char* env = std::getenv("AQUIN_THREADS")) n = std::atoi(env);
  }
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return at::get_num_threads();
}

std::string blas_in_use() {
  // Make sure the BLAS is loaded and has run once, then read the process's own mappings.
  at::Tensor a = at::ones({2, 2});
  (void)at::mm(a, a);
  std::ifstream maps("/proc/self/maps");
  std::string line, lib;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    std::string path = line.substr(pos);
    if (path.find("blas") != std::string::npos || path.find("mkl_") != std::string::npos) {
      lib = path;
      break;
    }
  }
  std::string out = lib.empty() ? "unknown" : lib;
  using config_fn = char* (*)();
  if (auto f = reinterpret_cast<config_fn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) out += " (" + std::string(f()) + ")";
  if (lib.find("/blas/libblas") != std::string::npos) out += " — reference BLAS: install libopenblas0-openmp (35x faster)";
  return out;
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace aquin::host
