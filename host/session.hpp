// Sessions: a named base model and the exports made against it, under $AQUIN_HOME/sessions/<id>/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aquin::host {

/// The SAE attached to a session (`aquin load sae`).
struct SessionSae {
  std::string source;  ///< what the user named: a catalog slug or a path
  std::string path, format, architecture, hook;
  int64_t layer = -1, d_in = 0, d_sae = 0, k = 0;
};

struct Session {
  std::string id;
  std::string model;  ///< as the user named it (slug or path)
  std::string path;   ///< resolved weights folder at start time
  std::string family, kind, model_type;
  std::string created;
  std::optional<SessionSae> sae;
  std::filesystem::path dir;
};

/// $AQUIN_HOME, default ~/.aquin.
std::filesystem::path aquin_home();

/// Writes session.json and makes it current. Throws InputError for a bad id.
void save_session(const Session& s);
/// Loads `id`, or the current session when id is empty. Throws InputError when none.
Session load_session(const std::string& id);
std::vector<Session> list_sessions();
std::optional<std::string> current_session_id();
void set_current_session(const std::string& id);
/// Appends one line to the session's events.jsonl (best effort: failures are logged).
void log_event(const Session& s, const std::string& json_line);

/// UTC time as 2026-11-25T12:00:00Z.
std::string utc_now();

}  // namespace aquin::host
