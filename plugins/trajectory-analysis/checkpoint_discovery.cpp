#include "checkpoint_discovery.hpp"

#include <aquin/sdk/errors.hpp>

#include <fnmatch.h>

#include <algorithm>
#include <set>
#include <system_error>

namespace aquin::trajectory {

namespace fs = std::filesystem;

namespace {

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

// A symbolic link to a folder counts as a folder (the user pointed at it), except where `**`
// descends: there a link could loop.
bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::vector<std::string> split_components(const std::string& pattern) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : pattern) {
    if (c == '/') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

// Entries of `dir` ("" is the current folder), skipping ones that cannot be read: an unreadable
// folder matches nothing, as in the shell.
std::vector<fs::directory_entry> entries(const fs::path& dir) {
  std::vector<fs::directory_entry> out;
  std::error_code ec;
  fs::directory_iterator it(dir.empty() ? fs::path(".") : dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) out.push_back(*it);
  return out;
}

fs::path join(const fs::path& dir, const fs::path& name) { return dir.empty() ? name : dir / name; }

void walk(const fs::path& at, const std::vector<std::string>& parts, std::size_t i, std::set<fs::path>& out) {
  if (i == parts.size()) {
    out.insert(at);
    return;
  }
  const std::string& part = parts[i];
  const bool last = i + 1 == parts.size();
  if (part == "**") {
    if (last) {
      // `dir/**` is everything below dir, folders and files.
      for (const auto& e : entries(at)) {
        if (hidden(e.path())) continue;
        out.insert(join(at, e.path().filename()));
        std::error_code ec;
        if (e.is_directory(ec) && !e.is_symlink(ec)) walk(join(at, e.path().filename()), parts, i, out);
      }
      return;
    }
    walk(at, parts, i + 1, out);  // zero folders
    for (const auto& e : entries(at)) {
      std::error_code ec;
      if (!hidden(e.path()) && e.is_directory(ec) && !e.is_symlink(ec)) walk(join(at, e.path().filename()), parts, i, out);
    }
    return;
  }
  if (!has_wildcard(part) && part.find('\\') == std::string::npos) {
    const fs::path next = join(at, part);
    std::error_code ec;
    if (last ? fs::exists(next, ec) : is_dir(next)) walk(next, parts, i + 1, out);
    return;
  }
  for (const auto& e : entries(at)) {
    const std::string name = e.path().filename().string();
    if (fnmatch(part.c_str(), name.c_str(), FNM_PERIOD) != 0) continue;
    const fs::path next = join(at, name);
    if (last || is_dir(next)) walk(next, parts, i + 1, out);
  }
}

bool training_state_file(const fs::path& p) {
  static const std::set<std::string> names = {"optimizer.pt", "scheduler.pt", "scaler.pt"};
  return names.count(p.filename().string()) > 0;
}

void scan(const fs::path& dir, const fs::path& root, std::set<fs::path>& visited, std::vector<Found>& out) {
  std::error_code ec;
  fs::path real = fs::canonical(dir, ec);
  if (ec || !visited.insert(real).second) return;  // a link loop, or a folder reached twice
  std::vector<fs::path> children;
  for (const auto& e : entries(dir)) children.push_back(e.path());
  std::sort(children.begin(), children.end());
  for (const auto& child : children) {
    if (hidden(child)) continue;
    if (is_dir(child)) {
      if (is_checkpoint_dir(child)) out.push_back({child, child.lexically_relative(root).string()});
      else scan(child, root, visited, out);
    } else if (child.extension() == ".pt" && !training_state_file(child)) {
      out.push_back({child, child.lexically_relative(root).string()});
    }
  }
}

}  // namespace

bool is_checkpoint_dir(const fs::path& dir) {
  std::error_code ec;
  for (const char* f : {"adapter_config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json"})
    if (fs::exists(dir / f, ec)) return true;
  return false;
}

std::vector<fs::path> match_glob(const std::string& pattern) {
  std::set<fs::path> out;
  const std::vector<std::string> parts = split_components(pattern);
  const fs::path start = !pattern.empty() && pattern[0] == '/' ? fs::path("/") : fs::path();
  if (!parts.empty()) walk(start, parts, 0, out);
  return {out.begin(), out.end()};
}

Discovery discover_from_patterns(const std::vector<std::string>& patterns) {
  Discovery d;
  std::set<fs::path> seen;
  auto add = [&](const fs::path& p) {
    if (seen.insert(p.lexically_normal()).second) d.checkpoints.push_back({p, p.string()});
  };
  for (const auto& pattern : patterns) {
    if (!has_wildcard(pattern)) {
      add(pattern);
      continue;
    }
    int taken = 0;
    for (const auto& p : match_glob(pattern)) {
      if (is_dir(p) && !is_checkpoint_dir(p)) {
        d.warnings.push_back(p.string() + ": matched '" + pattern +
                             "' but is a folder without model weights or adapter_config.json; skipped");
        continue;
      }
      add(p);
      ++taken;
    }
    if (taken == 0) d.warnings.push_back("--checkpoints '" + pattern + "' matches no checkpoint");
  }
  std::sort(d.checkpoints.begin(), d.checkpoints.end(), [](const Found& a, const Found& b) { return a.path < b.path; });
  return d;
}

Discovery discover_in_dir(const fs::path& root) {
  std::error_code ec;
  if (!fs::exists(root, ec)) throw InputError(root.string(), "no such directory");
  if (!fs::is_directory(root, ec))
    throw InputError(root.string(), "not a directory (--checkpoints takes files and patterns)");
  Discovery d;
  if (is_checkpoint_dir(root)) {
    const std::string name = root.lexically_normal().filename().string();
    d.checkpoints.push_back({root, name.empty() ? root.string() : name});
  }
  std::set<fs::path> visited;
  scan(root, root, visited, d.checkpoints);
  return d;
}

}  // namespace aquin::trajectory
