#include <aquin/sdk/progress.hpp>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace aquin {

namespace {
std::atomic<bool> g_enabled{true};

std::string seconds_text(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, (static_cast<int>(s) / 60) % 60);
  return buf;
}

// Control characters from file names or prompts never reach the terminal raw.
std::string printable(const std::string& s, std::size_t max) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max) {
      out += "…";
      break;
    }
    out += (c < 0x20 || c == 0x7f) ? ' ' : static_cast<char>(c);
  }
  return out;
}
}  // namespace

void set_progress_enabled(bool on) { g_enabled = on; }
bool progress_enabled() {
  const char* env = std::getenv("AQUIN_PROGRESS");
  return g_enabled && !(env && std::strcmp(env, "0") == 0);
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  on_ = progress_enabled();
  tty_ = on_ && isatty(STDERR_FILENO) == 1;
  start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::update(int64_t done, const std::string& item) {
  done_ = done;
  item_ = item;
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  // A terminal redraws ten times a second; a log gets a line every 10 s once the work is slow.
  if (tty_ ? (since >= 0.1 || done_ >= total_) : (since >= 10.0 && elapsed >= 2.0)) {
    last_ = now;
    draw(false);
  }
}

void Progress::draw(bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : NAN;
  char stats[160];
  std::snprintf(stats, sizeof stats, "%lld/%lld %s  %.2f %s/s  %s %s", static_cast<long long>(done_),
                static_cast<long long>(total_), unit_.c_str(), rate, unit_.c_str(), final ? "in" : "ETA",
                seconds_text(final ? elapsed : eta).c_str());
  if (tty_) {
    const int width = 24;
    const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_)) : 0.0;
    const int filled = static_cast<int>(std::round(frac * width));
    std::string bar;
    for (int i = 0; i < width; ++i) bar += i < filled ? "█" : "░";
    std::fprintf(stderr, "\r\033[2K%s %s %s %s", printable(label_, 40).c_str(), bar.c_str(), stats,
                 printable(item_, 40).c_str());
  } else {
    std::fprintf(stderr, "aquin: %s: %s%s%s\n", printable(label_, 80).c_str(), stats, item_.empty() ? "" : "  ",
                 printable(item_, 80).c_str());
  }
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!on_ || !drawn_) return;
  if (tty_) {
    std::fprintf(stderr, "\r\033[2K");
    std::fflush(stderr);
  } else {
    draw(true);
  }
}

}  // namespace aquin
