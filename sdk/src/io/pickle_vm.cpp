#include "io/pickle_vm.hpp"

#include <aquin/sdk/errors.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace aquin::io {

namespace {

// Opcodes, named as in CPython's Lib/pickle.py.
enum Op : unsigned char {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  FLOAT = 'F',
  INT = 'I',
  BININT = 'J',
  BININT1 = 'K',
  LONG = 'L',
  BININT2 = 'M',
  NONE = 'N',
  PERSID = 'P',
  BINPERSID = 'Q',
  REDUCE = 'R',
  STRING = 'S',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  UNICODE = 'V',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  GET = 'g',
  BINGET = 'h',
  INST = 'i',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  OBJ = 'o',
  PUT = 'p',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  BINFLOAT = 'G',
  // protocol 2
  PROTO = 0x80,
  NEWOBJ = 0x81,
  EXT1 = 0x82,
  EXT2 = 0x83,
  EXT4 = 0x84,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  // protocol 3
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  // protocol 4
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f,
  ADDITEMS = 0x90,
  FROZENSET = 0x91,
  NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
  // protocol 5
  BYTEARRAY8 = 0x96,
  NEXT_BUFFER = 0x97,
  READONLY_BUFFER = 0x98,
};

// Names are matched exactly; protocol 2 pickles written by Python 3 spell them this way.
struct AllowedGlobal {
  const char* module;
  const char* name;
  PyGlobal global;
  DType dtype;  // StorageType only
};

constexpr AllowedGlobal kAllowed[] = {
    {"collections", "OrderedDict", PyGlobal::OrderedDict, DType::F32},
    {"torch._utils", "_rebuild_tensor", PyGlobal::RebuildTensor, DType::F32},
    {"torch._utils", "_rebuild_tensor_v2", PyGlobal::RebuildTensorV2, DType::F32},
    {"torch._utils", "_rebuild_parameter", PyGlobal::RebuildParameter, DType::F32},
    {"torch._utils", "_rebuild_parameter_with_state", PyGlobal::RebuildParameterWithState,
     DType::F32},
    {"torch", "Size", PyGlobal::TorchSize, DType::F32},
    {"torch", "DoubleStorage", PyGlobal::StorageType, DType::F64},
    {"torch", "FloatStorage", PyGlobal::StorageType, DType::F32},
    {"torch", "HalfStorage", PyGlobal::StorageType, DType::F16},
    {"torch", "BFloat16Storage", PyGlobal::StorageType, DType::BF16},
    {"torch", "LongStorage", PyGlobal::StorageType, DType::I64},
    {"torch", "IntStorage", PyGlobal::StorageType, DType::I32},
    {"torch", "ShortStorage", PyGlobal::StorageType, DType::I16},
    {"torch", "CharStorage", PyGlobal::StorageType, DType::I8},
    {"torch", "ByteStorage", PyGlobal::StorageType, DType::U8},
    {"torch", "BoolStorage", PyGlobal::StorageType, DType::Bool},
};

// Names in messages come from the file: keep them printable and short.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > 200) out += "...";
  return out;
}

std::string hex_byte(unsigned char c) {
  static const char* hex = "0123456789abcdef";
  return std::string("0x") + hex[c >> 4] + hex[c & 15];
}

}  // namespace

const char* kind_name(PyValue::Kind kind) {
  switch (kind) {
    case PyValue::Kind::None:
      return "None";
    case PyValue::Kind::Bool:
      return "bool";
    case PyValue::Kind::Int:
      return "int";
    case PyValue::Kind::Float:
      return "float";
    case PyValue::Kind::Str:
      return "str";
    case PyValue::Kind::Bytes:
      return "bytes";
    case PyValue::Kind::Tuple:
      return "tuple";
    case PyValue::Kind::List:
      return "list";
    case PyValue::Kind::Dict:
      return "dict";
    case PyValue::Kind::Global:
      return "global";
    case PyValue::Kind::Storage:
      return "storage";
    case PyValue::Kind::Tensor:
      return "torch.Tensor";
  }
  return "?";
}

