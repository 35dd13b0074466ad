// Progress of long work on stderr: a bar with the item, rate and ETA on a terminal, a plain line
// every 10 s otherwise, nothing when the host turned it off (--output json, agent tools, or
// AQUIN_PROGRESS=0). Plugins use it; the host decides whether it shows.
#pragma once

#include <boost/config.hpp>
#include <chrono>
#include <cstdint>
#include <string>

namespace aquin {

/// Turns progress output on or off for the whole process (the host calls it before a command).
BOOST_SYMBOL_VISIBLE void set_progress_enabled(bool on);
BOOST_SYMBOL_VISIBLE bool progress_enabled();

/// One bar. Not thread-safe: update it from one thread.
class BOOST_SYMBOL_VISIBLE Progress {
 public:
  /// `label` names the work ("base forward"), `unit` what is counted ("prompts").
  Progress(std::string label, int64_t total, std::string unit);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  /// `done` of `total` finished; `item` (optional) says which one is under way.
  void update(int64_t done, const std::string& item = "");
  /// Clears the bar (terminal) or prints the closing line (plain, when lines were printed).
  void finish();

 private:
  void draw(bool final);
  std::string label_, unit_, item_;
  int64_t total_ = 0, done_ = 0;
  bool tty_ = false, on_ = false, drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace aquin
