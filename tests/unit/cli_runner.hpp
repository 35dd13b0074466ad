// Runs the real `aquin` binary for end-to-end tests, with its own AQUIN_HOME.
#pragma once

#include "test_helpers.hpp"

#include <sys/wait.h>

#include <cstdlib>
#include <string>

namespace aquin::test {

struct CliRun {
  int code = -1;
  std::string out, err;
};

class Cli {
 public:
  /// Extra environment assignments ("A=1 B=2") applied to every run.
  std::string env;
  const TempDir& home() const { return home_; }

  CliRun run(const std::string& args, const std::string& stdin_text = "") const {
    write_bytes(home_ / "stdin.txt", stdin_text);
    const std::string cmd = "env AQUIN_HOME='" + home_.path().string() + "' AQUIN_PLUGIN_PATH= " + env + " '" + AQUIN_BIN +
                            "' " + args + " <'" + (home_ / "stdin.txt").string() + "' >'" + (home_ / "out.txt").string() +
                            "' 2>'" + (home_ / "err.txt").string() + "'";
    int status = std::system(cmd.c_str());
    CliRun r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_bytes(home_ / "out.txt");
    r.err = read_bytes(home_ / "err.txt");
    return r;
  }

 private:
  TempDir home_;
};

inline std::string fixture_plugins(const std::string& which) {
  return std::string(AQUIN_FIXTURE_PLUGIN_ROOT) + "/" + which;
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace aquin::test
