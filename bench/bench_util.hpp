// What every benchmark here needs: running a command in a child with its wall time, CPU time and
// peak RSS, doing heavy set-up work in a child so that this process stays small, and the shape and
// config.json of the Llama models they generate.
//
// Why the second: a forked child's ru_maxrss starts from the RSS it shared with its parent at the
// fork (Linux carries the forked copy's high-water mark across exec), so a benchmark that generated
// a model in its own process would charge that memory to every command it then measures.
#pragma once

#include <dlfcn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

namespace aquin::bench {

struct Measured {
  double seconds = 0;      ///< wall
  double cpu_seconds = 0;  ///< user + system of the child and its children
  double peak_rss_mb = 0;
  int code = -1;           ///< exit status, -1 when killed
};

/// A Llama-architecture shape; the defaults are Llama-3.2-1B's.
struct LlamaShape {
  int layers = 16;
  int64_t d = 2048, heads = 32, kv_heads = 8, mlp = 8192, vocab = 128256;
  int64_t max_positions = 131072;
  int64_t head_dim() const { return d / heads; }
};

/// Its Hugging Face config.json: Llama-3.2-1B's (tied embeddings, bf16, llama3 RoPE scaling).
inline std::string llama_config_json(const LlamaShape& s) {
  return "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": " + std::to_string(s.d) +
         ", \"intermediate_size\": " + std::to_string(s.mlp) + ", \"num_attention_heads\": " + std::to_string(s.heads) +
         ", \"num_key_value_heads\": " + std::to_string(s.kv_heads) + ", \"num_hidden_layers\": " + std::to_string(s.layers) +
         ", \"vocab_size\": " + std::to_string(s.vocab) + ", \"max_position_embeddings\": " +
         std::to_string(s.max_positions) +
         ", \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, "
         "\"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
         "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, "
         "\"hidden_act\": \"silu\", \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\"}\n";
}

/// The 1-minute load average: on a shared machine a wall time means little without it.
inline std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string s;
  f >> s;
  return s.empty() ? "?" : s;
}

/// One line on the machine a figure came from: CPU model (/proc/cpuinfo), cores, the OpenBLAS
/// kernel set in use (openblas_get_corename when OpenBLAS is loaded in this process, else
/// $OPENBLAS_CORETYPE), the thread count the benchmark runs with, and the load average now.
inline std::string machine_line(int threads) {
  std::string cpu = "unknown CPU";
  {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
        cpu = line.substr(line.find(':') + 1);
        cpu.erase(0, cpu.find_first_not_of(" \t"));
        break;
      }
  }
  std::string blas;
  using name_fn = char* (*)();
  if (auto f = reinterpret_cast<name_fn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) blas = std::string("OpenBLAS core ") + f();
  else if (const char* env = std::getenv("OPENBLAS_CORETYPE")) blas = std::string("OPENBLAS_CORETYPE=") + env;
  else blas = "OpenBLAS core unknown (not loaded, OPENBLAS_CORETYPE unset)";
  return cpu + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores; " + blas + "; " +
         std::to_string(threads) + " threads; load average " + load_average() + " at the start";
}

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

/// A child process (a reference implementation) driven line by line over its stdin and stdout,
/// so that its timed runs interleave with ours and both see the same machine load.
class LineChild {
 public:
  /// Starts `cmd` with /bin/sh.
  explicit LineChild(const std::string& cmd) {
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    to_ = fdopen(to_child[1], "w");
    from_ = fdopen(from_child[0], "r");
  }
  ~LineChild() {
    close_pipes();
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  LineChild(const LineChild&) = delete;
  LineChild& operator=(const LineChild&) = delete;

  void send(const std::string& line) {
    std::fputs((line + "\n").c_str(), to_);
    std::fflush(to_);
  }
  /// The child's next line, without its line break; throws when the child has exited.
  std::string line() {
    char buf[4096];
    if (std::fgets(buf, sizeof buf, from_) == nullptr) throw std::runtime_error("the reference exited early");
    std::string s = buf;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  /// Closes its stdin and stdout and waits for it; returns its peak RSS in MB. Throws when it failed.
  double finish() {
    close_pipes();
    int status = 0;
    struct rusage ru {};
    wait4(pid_, &status, 0, &ru);
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("the reference failed");
    return static_cast<double>(ru.ru_maxrss) / 1024.0;
  }

 private:
  void close_pipes() {
    if (to_ != nullptr) std::fclose(to_);
    if (from_ != nullptr) std::fclose(from_);
    to_ = from_ = nullptr;
  }
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

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
