#include "session.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <regex>

namespace aquin::host {

namespace fs = std::filesystem;

fs::path aquin_home() {
  if (const char* h = std::getenv("AQUIN_HOME")) return h;
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".aquin";
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {
void check_id(const std::string& id) {
  static const std::regex ok(R"([A-Za-z0-9][A-Za-z0-9._-]{0,127})");
  if (!std::regex_match(id, ok))
    throw UsageError("session id '" + id + "': use letters, digits, '.', '_' or '-' (starting with a letter or digit)");
}
fs::path session_dir(const std::string& id) { return aquin_home() / "sessions" / id; }
}  // namespace

void save_session(const Session& s) {
  check_id(s.id);
  rapidjson::Document d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  json::put(d, "id", json::str(s.id, a), a);
  json::put(d, "model", json::str(s.model, a), a);
  json::put(d, "path", json::str(s.path, a), a);
  json::put(d, "family", json::str(s.family, a), a);
  json::put(d, "kind", json::str(s.kind, a), a);
  json::put(d, "model_type", json::str(s.model_type, a), a);
  json::put(d, "created", json::str(s.created, a), a);
  if (s.sae) {
    rapidjson::Value o(rapidjson::kObjectType);
    json::put(o, "source", json::str(s.sae->source, a), a);
    json::put(o, "path", json::str(s.sae->path, a), a);
    json::put(o, "format", json::str(s.sae->format, a), a);
    json::put(o, "architecture", json::str(s.sae->architecture, a), a);
    json::put(o, "hook", json::str(s.sae->hook, a), a);
    json::put(o, "layer", rapidjson::Value(s.sae->layer), a);
    json::put(o, "d_in", rapidjson::Value(s.sae->d_in), a);
    json::put(o, "d_sae", rapidjson::Value(s.sae->d_sae), a);
    json::put(o, "k", rapidjson::Value(s.sae->k), a);
    json::put(d, "sae", std::move(o), a);
  }
  write_file_atomic(session_dir(s.id) / "session.json", json::to_text(d) + "\n");
  set_current_session(s.id);
}

Session load_session(const std::string& id_in) {
  std::string id = id_in;
  if (id.empty()) {
    auto cur = current_session_id();
    if (!cur)
      throw UsageError("no current session: run `aquin session start --id NAME --model MODEL` first (or pass --session ID)");
    id = *cur;
  }
  check_id(id);
  fs::path p = session_dir(id) / "session.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) throw InputError("session '" + id + "'", "not found under " + (aquin_home() / "sessions").string());
  auto d = json::parse(read_text_file(p), p.string());
  Session s;
  auto get = [&](const char* k) {
    return d.IsObject() && d.HasMember(k) && d[k].IsString() ? std::string(d[k].GetString()) : std::string();
  };
  s.id = id;
  s.model = get("model");
  s.path = get("path");
  s.family = get("family");
  s.kind = get("kind");
  s.model_type = get("model_type");
  s.created = get("created");
  s.dir = session_dir(id);
  if (d.HasMember("sae") && d["sae"].IsObject()) {
    const auto& o = d["sae"];
    auto gs = [&](const char* k) { return o.HasMember(k) && o[k].IsString() ? std::string(o[k].GetString()) : std::string(); };
    auto gi = [&](const char* k) { return o.HasMember(k) && o[k].IsInt64() ? o[k].GetInt64() : int64_t{-1}; };
    SessionSae sae;
    sae.source = gs("source");
    sae.path = gs("path");
    sae.format = gs("format");
    sae.architecture = gs("architecture");
    sae.hook = gs("hook");
    sae.layer = gi("layer");
    sae.d_in = gi("d_in");
    sae.d_sae = gi("d_sae");
    sae.k = gi("k");
    if (sae.path.empty()) throw InputError(p.string(), "\"sae\" has no \"path\"");
    s.sae = sae;
  }
  if (s.model.empty() || s.path.empty()) throw InputError(p.string(), "missing \"model\" or \"path\"");
  return s;
}

std::vector<Session> list_sessions() {
  std::vector<Session> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(aquin_home() / "sessions", ec)) {
    try {
      out.push_back(load_session(e.path().filename().string()));
    } catch (const std::exception& ex) {
      spdlog::warn("skipping session folder {}: {}", e.path().string(), ex.what());
    }
  }
  std::sort(out.begin(), out.end(), [](const Session& a, const Session& b) { return a.id < b.id; });
  return out;
}

std::optional<std::string> current_session_id() {
  fs::path p = aquin_home() / "current";
  std::error_code ec;
  if (!fs::exists(p, ec)) return std::nullopt;
  std::string id = read_text_file(p);
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  if (id.empty()) return std::nullopt;
  return id;
}

void set_current_session(const std::string& id) {
  check_id(id);
  write_file_atomic(aquin_home() / "current", id + "\n");
}

void log_event(const Session& s, const std::string& json_line) {
  std::ofstream out(s.dir / "events.jsonl", std::ios::app);
  if (!out) {
    spdlog::warn("cannot append to {}", (s.dir / "events.jsonl").string());
    return;
  }
  out << json_line << "\n";
}

}  // namespace aquin::host
