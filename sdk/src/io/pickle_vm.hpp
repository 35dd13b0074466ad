// A small pickle interpreter for the data.pkl inside torch.save archives.
//
// Python's pickle is a program: GLOBAL names any importable callable and REDUCE calls it. This VM
// runs only the data-building opcodes, and resolves GLOBAL against a fixed allow-list of what
// state dicts need (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage,
// ...). Everything else is refused by name as soon as the GLOBAL is read, so no call is ever
// attempted, not even to an allowed function with hostile arguments: "calls" to allowed globals
// are implemented here in C++.
//
// Hostile input must end in an InputError, never a crash, a hang or unbounded memory: every read
// is bounds-checked, and the stack, the memo and the number of objects are capped (PickleLimits).
// Values live in an arena owned by the VM and refer to each other by raw pointer, so cyclic or
// very deep object graphs cost nothing to destroy (no recursive destructors) and cannot leak.
#pragma once

#include <aquin/sdk/tensor_store.hpp>

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace aquin::io {

/// Caps that bound what a pickle can make the VM allocate. The defaults hold state dicts of
/// hundreds of thousands of tensors (about 20 objects each) while keeping a hostile file's worst
/// case to a few hundred MB.
struct PickleLimits {
  std::size_t max_objects = std::size_t{4} << 20;     ///< values created + container slots filled
  std::size_t max_stack = std::size_t{1} << 20;       ///< stack entries plus open MARKs
  std::size_t max_memo = std::size_t{4} << 20;        ///< memo entries
  std::size_t max_dims = 64;                          ///< dimensions of one tensor
  std::size_t max_key_bytes = std::size_t{64} << 10;  ///< canonical form of one dict key
  std::size_t max_key_work = std::size_t{1} << 30;    ///< canonical key bytes over all SETITEMs
};

/// The globals a checkpoint may name. Anything else is refused when it is read.
enum class PyGlobal {
  OrderedDict,                ///< collections.OrderedDict
  RebuildTensor,              ///< torch._utils._rebuild_tensor
  RebuildTensorV2,            ///< torch._utils._rebuild_tensor_v2
  RebuildParameter,           ///< torch._utils._rebuild_parameter
  RebuildParameterWithState,  ///< torch._utils._rebuild_parameter_with_state
  StorageType,                ///< torch.FloatStorage, torch.HalfStorage, ... (see PyValue::dtype)
  TorchSize,                  ///< torch.Size
};

/// One Python value. Owned by the PickleVM that made it; pointers stay valid for its lifetime.
struct PyValue {
  enum class Kind : std::uint8_t {
    None,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    Tuple,
    List,
    Dict,
    Global,
    Storage,
    Tensor
  };
  Kind kind = Kind::None;
  std::int64_t i = 0;  ///< Int, Bool (0 or 1)
  double f = 0.0;      ///< Float
  /// Str and Bytes: the raw bytes (Str is UTF-8 as pickled). Global: "module.name".
  /// Storage: the storage key (its record is data/<key>).
  std::string s;
  /// Tuple and List: the items. Dict: key, value, key, value, ... in insertion order.
  std::vector<PyValue*> items;
  /// Tensor: the tensor (possibly a strided view). Storage: a 1-D tensor over all its elements.
  at::Tensor tensor;
  /// Storage, StorageType and Tensor: the element type.
  DType dtype = DType::F32;
  /// Global: which one.
  PyGlobal global = PyGlobal::OrderedDict;
  /// Dict: canonical key -> index of the pair in `items` (pair n sits at 2n, 2n+1), so that
  /// setting an existing key replaces its value in place, as Python does.
  std::unique_ptr<std::unordered_map<std::string, std::size_t>> index;

  bool is_dict() const { return kind == Kind::Dict; }
  std::size_t dict_size() const { return items.size() / 2; }
  const PyValue& dict_key(std::size_t n) const { return *items[2 * n]; }
  const PyValue& dict_value(std::size_t n) const { return *items[2 * n + 1]; }
  /// The value under the string key `key`, or nullptr (Dict only).
  const PyValue* dict_get(const std::string& key) const;
};

/// Python's name for a kind ("dict", "int", "torch.Tensor", ...), for messages.
const char* kind_name(PyValue::Kind kind);

/// A storage that a persistent id ('storage', torch.<T>Storage, key, location, numel) names.
struct StorageRequest {
  std::string key;       ///< archive record data/<key>
  DType dtype;           ///< from the storage type
  std::int64_t numel;    ///< elements the storage holds (>= 0)
  std::string location;  ///< the device it was saved from ("cpu", "cuda:0"); ignored by aquin
};

/// Resolves a storage to a 1-D tensor of exactly `numel` elements of `dtype`, or throws
/// InputError. Called once per persistent id (shared storages are asked for again: cache).
using StorageLoader = std::function<at::Tensor(const StorageRequest&)>;

/// Runs one pickle. Not reusable: make one VM per pickle.
class PickleVM {
 public:
  /// `origin` prefixes every error message (the checkpoint's path).
  PickleVM(std::string origin, StorageLoader loader, PickleLimits limits = {});
  PickleVM(const PickleVM&) = delete;
  PickleVM& operator=(const PickleVM&) = delete;

  /// Interprets `size` bytes at `data` up to STOP and returns the unpickled object, which lives
  /// as long as this VM. `data` need only stay valid during the call. Throws InputError
  /// ("<origin>: pickle: <problem> at byte N") for anything malformed, unsupported or refused.
  const PyValue& run(const unsigned char* data, std::size_t size);

 private:
  [[noreturn]] void fail(const std::string& problem) const;

  // Input
  const unsigned char* need(std::size_t n);
  std::uint64_t read_le(std::size_t n);
  std::string read_line();
  std::size_t checked_length(std::uint64_t n);

  // Objects, stack and memo
  PyValue* make(PyValue::Kind kind);
  void charge(std::size_t slots);
  void push(PyValue* v);
  PyValue* pop();
  PyValue* top();
  std::vector<PyValue*> pop_mark();
  PyValue* memo_get(std::uint64_t key);
  void memo_put(std::uint64_t key, PyValue* v);

  // Containers
  void dict_set(PyValue* dict, PyValue* key, PyValue* value);
  void canonical_key(const PyValue& key, std::string& out, int depth);

  // The allow-listed globals
  PyValue* resolve_global(const std::string& module, const std::string& name);
  PyValue* call(PyValue* callable, const std::vector<PyValue*>& args);
  PyValue* instantiate(PyValue* cls, const std::vector<PyValue*>& args);
  PyValue* persistent_load(PyValue* pid);
  PyValue* rebuild_tensor(const std::vector<PyValue*>& args);
  std::vector<std::int64_t> int_tuple(const PyValue* v, const char* what);

  std::string origin_;
  StorageLoader loader_;
  PickleLimits limits_;

  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t pos_ = 0;
  std::size_t op_pos_ = 0;  // where the current opcode started, for messages

  std::deque<PyValue> arena_;  // deque: growing never moves existing values
  std::size_t charged_ = 0;
  std::size_t key_work_ = 0;
  std::vector<PyValue*> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, PyValue*> memo_;
};

}  // namespace aquin::io
