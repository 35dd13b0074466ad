// Argument checks shared by the SDK's linear-algebra sources (linalg.cpp, subspace.cpp). Internal.
#pragma once

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace aquin::detail {

/// `t` is a defined 2-D floating tensor; else std::invalid_argument naming `fn` and `arg`.
inline void check_matrix(const at::Tensor& t, const char* fn, const char* arg) {
  if (!t.defined() || t.dim() != 2)
    throw std::invalid_argument(std::string(fn) + ": " + arg + " must be a 2-D tensor, got " +
                                (t.defined() ? std::to_string(t.dim()) + "-D" : "undefined"));
  if (!at::isFloatingType(t.scalar_type()))
    throw std::invalid_argument(std::string(fn) + ": " + arg + " must be floating, got " +
                                c10::toString(t.scalar_type()));
}

}  // namespace aquin::detail
