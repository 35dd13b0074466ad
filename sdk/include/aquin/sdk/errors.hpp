// Error types shared by the host, the SDK and plugins.
//
// The host maps them to exit codes: InputError and UsageError -> 1, anything else -> 3.
// Plugins may throw them freely inside their own code; the entry-point shim (plugin.hpp)
// turns them into a Status before anything crosses the plugin boundary.
#pragma once

#include <boost/config.hpp>
#include <stdexcept>
#include <string>

namespace aquin {

/// Something the user gave us is wrong (a file, a flag value). The message is one line and
/// names the file or field first: "ckpt.safetensors: header length 912 past end of file (80 bytes)".
class BOOST_SYMBOL_VISIBLE InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}
  /// Convenience: "<what>: <problem>".
  InputError(const std::string& what, const std::string& problem)
      : std::runtime_error(what + ": " + problem) {}
};

/// The command line or tool input is malformed (unknown option, missing required field).
class BOOST_SYMBOL_VISIBLE UsageError : public std::runtime_error {
 public:
  explicit UsageError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace aquin