const PyValue* PyValue::dict_get(const std::string& key) const {
  if (kind != Kind::Dict || !index) return nullptr;
  auto it = index->find("s" + key);  // the canonical form of a str key (see canonical_key)
  return it == index->end() ? nullptr : items[2 * it->second + 1];
}

PickleVM::PickleVM(std::string origin, StorageLoader loader, PickleLimits limits)
    : origin_(std::move(origin)), loader_(std::move(loader)), limits_(limits) {}

void PickleVM::fail(const std::string& problem) const {
  throw InputError(origin_, "pickle: " + problem + " at byte " + std::to_string(op_pos_));
}

// ---- input ----------------------------------------------------------------------------------

const unsigned char* PickleVM::need(std::size_t n) {
  if (n > size_ - pos_) fail("truncated (needs " + std::to_string(n) + " more bytes)");
  const unsigned char* p = data_ + pos_;
  pos_ += n;
  return p;
}

std::uint64_t PickleVM::read_le(std::size_t n) {
  const unsigned char* p = need(n);
  std::uint64_t v = 0;
  for (std::size_t k = 0; k < n; ++k) v |= std::uint64_t{p[k]} << (8 * k);
  return v;
}

// Text-protocol arguments end in '\n'; a line longer than this is not something we need.
std::string PickleVM::read_line() {
  constexpr std::size_t kMaxLine = 1024;
  const std::size_t avail = std::min(size_ - pos_, kMaxLine + 1);
  const void* nl = std::memchr(data_ + pos_, '\n', avail);
  if (nl == nullptr) fail("unterminated or overlong text argument");
  const auto len = static_cast<std::size_t>(static_cast<const unsigned char*>(nl) - (data_ + pos_));
  std::string line(reinterpret_cast<const char*>(data_ + pos_), len);
  pos_ += len + 1;
  return line;
}

// A length field must fit in what is left of the input (which also bounds the allocation).
std::size_t PickleVM::checked_length(std::uint64_t n) {
  if (n > size_ - pos_) {
    fail("length " + std::to_string(n) + " runs past the end of the pickle");
  }
  return static_cast<std::size_t>(n);
}

// ---- objects, stack, memo -------------------------------------------------------------------

void PickleVM::charge(std::size_t slots) {
  if (slots > limits_.max_objects - charged_) {
    fail("more than " + std::to_string(limits_.max_objects) + " objects");
  }
  charged_ += slots;
}

PyValue* PickleVM::make(PyValue::Kind kind) {
  charge(1);
  arena_.emplace_back();
  arena_.back().kind = kind;
  return &arena_.back();
}

void PickleVM::push(PyValue* v) {
  if (stack_.size() + marks_.size() >= limits_.max_stack) {
    fail("stack deeper than " + std::to_string(limits_.max_stack));
  }
  stack_.push_back(v);
}

// Items below the innermost MARK belong to an enclosing frame (CPython's metastack): popping
// into them is an error, not a silent read of someone else's data.
PyValue* PickleVM::pop() {
  const std::size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("stack underflow");
  PyValue* v = stack_.back();
  stack_.pop_back();
  return v;
}

PyValue* PickleVM::top() {
  const std::size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("stack underflow");
  return stack_.back();
}

std::vector<PyValue*> PickleVM::pop_mark() {
  if (marks_.empty()) fail("no MARK to pop to");
  const std::size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<PyValue*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
  stack_.resize(mark);
  return items;
}

PyValue* PickleVM::memo_get(std::uint64_t key) {
  auto it = memo_.find(key);
  if (it == memo_.end()) fail("memo key " + std::to_string(key) + " was never stored");
  return it->second;
}

void PickleVM::memo_put(std::uint64_t key, PyValue* v) {
  if (memo_.size() >= limits_.max_memo && memo_.count(key) == 0) {
    fail("memo larger than " + std::to_string(limits_.max_memo));
  }
  memo_[key] = v;
}

