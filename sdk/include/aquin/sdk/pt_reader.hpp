// Reader for archives written by torch.save (the zip format, PyTorch >= 1.6).
//
// It never executes code from the file: the pickle is interpreted by a small VM that knows only
// the opcodes and globals state dicts use (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch.*Storage, torch._utils._rebuild_parameter, ...). Any other global is refused by name.
#pragma once

#include <aquin/sdk/tensor_store.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace aquin {

/// What a torch.save archive held.
struct PtCheckpoint {
  /// The tensors of the state dict, in pickle order. Keys of nested dicts are joined with '.'
  /// ({"encoder": {"w": t}} gives "encoder.w"; int keys are written in decimal); values that are
  /// neither tensors nor dicts (lists, scalars, None) are skipped.
  /// For {"step": N, "state_dict": sd} this is sd; the keys "state_dict", "model_state_dict",
  /// "model" and "module" are tried in that order and the first whose value is a dict wins.
  /// Otherwise (a bare state dict) it is the archive's top-level dict.
  /// Tensors keep their storage dtype and their saved strides (a view saved without
  /// .contiguous() stays a non-contiguous view); tensors that shared a storage in Python share
  /// it here. They alias a read-only memory map of the file, which they keep alive (a storage
  /// at an offset its dtype cannot be aligned to, as Python's zipfile may write, is copied once).
  std::unique_ptr<TensorStore> tensors;
  /// The top-level "step" (else "global_step") when it is an int or a one-element integer
  /// tensor. That key is then not repeated in `scalars`.
  std::optional<int64_t> step;
  /// Other top-level scalar entries, rendered as text: int in decimal, float as the shortest
  /// text that reads back exactly ("0.05", "16.0"), bool as "true"/"false", str as is.
  /// E.g. {"lora_alpha": "16", "r": "4"}. The state dict's own key is never here.
  std::map<std::string, std::string> scalars;
  /// Which top-level key held the state dict ("" for a bare state dict).
  std::string state_dict_key;
};

/// Reads `path`. Nothing from the file is executed; the pickle is read by an interpreter that
/// knows only what state dicts use, with caps on objects, stack and memo.
/// Throws InputError("<path>: <problem>") for anything it cannot read: a missing file, not a
/// zip, a legacy (non-zip) pickle (the message says to re-save with torch.save's default zip
/// format), a TorchScript archive, an unknown pickle global (named in the message, e.g.
/// 'os.system'), a top level that is not a dict, a storage record that is missing, compressed or
/// too short for the tensors that view it, a malformed pickle or zip.
BOOST_SYMBOL_VISIBLE PtCheckpoint read_pt(const std::filesystem::path& path);

}  // namespace aquin
