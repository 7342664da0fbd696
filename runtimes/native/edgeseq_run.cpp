// edgeseq-run: stream frames through an exported step with the native runtime (edgeseq.h), no Python.
//
//   edgeseq-run MODEL.pte --input frames.npy|frames.f32 --output y.npy [--state-in S] [--state-out S] [--all]
//   edgeseq-run MODEL.pte --stdin            (one frame per line, comma-separated; one output line per frame)
//   edgeseq-run MODEL.pte --info             (what the manifest gives the runner)
//   edgeseq-run MODEL.pte --bench N [--pool] (µs per call; --pool: one es_pool_step of all the program's rows)
//
// frames.npy: float32/float64 (T, d_in) or (T, batch, d_in); token ids int64 (T, batch) or (T, batch, 1) for a
// language model. frames.f32: raw float32, T * batch * d_in values. The output keeps only ready steps (the first
// `delay` outputs of a delayed model are not ready) unless --all. Exit 0, or 1 with one line on stderr.

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "edgeseq.h"

namespace {

// The ExecuTorch runtime logs at info level to stderr (cpuinfo probing, thread-pool set-up); the runner's own
// stderr is its error line. The runtime's log is hidden unless EDGESEQ_DEBUG is set, and stderr restored for it.
int saved_stderr = -1;

void quiet_runtime_log() {
  if (std::getenv("EDGESEQ_DEBUG")) return;
  std::fflush(stderr);
  saved_stderr = dup(2);
  int null = open("/dev/null", O_WRONLY);
  if (saved_stderr >= 0 && null >= 0) dup2(null, 2);
  if (null >= 0) close(null);
}

int die(const std::string& msg) {
  if (saved_stderr >= 0) {
    std::fflush(stderr);
    dup2(saved_stderr, 2);
  }
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

struct Array {
  std::vector<double> values;  // as read, widened
  std::vector<int64_t> shape;
};

bool read_npy(const std::string& path, Array* a, std::string* err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) { *err = path + ": cannot open it"; return false; }
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) { *err = path + ": not a .npy file"; return false; }
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint16_t h16 = 0;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string header(hlen, '\0');
  if (!f.read(&header[0], hlen)) { *err = path + ": truncated header"; return false; }
  auto field = [&](const std::string& key) {
    auto i = header.find("'" + key + "'");
    return i == std::string::npos ? std::string() : header.substr(header.find(':', i) + 1);
  };
  std::string descr = field("descr"), order = field("fortran_order"), shape = field("shape");
  descr = descr.substr(descr.find('\'') + 1);
  descr = descr.substr(0, descr.find('\''));
  if (order.find("True") < order.find(',')) { *err = path + ": Fortran-ordered arrays are not read"; return false; }
  shape = shape.substr(shape.find('(') + 1, shape.find(')') - shape.find('(') - 1);
  std::stringstream ss(shape);
  std::string part;
  size_t n = 1;
  while (std::getline(ss, part, ',')) {
    if (part.find_first_not_of(" ") == std::string::npos) continue;
    a->shape.push_back(std::stoll(part));
    n *= static_cast<size_t>(a->shape.back());
  }
  a->values.resize(n);
  if (descr == "<f4") {
    std::vector<float> v(n);
    if (!f.read(reinterpret_cast<char*>(v.data()), n * 4)) { *err = path + ": truncated data"; return false; }
    for (size_t i = 0; i < n; ++i) a->values[i] = v[i];
  } else if (descr == "<f8") {
    if (!f.read(reinterpret_cast<char*>(a->values.data()), n * 8)) { *err = path + ": truncated data"; return false; }
  } else if (descr == "<i8") {
    std::vector<int64_t> v(n);
    if (!f.read(reinterpret_cast<char*>(v.data()), n * 8)) { *err = path + ": truncated data"; return false; }
    for (size_t i = 0; i < n; ++i) a->values[i] = static_cast<double>(v[i]);
  } else {
    *err = path + ": dtype " + descr + " (float32, float64 or int64 expected)";
    return false;
  }
  return true;
}

bool write_npy(const std::string& path, const std::vector<float>& v, const std::vector<int64_t>& shape, std::string* err) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) { *err = path + ": cannot write it"; return false; }
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t len = static_cast<uint16_t>(header.size());
    f.write(reinterpret_cast<const char*>(&len), 2);
    f.write(header.data(), header.size());
    f.write(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    if (!f) { *err = path + ": write failed"; return false; }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) { *err = path + ": " + std::strerror(errno); return false; }
  return true;
}

