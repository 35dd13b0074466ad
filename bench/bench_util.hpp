// What every benchmark here needs: running a command in a child with its wall time, CPU time and
// peak RSS, and doing heavy set-up work in a child so that this process stays small.
//
// Why the second: a forked child's ru_maxrss starts from the RSS it shared with its parent at the
// fork (Linux carries the forked copy's high-water mark across exec), so a benchmark that generated
// a model in its own process would charge that memory to every command it then measures.
#pragma once

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>

namespace aquin::bench {

struct Measured {
  double seconds = 0;      ///< wall
  double cpu_seconds = 0;  ///< user + system of the child and its children
  double peak_rss_mb = 0;
  int code = -1;           ///< exit status, -1 when killed
};

/// Runs `cmd` with /bin/sh in a child and waits for it.
inline Measured measure(const std::string& cmd) {
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  Measured m;
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.peak_rss_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;
  m.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  m.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return m;
}

/// Runs `work` in a forked child and waits; true when it returned normally. Call it before any
/// torch work in this process (a fork after OpenMP has started is unsafe for the child).
inline bool run_in_child(const std::function<void()>& work) {
  const pid_t pid = fork();
  if (pid == 0) {
    try {
      work();
    } catch (...) {
      _exit(1);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace aquin::bench
