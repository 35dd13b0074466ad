// The value that crosses the plugin boundary instead of an exception.
#pragma once

#include <string>

namespace aquin {

enum class StatusCode : int {
  Ok = 0,
  Input = 1,     ///< bad user input (a file, a value): exit code 1
  Usage = 2,     ///< malformed invocation: exit code 1
  Internal = 3,  ///< a bug or an unexpected failure: exit code 3
};

struct Status {
  StatusCode code = StatusCode::Ok;
  std::string message;  ///< one line; empty when ok
  bool ok() const { return code == StatusCode::Ok; }
};

}  // namespace aquin