// ---- containers -----------------------------------------------------------------------------

// Python's dict equality on the keys checkpoints use: 1 == 1.0 == True, so numbers share one
// form; tuples compare item by item. Objects without value equality (tensors, storages, globals)
// compare by identity, as in Python.
void PickleVM::canonical_key(const PyValue& key, std::string& out, int depth) {
  if (depth > 32) fail("dict key nested too deeply");
  if (out.size() > limits_.max_key_bytes) fail("dict key too large");
  switch (key.kind) {
    case PyValue::Kind::None:
      out += 'n';
      return;
    case PyValue::Kind::Bool:
    case PyValue::Kind::Int:
      out += 'i' + std::to_string(key.i) + ';';
      return;
    case PyValue::Kind::Float: {
      const double f = key.f;
      if (std::isfinite(f) && f == std::trunc(f) && std::fabs(f) < 9.2e18) {
        out += 'i' + std::to_string(static_cast<std::int64_t>(f)) + ';';
      } else {
        std::uint64_t bits = 0;
        std::memcpy(&bits, &f, sizeof bits);
        out += 'f' + std::to_string(bits) + ';';
      }
      return;
    }
    case PyValue::Kind::Str:
    case PyValue::Kind::Bytes:
      // Checked before copying: a huge string reused as a key must not be copied at all.
      if (key.s.size() > limits_.max_key_bytes - out.size()) fail("dict key too large");
      // Inside tuples, length-prefixed so that no choice of contents makes two keys collide.
      out += (key.kind == PyValue::Kind::Str ? 's' : 'b');
      if (depth > 0) out += std::to_string(key.s.size()) + ':';
      out += key.s;
      return;
    case PyValue::Kind::Tuple:
      out += "t" + std::to_string(key.items.size()) + '(';
      for (const PyValue* item : key.items) canonical_key(*item, out, depth + 1);
      out += ')';
      return;
    case PyValue::Kind::Global:
    case PyValue::Kind::Storage:
    case PyValue::Kind::Tensor:
      out += 'p' + std::to_string(reinterpret_cast<std::uintptr_t>(&key)) + ';';
      return;
    case PyValue::Kind::List:
    case PyValue::Kind::Dict:
      break;
  }
  fail(std::string("unhashable dict key of type ") + kind_name(key.kind));
}

void PickleVM::dict_set(PyValue* dict, PyValue* key, PyValue* value) {
  if (dict->kind != PyValue::Kind::Dict) {
    fail(std::string("SETITEM on a ") + kind_name(dict->kind) + ", not a dict");
  }
  std::string canon;
  canonical_key(*key, canon, 0);
  if (canon.size() > limits_.max_key_bytes) fail("dict key too large");
  // Each SETITEM hashes its key: bound the total so that re-setting one long key millions of
  // times cannot keep us busy for hours.
  if (canon.size() > limits_.max_key_work - key_work_) fail("too much dict key data");
  key_work_ += canon.size();
  if (!dict->index) dict->index = std::make_unique<std::unordered_map<std::string, std::size_t>>();
  auto [it, inserted] = dict->index->emplace(std::move(canon), dict->items.size() / 2);
  if (!inserted) {
    dict->items[2 * it->second + 1] = value;
    return;
  }
  charge(2);
  dict->items.push_back(key);
  dict->items.push_back(value);
}

// ---- globals and the calls they allow -------------------------------------------------------

PyValue* PickleVM::resolve_global(const std::string& module, const std::string& name) {
  for (const AllowedGlobal& g : kAllowed) {
    if (module == g.module && name == g.name) {
      PyValue* v = make(PyValue::Kind::Global);
      v->global = g.global;
      v->dtype = g.dtype;
      v->s = module + "." + name;
      return v;
    }
  }
  // Refused by name, before anything could use it.
  throw InputError(origin_, "refuses pickle global '" + printable(module) + "." + printable(name) +
                                "' (aquin executes no code from checkpoints)");
}

