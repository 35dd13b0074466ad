// Finding the checkpoints of a training run: a shell-style pattern (--checkpoints) or a folder
// scanned recursively (--dir). Nothing here opens a checkpoint; it only decides which paths to try.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace aquin::trajectory {

struct Found {
  std::filesystem::path path;  ///< as the user would spell it (pattern's root or DIR joined with the rest)
  std::string label;           ///< short name for the table: relative to DIR, or the path as matched
};

struct Discovery {
  std::vector<Found> checkpoints;  ///< unique, in path order
  std::vector<std::string> warnings;
};

/// Whether `dir` holds a model or an adapter the checkpoint reader opens (adapter_config.json,
/// model.safetensors, a sharded index, pytorch_model.bin), i.e. a folder that is itself a checkpoint.
bool is_checkpoint_dir(const std::filesystem::path& dir);

/// Paths matching a shell-style pattern: `*`, `?`, `[...]` within one path component (fnmatch(3);
/// a leading dot must be matched explicitly, as in the shell), and `**` as a whole component for zero
/// or more folders (hidden folders and symbolic links to folders are not descended). The pattern is
/// never handed to a shell. Sorted, unique; empty when nothing matches.
std::vector<std::filesystem::path> match_glob(const std::string& pattern);

/// --checkpoints: each pattern's matches. A pattern without wildcards is taken as a path as it is
/// (so a list the shell already expanded works, and a missing file becomes that row's error).
/// Folders a wildcard matched that are not checkpoint folders are skipped with a warning.
Discovery discover_from_patterns(const std::vector<std::string>& patterns);

/// --dir: `root` itself when it is a checkpoint folder, then recursively every `*.pt` file and
/// every checkpoint folder below it, without descending into a checkpoint folder (its optimizer.pt
/// and the like are training state, not checkpoints). `root` itself is always scanned, since a
/// trainer's output folder holds the final model beside its checkpoint-N/ folders; training-state
/// files (optimizer.pt, scheduler.pt, scaler.pt) are never taken. Hidden entries are skipped.
/// Throws InputError when `root` is not a folder.
Discovery discover_in_dir(const std::filesystem::path& root);

}  // namespace aquin::trajectory
