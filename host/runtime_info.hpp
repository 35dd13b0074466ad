// What `aquin --version` reports about the numeric runtime.
#pragma once

#include <string>

namespace aquin::host {

/// Sets libtorch's intra-op threads (it defaults to 1 here): AQUIN_THREADS, else all cores.
int configure_threads(int requested);

/// The BLAS library actually mapped into the process, with OpenBLAS's own config string when
/// available, e.g. "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 (OpenBLAS 0.3.21 ...)".
std::string blas_in_use();

/// "1.13.0" as compiled against.
std::string torch_version();

}  // namespace aquin::host