std::vector<std::int64_t> PickleVM::int_tuple(const PyValue* v, const char* what) {
  if (v->kind != PyValue::Kind::Tuple && v->kind != PyValue::Kind::List) {
    fail(std::string(what) + " is a " + kind_name(v->kind) + ", expected a tuple of ints");
  }
  if (v->items.size() > limits_.max_dims) {
    fail(std::string(what) + " has " + std::to_string(v->items.size()) + " dimensions (max " +
         std::to_string(limits_.max_dims) + ")");
  }
  std::vector<std::int64_t> out;
  out.reserve(v->items.size());
  for (const PyValue* item : v->items) {
    if (item->kind != PyValue::Kind::Int) fail(std::string(what) + " holds a non-integer");
    if (item->i < 0) fail(std::string(what) + " holds a negative value");
    out.push_back(item->i);
  }
  return out;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
// [, metadata]) and _rebuild_tensor(storage, storage_offset, size, stride): a view into the
// storage. Every element the view can reach must lie inside the storage.
PyValue* PickleVM::rebuild_tensor(const std::vector<PyValue*>& args) {
  const PyValue* storage = args[0];
  if (storage->kind != PyValue::Kind::Storage) {
    fail(std::string("tensor rebuilt from a ") + kind_name(storage->kind) + ", not a storage");
  }
  if (args[1]->kind != PyValue::Kind::Int || args[1]->i < 0) fail("bad storage offset");
  const std::int64_t offset = args[1]->i;
  const std::vector<std::int64_t> sizes = int_tuple(args[2], "tensor size");
  const std::vector<std::int64_t> strides = int_tuple(args[3], "tensor stride");
  if (sizes.size() != strides.size()) fail("tensor size and stride differ in length");

  std::int64_t numel = 1;
  std::int64_t last = offset;  // the furthest element the view reaches
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    std::int64_t reach = 0;
    if (__builtin_mul_overflow(numel, sizes[d], &numel) ||
        (sizes[d] > 0 && (__builtin_mul_overflow(sizes[d] - 1, strides[d], &reach) ||
                          __builtin_add_overflow(last, reach, &last)))) {
      fail("tensor size overflows");
    }
  }
  PyValue* v = make(PyValue::Kind::Tensor);
  v->dtype = storage->dtype;
  if (numel == 0) {
    // Nothing to alias; an empty tensor of the right shape is exact.
    v->tensor = at::empty(sizes, at::TensorOptions().dtype(to_scalar_type(storage->dtype)));
    return v;
  }
  const std::int64_t available = storage->tensor.numel();
  if (last >= available) {
    fail("tensor view reaches element " + std::to_string(last) + " of storage '" +
         printable(storage->s) + "', which has " + std::to_string(available));
  }
  v->tensor = storage->tensor.as_strided(sizes, strides, offset);
  return v;
}