bool write_bytes(const std::string& path, const std::vector<unsigned char>& b, std::string* err) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) { *err = path + ": cannot write it"; return false; }
    f.write(reinterpret_cast<const char*>(b.data()), b.size());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) { *err = path + ": " + std::strerror(errno); return false; }
  return true;
}

bool ends_with(const std::string& s, const std::string& e) { return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0; }

bool writable_beside(const std::string& path) {
  std::string probe = path + ".probe";
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) return false;
  std::fclose(f);
  std::remove(probe.c_str());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::printf("usage: edgeseq-run MODEL.pte (--input FRAMES.npy|.f32 --output Y.npy | --stdin | --info | --bench N)"
                " [--state-in S.esstate] [--state-out S.esstate] [--all] [--threads N (default 1)] [--pool (with --bench)]\n");
    return argc < 2 ? 1 : 0;
  }
  std::string model = argv[1], input, output, state_in, state_out, bench, threads = "1";
  bool use_stdin = false, all = false, info = false, pool = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](std::string* dst) {
      if (i + 1 >= argc) return false;
      *dst = argv[++i];
      return true;
    };
    if ((a == "--input" || a == "-i") && next(&input)) continue;
    if ((a == "--output" || a == "-o") && next(&output)) continue;
    if (a == "--state-in" && next(&state_in)) continue;
    if (a == "--state-out" && next(&state_out)) continue;
    if (a == "--stdin") { use_stdin = true; continue; }
    if (a == "--all") { all = true; continue; }
    if (a == "--info") { info = true; continue; }
    if (a == "--pool") { pool = true; continue; }
    if (a == "--bench" && next(&bench)) continue;
    if (a == "--threads" && next(&threads)) continue;
    return die("unknown or incomplete option " + a + " (see edgeseq-run --help)");
  }
  if (pool && bench.empty()) return die("--pool goes with --bench N");
  if (!info && !use_stdin && bench.empty() && (input.empty() || output.empty())) return die("give --input and --output, or --stdin");
  if (!output.empty() && !ends_with(output, ".npy")) return die("--output " + output + ": must end in .npy");
  if (!output.empty() && !writable_beside(output)) return die("--output " + output + ": cannot write there");
  if (!state_out.empty() && !writable_beside(state_out)) return die("--state-out " + state_out + ": cannot write there");


  quiet_runtime_log();
  if (es_set_threads(std::atoi(threads.c_str())) != ES_OK) return die(std::string("--threads ") + threads + ": " + es_last_error());
  if (pool) {  // benchmarks/pool.py: one es_pool_step of every row of the program, in microseconds
    es_pool* p = nullptr;
    if (es_pool_open(model.c_str(), 0, &p) != ES_OK) return die(es_last_error());
    struct PoolCloser { es_pool* p; ~PoolCloser() { es_pool_close(p); } } pool_closer{p};
    int slot = 0;
    for (int k = 0; k < es_pool_slots(p); ++k)
      if (es_pool_join(p, nullptr, 0, &slot) != ES_OK) return die(es_last_error());
    double us = 0;
    if (es_pool_benchmark(p, std::atoi(bench.c_str()), &us) != ES_OK) return die(es_last_error());
    std::printf("{\"pool_step_us\": %.4f, \"streams\": %d}\n", us, es_pool_slots(p));
    return 0;
  }
  es_stream* s = nullptr;
  if (es_open(model.c_str(), &s) != ES_OK) return die(es_last_error());
  struct Closer { es_stream* s; ~Closer() { es_close(s); } } closer{s};
  const int d_in = es_d_in(s), d_out = es_d_out(s), batch = es_batch(s), vocab = es_vocab_size(s);
  if (!bench.empty()) {  // benchmarks/native.py: per-call microseconds of bare execute and of es_push
    double ex = 0, push = 0;
    if (es_benchmark(s, std::atoi(bench.c_str()), &ex, &push) != ES_OK) return die(es_last_error());
    std::printf("{\"execute_us\": %.4f, \"push_us\": %.4f, \"state_copied\": %s}\n", ex, push, es_state_copied(s) ? "true" : "false");
    return 0;
  }
  if (info) {
    std::printf("d_in %d d_out %d batch %d vocab %d delay %d state %s fingerprint %s\n", d_in, d_out, batch, vocab, es_delay(s),
                es_state_copied(s) ? "copied" : "swapped", es_fingerprint(s));
    return 0;
  }
  if (!state_in.empty()) {
    std::ifstream f(state_in, std::ios::binary);
    if (!f) return die(state_in + ": cannot open it");
    std::vector<unsigned char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (es_load_state(s, b.data(), b.size()) != ES_OK) return die(state_in + ": " + es_last_error());
  }
  const size_t per = static_cast<size_t>(batch) * (vocab ? 1 : d_in);
  std::vector<float> frame(per), out(static_cast<size_t>(batch) * d_out);
  std::vector<int64_t> ids(batch);
  int ready = 0;
  auto push = [&](const double* v) -> int {
    if (vocab) {
      for (int b = 0; b < batch; ++b) {
        if (v[b] != std::floor(v[b])) return ES_ERR_VALUE;
        ids[b] = static_cast<int64_t>(v[b]);
      }
      return es_push_tokens(s, ids.data(), out.data(), &ready);
    }
    for (size_t k = 0; k < per; ++k) frame[k] = static_cast<float>(v[k]);
    return es_push(s, frame.data(), out.data(), &ready);
  };
  if (use_stdin) {
    std::string line;
    std::vector<double> v;
    while (std::getline(std::cin, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      v.clear();
      std::stringstream ss(line);
      std::string cell;
      while (std::getline(ss, cell, ',')) {
        char* end = nullptr;
        v.push_back(std::strtod(cell.c_str(), &end));
        if (end == cell.c_str()) return die("stdin line " + std::to_string(es_steps(s) + 1) + ": '" + cell + "' is not a number");
      }
      if (v.size() != per) return die("stdin line " + std::to_string(es_steps(s) + 1) + ": " + std::to_string(v.size()) + " values; expected " + std::to_string(per));
      if (push(v.data()) != ES_OK) return die(es_last_error());
      if (!ready && !all) continue;
      for (size_t k = 0; k < out.size(); ++k) std::printf(k ? ",%.9g" : "%.9g", out[k]);
      std::printf("\n");
      std::fflush(stdout);
    }
  } else {
    Array a;
    std::string err;
    if (ends_with(input, ".npy")) {
      if (!read_npy(input, &a, &err)) return die(err);
    } else if (ends_with(input, ".f32")) {
      std::ifstream f(input, std::ios::binary);
      if (!f) return die(input + ": cannot open it");
      std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (b.size() % (4 * per)) return die(input + ": " + std::to_string(b.size()) + " bytes is not a whole number of frames of " + std::to_string(per) + " float32");
      a.values.resize(b.size() / 4);
      for (size_t i = 0; i < a.values.size(); ++i) { float x; std::memcpy(&x, b.data() + 4 * i, 4); a.values[i] = x; }
      a.shape = {static_cast<int64_t>(a.values.size() / per), static_cast<int64_t>(per)};
    } else {
      return die(input + ": expected a .npy or .f32 file");
    }
    if (a.shape.empty() || a.shape[0] == 0) return die(input + ": no frames to stream");
    size_t frame_values = a.values.size() / static_cast<size_t>(a.shape[0]);
    if (frame_values != per) return die(input + ": " + std::to_string(frame_values) + " values per step; the model takes " + std::to_string(per) + " (batch " + std::to_string(batch) + " x " + std::to_string(vocab ? 1 : d_in) + ")");
    std::vector<float> ys;
    int64_t kept = 0;
    for (int64_t t = 0; t < a.shape[0]; ++t) {
      if (push(a.values.data() + t * per) != ES_OK) return die(input + ": " + es_last_error());
      if (!ready && !all) continue;
      ys.insert(ys.end(), out.begin(), out.end());
      ++kept;
    }
    std::vector<int64_t> shape = batch == 1 ? std::vector<int64_t>{kept, d_out} : std::vector<int64_t>{kept, batch, d_out};
    if (!write_npy(output, ys, shape, &err)) return die(err);
  }
  if (!state_out.empty()) {
    size_t n = 0;
    es_state_bytes(s, &n);
    std::vector<unsigned char> b(n);
    if (es_save_state(s, b.data(), n, &n) != ES_OK) return die(es_last_error());
    std::string err;
    if (!write_bytes(state_out, b, &err)) return die(err);
  }
  return 0;
}