// Calls a global with positional arguments (REDUCE, OBJ, INST).
PyValue* PickleVM::call(PyValue* callable, const std::vector<PyValue*>& args) {
  if (callable->kind != PyValue::Kind::Global) {
    fail(std::string("call of a ") + kind_name(callable->kind));
  }
  auto arity = [&](std::size_t lo, std::size_t hi) {
    if (args.size() < lo || args.size() > hi) {
      fail(callable->s + " called with " + std::to_string(args.size()) + " arguments");
    }
  };
  switch (callable->global) {
    case PyGlobal::OrderedDict: {
      arity(0, 1);
      PyValue* d = make(PyValue::Kind::Dict);
      if (args.empty() || args[0]->kind == PyValue::Kind::None) return d;
      const PyValue* src = args[0];
      if (src->kind == PyValue::Kind::Dict) {
        for (std::size_t n = 0; n < src->dict_size(); ++n) {
          dict_set(d, src->items[2 * n], src->items[2 * n + 1]);
        }
        return d;
      }
      if (src->kind != PyValue::Kind::List && src->kind != PyValue::Kind::Tuple) {
        fail("OrderedDict built from a " + std::string(kind_name(src->kind)));
      }
      for (PyValue* pair : src->items) {
        if ((pair->kind != PyValue::Kind::Tuple && pair->kind != PyValue::Kind::List) ||
            pair->items.size() != 2) {
          fail("OrderedDict built from something other than pairs");
        }
        dict_set(d, pair->items[0], pair->items[1]);
      }
      return d;
    }
    case PyGlobal::RebuildTensor:
      arity(4, 4);
      return rebuild_tensor(args);
    case PyGlobal::RebuildTensorV2:
      // requires_grad, backward_hooks and metadata only matter to autograd: ignored.
      arity(6, 7);
      return rebuild_tensor(args);
    case PyGlobal::RebuildParameter:
    case PyGlobal::RebuildParameterWithState:
      // A Parameter is its data tensor plus autograd state we do not need.
      arity(callable->global == PyGlobal::RebuildParameter ? 3 : 4,
            callable->global == PyGlobal::RebuildParameter ? 3 : 4);
      if (args[0]->kind != PyValue::Kind::Tensor) fail("Parameter rebuilt from a non-tensor");
      return args[0];
    case PyGlobal::TorchSize: {
      arity(0, 1);
      PyValue* t = make(PyValue::Kind::Tuple);
      if (!args.empty()) {
        int_tuple(args[0], "torch.Size");
        charge(args[0]->items.size());
        t->items = args[0]->items;
      }
      return t;
    }
    case PyGlobal::StorageType:
      break;
  }
  fail("cannot call " + callable->s + " (storages come only from persistent ids)");
}

// cls.__new__(cls, *args) for NEWOBJ: only the containers have a meaning here.
PyValue* PickleVM::instantiate(PyValue* cls, const std::vector<PyValue*>& args) {
  if (cls->kind == PyValue::Kind::Global && cls->global == PyGlobal::OrderedDict) {
    return make(PyValue::Kind::Dict);  // __new__ ignores its arguments; items follow
  }
  if (cls->kind == PyValue::Kind::Global && cls->global == PyGlobal::TorchSize) {
    return call(cls, args);
  }
  fail(std::string("cannot instantiate ") +
       (cls->kind == PyValue::Kind::Global ? cls->s : std::string(kind_name(cls->kind))));
}

// torch.save's persistent id: ('storage', torch.<T>Storage, key, location, numel).
PyValue* PickleVM::persistent_load(PyValue* pid) {
  if (pid->kind != PyValue::Kind::Tuple || pid->items.size() != 5 ||
      pid->items[0]->kind != PyValue::Kind::Str || pid->items[0]->s != "storage") {
    fail("persistent id is not ('storage', type, key, location, numel)");
  }
  const PyValue* type = pid->items[1];
  const PyValue* key = pid->items[2];
  const PyValue* location = pid->items[3];
  const PyValue* numel = pid->items[4];
  if (type->kind != PyValue::Kind::Global || type->global != PyGlobal::StorageType) {
    fail("persistent id names a non-storage type");
  }
  StorageRequest req;
  if (key->kind == PyValue::Kind::Str) {
    req.key = key->s;
  } else if (key->kind == PyValue::Kind::Int) {
    req.key = std::to_string(key->i);
  } else {
    fail("storage key is a " + std::string(kind_name(key->kind)));
  }
  if (location->kind == PyValue::Kind::Str) req.location = location->s;
  if (numel->kind != PyValue::Kind::Int || numel->i < 0) fail("bad storage size");
  req.dtype = type->dtype;
  req.numel = numel->i;

  PyValue* v = make(PyValue::Kind::Storage);
  v->s = req.key;
  v->dtype = req.dtype;
  v->tensor = loader_(req);
  if (!v->tensor.defined() || v->tensor.dim() != 1 || v->tensor.numel() != req.numel ||
      v->tensor.scalar_type() != to_scalar_type(req.dtype)) {
    fail("storage '" + printable(req.key) + "' did not load as " + std::to_string(req.numel) +
         " elements of " + dtype_name(req.dtype));
  }
  return v;
}

// ---- the interpreter loop -------------------------------------------------------------------

const PyValue& PickleVM::run(const unsigned char* data, std::size_t size) {
  data_ = data;
  size_ = size;
  pos_ = 0;
  const PyValue* result = nullptr;

  auto push_int = [&](std::int64_t i) {
    PyValue* v = make(PyValue::Kind::Int);
    v->i = i;
    push(v);
  };
  auto push_bool = [&](bool b) {
    PyValue* v = make(PyValue::Kind::Bool);
    v->i = b ? 1 : 0;
    push(v);
  };
  auto push_string = [&](PyValue::Kind kind, std::uint64_t n) {
    const std::size_t len = checked_length(n);
    PyValue* v = make(kind);
    v->s.assign(reinterpret_cast<const char*>(need(len)), len);
    push(v);
  };
  auto push_tuple = [&](std::vector<PyValue*> items) {
    PyValue* v = make(PyValue::Kind::Tuple);
    charge(items.size());
    v->items = std::move(items);
    push(v);
  };
  // Little-endian two's complement of n bytes (LONG1/LONG4), as long as it fits in 64 bits.
  auto push_long = [&](std::uint64_t n) {
    const std::size_t len = checked_length(n);
    const unsigned char* p = need(len);
    std::size_t used = len;
    // Drop redundant sign bytes: Python writes 2**63-1 as 8 bytes but 2**63 as 9.
    while (used > 8 && ((p[used - 1] == 0x00 && (p[used - 2] & 0x80) == 0) ||
                        (p[used - 1] == 0xff && (p[used - 2] & 0x80) != 0))) {
      --used;
    }
    if (used > 8) fail("integer wider than 64 bits");
    std::uint64_t u = 0;
    for (std::size_t k = 0; k < used; ++k) u |= std::uint64_t{p[k]} << (8 * k);
    if (used > 0 && used < 8 && (p[used - 1] & 0x80) != 0) u |= ~std::uint64_t{0} << (8 * used);
    std::int64_t i = 0;
    std::memcpy(&i, &u, sizeof i);
    push_int(i);
  };
  auto parse_int = [&](const std::string& text) -> std::int64_t {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || errno != 0 || (*end != '\0' && !(*end == 'L' && end[1] == '\0'))) {
      fail("bad integer literal '" + printable(text) + "'");
    }
    return v;
  };

  while (result == nullptr) {
    op_pos_ = pos_;
    const unsigned char op = *need(1);
    switch (op) {
      case PROTO: {
        const unsigned proto = *need(1);
        if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
        break;
      }
      case FRAME:
        read_le(8);  // framing is only a read-ahead hint
        break;
      case STOP:
        result = pop();
        break;

      case MARK:
        if (stack_.size() + marks_.size() >= limits_.max_stack) fail("too many MARKs");
        marks_.push_back(stack_.size());
        break;
      case POP:
        // CPython: POP with nothing above the mark discards the mark itself.
        if (!marks_.empty() && stack_.size() == marks_.back()) {
          marks_.pop_back();
        } else {
          pop();
        }
        break;
      case POP_MARK:
        pop_mark();
        break;
      case DUP:
        push(top());
        break;

      case NONE:
        push(make(PyValue::Kind::None));
        break;
      case NEWTRUE:
        push_bool(true);
        break;
      case NEWFALSE:
        push_bool(false);
        break;
      case BININT: {
        const auto u = static_cast<std::uint32_t>(read_le(4));
        std::int32_t i = 0;
        std::memcpy(&i, &u, sizeof i);
        push_int(i);
        break;
      }
      case BININT1:
        push_int(static_cast<std::int64_t>(read_le(1)));
        break;
      case BININT2:
        push_int(static_cast<std::int64_t>(read_le(2)));
        break;
      case LONG1:
        push_long(read_le(1));
        break;
      case LONG4:
        push_long(read_le(4));
        break;
      case INT: {
        const std::string text = read_line();
        if (text == "00" || text == "01") {
          push_bool(text == "01");  // protocol 0 spells False/True this way
        } else {
          push_int(parse_int(text));
        }
        break;
      }
      case LONG:
        push_int(parse_int(read_line()));
        break;
      case BINFLOAT: {
        const unsigned char* p = need(8);
        std::uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | p[k];  // big-endian, unlike the ints
        PyValue* v = make(PyValue::Kind::Float);
        std::memcpy(&v->f, &bits, sizeof bits);
        push(v);
        break;
      }
      case FLOAT: {
        const std::string text = read_line();
        char* end = nullptr;
        const double f = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0') fail("bad float literal '" + printable(text) + "'");
        PyValue* v = make(PyValue::Kind::Float);
        v->f = f;
        push(v);
        break;
      }

      case BINUNICODE:
        push_string(PyValue::Kind::Str, read_le(4));
        break;
      case SHORT_BINUNICODE:
        push_string(PyValue::Kind::Str, read_le(1));
        break;
      case BINUNICODE8:
        push_string(PyValue::Kind::Str, read_le(8));
        break;
      // Python 2 str: names in old pickles, so text.
      case SHORT_BINSTRING:
        push_string(PyValue::Kind::Str, read_le(1));
        break;
      case BINSTRING: {
        const auto u = static_cast<std::uint32_t>(read_le(4));
        if (u > 0x7fffffffu) fail("negative BINSTRING length");
        push_string(PyValue::Kind::Str, u);
        break;
      }
      case BINBYTES:
        push_string(PyValue::Kind::Bytes, read_le(4));
        break;
      case SHORT_BINBYTES:
        push_string(PyValue::Kind::Bytes, read_le(1));
        break;
      case BINBYTES8:
        push_string(PyValue::Kind::Bytes, read_le(8));
        break;

      case EMPTY_TUPLE:
        push_tuple({});
        break;
      case TUPLE1: {
        PyValue* a = pop();
        push_tuple({a});
        break;
      }
      case TUPLE2: {
        PyValue* b = pop();
        PyValue* a = pop();
        push_tuple({a, b});
        break;
      }
      case TUPLE3: {
        PyValue* c = pop();
        PyValue* b = pop();
        PyValue* a = pop();
        push_tuple({a, b, c});
        break;
      }
      case TUPLE:
        push_tuple(pop_mark());
        break;

      case EMPTY_LIST:
        push(make(PyValue::Kind::List));
        break;
      case LIST: {
        std::vector<PyValue*> items = pop_mark();
        PyValue* v = make(PyValue::Kind::List);
        charge(items.size());
        v->items = std::move(items);
        push(v);
        break;
      }
      case APPEND: {
        PyValue* item = pop();
        PyValue* list = top();
        if (list->kind != PyValue::Kind::List) fail("APPEND to a non-list");
        charge(1);
        list->items.push_back(item);
        break;
      }
      case APPENDS: {
        std::vector<PyValue*> items = pop_mark();
        PyValue* list = top();
        if (list->kind != PyValue::Kind::List) fail("APPENDS to a non-list");
        charge(items.size());
        list->items.insert(list->items.end(), items.begin(), items.end());
        break;
      }

      case EMPTY_DICT:
        push(make(PyValue::Kind::Dict));
        break;
      case DICT: {
        std::vector<PyValue*> items = pop_mark();
        if (items.size() % 2 != 0) fail("DICT with an odd number of items");
        PyValue* d = make(PyValue::Kind::Dict);
        for (std::size_t k = 0; k < items.size(); k += 2) dict_set(d, items[k], items[k + 1]);
        push(d);
        break;
      }
      case SETITEM: {
        PyValue* value = pop();
        PyValue* key = pop();
        dict_set(top(), key, value);
        break;
      }
      case SETITEMS: {
        std::vector<PyValue*> items = pop_mark();
        if (items.size() % 2 != 0) fail("SETITEMS with an odd number of items");
        PyValue* d = top();
        for (std::size_t k = 0; k < items.size(); k += 2) dict_set(d, items[k], items[k + 1]);
        break;
      }

      case BINPUT:
        memo_put(read_le(1), top());
        break;
      case LONG_BINPUT:
        memo_put(read_le(4), top());
        break;
      case MEMOIZE:
        memo_put(memo_.size(), top());
        break;
      case PUT:
        memo_put(static_cast<std::uint64_t>(parse_int(read_line())), top());
        break;
      case BINGET:
        push(memo_get(read_le(1)));
        break;
      case LONG_BINGET:
        push(memo_get(read_le(4)));
        break;
      case GET:
        push(memo_get(static_cast<std::uint64_t>(parse_int(read_line()))));
        break;

      case GLOBAL: {
        const std::string module = read_line();
        const std::string name = read_line();
        push(resolve_global(module, name));
        break;
      }
      case STACK_GLOBAL: {
        PyValue* name = pop();
        PyValue* module = pop();
        if (module->kind != PyValue::Kind::Str || name->kind != PyValue::Kind::Str) {
          fail("STACK_GLOBAL with non-string names");
        }
        push(resolve_global(module->s, name->s));
        break;
      }
      case INST: {
        const std::string module = read_line();
        const std::string name = read_line();
        PyValue* cls = resolve_global(module, name);
        push(call(cls, pop_mark()));
        break;
      }
      case OBJ: {
        std::vector<PyValue*> items = pop_mark();
        if (items.empty()) fail("OBJ without a class");
        PyValue* cls = items.front();
        items.erase(items.begin());
        push(call(cls, items));
        break;
      }
      case REDUCE: {
        PyValue* args = pop();
        PyValue* callable = pop();
        if (args->kind != PyValue::Kind::Tuple) fail("REDUCE arguments are not a tuple");
        push(call(callable, args->items));
        break;
      }
      case NEWOBJ: {
        PyValue* args = pop();
        PyValue* cls = pop();
        if (args->kind != PyValue::Kind::Tuple) fail("NEWOBJ arguments are not a tuple");
        push(instantiate(cls, args->items));
        break;
      }
      case NEWOBJ_EX: {
        PyValue* kwargs = pop();
        PyValue* args = pop();
        PyValue* cls = pop();
        if (args->kind != PyValue::Kind::Tuple || kwargs->kind != PyValue::Kind::Dict ||
            kwargs->dict_size() != 0) {
          fail("NEWOBJ_EX with keyword arguments");
        }
        push(instantiate(cls, args->items));
        break;
      }
      case BUILD: {
        PyValue* state = pop();
        PyValue* obj = top();
        // state_dict() OrderedDicts carry a `_metadata` attribute (module versions): Python sets
        // it with BUILD. Attributes are not items, so there is nothing to keep.
        if (obj->kind != PyValue::Kind::Dict) {
          fail(std::string("BUILD on a ") + kind_name(obj->kind));
        }
        (void)state;
        break;
      }
      case BINPERSID:
        push(persistent_load(pop()));
        break;

      case EXT1:
      case EXT2:
      case EXT4: {
        const std::uint64_t code = read_le(op == EXT1 ? 1 : op == EXT2 ? 2 : 4);
        // The extension registry maps codes to globals we cannot name: refuse like a global.
        throw InputError(origin_, "refuses pickle extension code " + std::to_string(code) +
                                      " (aquin executes no code from checkpoints)");
      }
      default:
        // Text strings (STRING, UNICODE), PERSID, sets and out-of-band buffers: torch.save
        // never writes them.
        fail("unsupported pickle opcode " + hex_byte(op));
    }
  }
  return *result;
}

}  // namespace aquin::io
