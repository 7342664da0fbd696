// edgeseq native runtime (see edgeseq.h): the rules of the Python ExecuTorch session (runtimes/et.py), read from
// the manifest: state order and names, initial fills, passed-through state (a ring buffer's shift, not a program
// output), channels-last state inputs, inputs read in place (each buffer with TAIL_BYTES after it: XNNPACK may
// read past an input's end), the fixed batch, token-id inputs, the ready flag of delayed and strided steps.

#include "edgeseq.h"

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "json.hpp"
#include "sha256.hpp"

// The ExecuTorch thread pool (libexecutorch_threadpool.so). The wheel ships the library but not its header: these
// are the functions the Python bindings call too (portable_lib._unsafe_reset_threadpool,
// _threadpool_get_thread_count), declared as defined.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::extension::make_tensor_ptr;
using executorch::runtime::EValue;

namespace {

thread_local std::string last_error;

int fail(int code, const std::string& msg) {
  last_error = msg;
  return code;
}

constexpr size_t TAIL_BYTES = 64;  // as runtimes/et.py: XNNPACK reads up to 16 bytes past an input (xnnpack.h)

struct DType {
  ScalarType type;
  size_t size;
  uint32_t code;  // in the state format
};

bool dtype_of(const std::string& name, DType* out) {
  static const std::map<std::string, DType> known = {
      {"float32", {ScalarType::Float, 4, 0}}, {"float16", {ScalarType::Half, 2, 1}},
      {"int8", {ScalarType::Char, 1, 2}},     {"int64", {ScalarType::Long, 8, 3}},
      {"bfloat16", {ScalarType::BFloat16, 2, 4}}};
  auto it = known.find(name);
  if (it == known.end()) return false;
  *out = it->second;
  return true;
}

// A buffer with TAIL_BYTES of its own after the data, 64-byte aligned.
struct Buffer {
  std::vector<unsigned char> bytes;
  size_t size = 0;
  unsigned char* data() { return bytes.data() + pad; }
  const unsigned char* data() const { return bytes.data() + pad; }
  size_t pad = 0;
  void resize(size_t n) {
    size = n;
    bytes.assign(n + TAIL_BYTES + 64, 0);
    pad = (64 - reinterpret_cast<uintptr_t>(bytes.data()) % 64) % 64;
  }
};

struct StateTensor {
  std::string name;
  std::vector<int64_t> shape;  // with the batch
  DType dtype;
  double fill = 0.0;
  bool channels_last = false;
  size_t numel() const {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    return n;
  }
};

// logical (C order) <-> channels-last (N, H, W, C) for a 4D tensor of `size`-byte elements; `to_cl` picks the way
void channels_last_copy(const unsigned char* src, unsigned char* dst, const std::vector<int64_t>& s, size_t size, bool to_cl) {
  const int64_t N = s[0], C = s[1], H = s[2], W = s[3];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t logical = ((n * C + c) * H + h) * W + w, cl = ((n * H + h) * W + w) * C + c;
          std::memcpy(dst + (to_cl ? cl : logical) * size, src + (to_cl ? logical : cl) * size, size);
        }
}

void fill_value(unsigned char* dst, size_t n, const DType& dt, double v) {
  for (size_t i = 0; i < n; ++i) {
    if (dt.code == 0) {
      float f = static_cast<float>(v);
      std::memcpy(dst + i * 4, &f, 4);
    } else if (dt.code == 2) {
      int8_t q = static_cast<int8_t>(v);
      dst[i] = static_cast<unsigned char>(q);
    } else if (dt.code == 3) {
      int64_t q = static_cast<int64_t>(v);
      std::memcpy(dst + i * 8, &q, 8);
    } else {  // half / bfloat16: the fills edgeseq writes are 0 and 1 (and the float32 extremes for running max/min)
      uint16_t h = 0;
      if (v == 1.0) h = dt.code == 1 ? 0x3C00 : 0x3F80;
      else if (v > 1e30) h = dt.code == 1 ? 0x7BFF : 0x7F7F;
      else if (v < -1e30) h = dt.code == 1 ? 0xFBFF : 0xFF7F;
      std::memcpy(dst + i * 2, &h, 2);
    }
  }
}

}  // namespace

struct es_stream {
  std::unique_ptr<Module> module;
  const std::string forward = "forward";
  std::string fingerprint;
  int d_in = 0, d_out = 0, batch = 1, vocab = 0, delay = 0, stride = 1;
  int64_t steps = 0;
  DType in_dtype{ScalarType::Float, 4, 0};
  std::vector<StateTensor> tensors;
  // Two sets of state buffers (as the program reads them: channels-last where it takes it so). A program whose
  // outputs are not memory-planned (edgeseq's exporter writes them so) reads set `cur` and writes the next state
  // straight into set 1 - cur: no copy of the state per step, the sets swap. A program with planned outputs (an
  // older export, or one that returns an input unchanged) uses set 0 only and its outputs are copied into it.
  std::vector<Buffer> bufs[2];
  int cur = 0;
  bool zero_copy = false;
  std::vector<int> computed;                // state indices the program returns, in output order
  std::vector<std::pair<int, int>> passed;  // (next-state index, input-state index)
  std::vector<Buffer> scratch;              // one per passed-through state (copy mode): read before outputs land
  Buffer frame, y;
  std::vector<TensorPtr> tensor_ptrs;       // keeps the tensors below alive
  std::vector<EValue> inputs[2];            // frame + set k
  std::vector<EValue> outputs[2];           // the computed state tensors on set k (zero_copy)
  const char* check_rows = nullptr;         // rows whose output and next state a step checks (a pool step: the rows
                                            // given frames); null: every row
  std::vector<Buffer>& state() { return bufs[cur]; }
  const std::vector<Buffer>& state() const { return bufs[cur]; }
};

namespace {

int read_file(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(ES_ERR_IO, path + ": cannot open it");
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return ES_OK;
}

std::string base_name(const std::string& p) {
  auto i = p.find_last_of('/');
  return i == std::string::npos ? p : p.substr(i + 1);
}

int parse_manifest(es_stream* s, const std::string& pte, const std::string& pte_bytes) {
  std::string man_path = pte + ".edgeseq.json", text;
  {
    std::ifstream f(man_path);
    if (!f) return fail(ES_ERR_MANIFEST, pte + ": no manifest beside it (expected " + base_name(man_path) + "); export it with edgeseq export");
  }
  int rc = read_file(man_path, &text);
  if (rc) return rc;
  es_json::Value m;
  std::string err;
  if (!es_json::parse(text, &m, &err)) return fail(ES_ERR_MANIFEST, man_path + ": not valid JSON (" + err + ")");
  try {
    if (m["target"].str() != "executorch") return fail(ES_ERR_MANIFEST, man_path + ": a manifest of a " + m["target"].str() + " artifact, not of an ExecuTorch program");
    if (m["file"].str() != base_name(pte)) return fail(ES_ERR_MANIFEST, man_path + ": describes " + m["file"].str() + ", not " + base_name(pte));
    if (m.has("file_sha256") && m["file_sha256"].str() != es_sha256::hex(pte_bytes))
      return fail(ES_ERR_MANIFEST, pte + ": file does not match its manifest (sha256 differs); re-export it");
    s->fingerprint = m["fingerprint"].str();
    s->batch = static_cast<int>(m["batch"].num());
    s->vocab = m.has("vocab_size") && !m["vocab_size"].is_null() ? static_cast<int>(m["vocab_size"].num()) : 0;
    const auto& in0 = m["inputs"].at(0);
    s->d_in = static_cast<int>(in0["shape"].at(1).num());
    if (!dtype_of(in0["dtype"].str(), &s->in_dtype)) return fail(ES_ERR_MANIFEST, man_path + ": input dtype " + in0["dtype"].str());
    s->d_out = static_cast<int>(m["outputs"].at(0)["shape"].at(1).num());
    const auto& spec = m["state_spec"];
    s->delay = static_cast<int>(spec["delay"].num());
    s->stride = spec.has("output_stride") ? static_cast<int>(spec["output_stride"].num()) : 1;
    std::map<std::string, int> index;
    for (size_t i = 0; i < spec["tensors"].size(); ++i) {
      const auto& t = spec["tensors"].at(i);
      StateTensor st;
      st.name = t["name"].str();
      st.shape.push_back(s->batch);
      for (size_t k = 1; k < t["shape"].size(); ++k) st.shape.push_back(static_cast<int64_t>(t["shape"].at(k).num()));
      if (!dtype_of(t["dtype"].str(), &st.dtype)) return fail(ES_ERR_MANIFEST, man_path + ": state dtype " + t["dtype"].str());
      st.fill = t.has("fill") ? t["fill"].num() : 0.0;
      index[st.name] = static_cast<int>(i);
      s->tensors.push_back(st);
    }
    const auto& rt = m["runtime"];
    if (rt.has("channels_last_state"))
      for (size_t i = 0; i < rt["channels_last_state"].size(); ++i) {
        auto it = index.find(rt["channels_last_state"].at(i).str());
        if (it == index.end()) return fail(ES_ERR_MANIFEST, man_path + ": channels_last_state names an unknown state tensor");
        if (s->tensors[it->second].shape.size() != 4) return fail(ES_ERR_MANIFEST, man_path + ": a channels-last state that is not 4D");
        s->tensors[it->second].channels_last = true;
      }
    std::vector<bool> is_passed(s->tensors.size(), false);
    if (rt.has("passthrough_state"))
      for (const auto& kv : rt["passthrough_state"].object()) {
        auto a = index.find(kv.first), b = index.find(kv.second.str());
        if (a == index.end() || b == index.end()) return fail(ES_ERR_MANIFEST, man_path + ": passthrough_state names an unknown state tensor");
        s->passed.emplace_back(a->second, b->second);
        is_passed[a->second] = true;
      }
    for (size_t i = 0; i < s->tensors.size(); ++i)
      if (!is_passed[i]) s->computed.push_back(static_cast<int>(i));
  } catch (const std::exception& e) {
    return fail(ES_ERR_MANIFEST, man_path + ": " + e.what());
  }
  return ES_OK;
}

void initial_state(es_stream* s) {
  for (size_t i = 0; i < s->tensors.size(); ++i)
    fill_value(s->state()[i].data(), s->tensors[i].numel(), s->tensors[i].dtype, s->tensors[i].fill);
  s->steps = 0;
}

// A tensor of state tensor `t`'s shape and layout on `data`
TensorPtr state_tensor(const StateTensor& t, void* data) {
  std::vector<executorch::aten::SizesType> sizes(t.shape.begin(), t.shape.end());
  if (!t.channels_last) return make_tensor_ptr(sizes, data, t.dtype.type);
  std::vector<executorch::aten::DimOrderType> order = {0, 2, 3, 1};
  std::vector<executorch::aten::StridesType> strides = {
      static_cast<int>(t.shape[1] * t.shape[2] * t.shape[3]), 1, static_cast<int>(t.shape[3] * t.shape[1]), static_cast<int>(t.shape[1])};
  return make_tensor_ptr(sizes, data, order, strides, t.dtype.type);
}

// The program's state outputs onto the set it does not read (zero copy): at open and after every swap
int point_outputs(es_stream* s) {
  const auto& outs = s->outputs[1 - s->cur];
  for (size_t k = 0; k < outs.size(); ++k)
    if (s->module->set_output(s->forward, outs[k], 1 + k) != executorch::runtime::Error::Ok)
      return fail(ES_ERR_RUNTIME, "ExecuTorch: cannot set output " + std::to_string(1 + k) + " of the program");
  return ES_OK;
}

}  // namespace

extern "C" {

const char* es_last_error(void) { return last_error.c_str(); }

int es_open(const char* pte_path, es_stream** out) {
  if (!pte_path || !out) return fail(ES_ERR_ARG, "es_open: null argument");
  *out = nullptr;
  std::string pte(pte_path), bytes;
  int rc = read_file(pte, &bytes);
  if (rc) return rc;
  // the flatbuffer's file identifier ("ET" and two digits at bytes 4..7): the runtime aborts on some non-program
  // bytes instead of returning an error, so nothing else reaches it
  if (bytes.size() < 8 || bytes[4] != 'E' || bytes[5] != 'T' || !isdigit(bytes[6]) || !isdigit(bytes[7]))
    return fail(ES_ERR_RUNTIME, pte + ": not an ExecuTorch program (no ET file identifier in its header)");
  auto s = std::make_unique<es_stream>();
  rc = parse_manifest(s.get(), pte, bytes);
  if (rc) return rc;
  s->module = std::make_unique<Module>(pte, Module::LoadMode::File);
  if (s->module->load_method("forward") != executorch::runtime::Error::Ok)
    return fail(ES_ERR_RUNTIME, pte + ": ExecuTorch cannot load its forward method");
  auto meta = s->module->method_meta("forward");
  if (!meta.ok()) return fail(ES_ERR_RUNTIME, pte + ": no method metadata");
  if (meta->num_inputs() != 1 + s->tensors.size() || meta->num_outputs() != 1 + s->computed.size())
    return fail(ES_ERR_MANIFEST, pte + ": the program's inputs/outputs do not match its manifest's state");
  // zero copy when every output is unplanned: the program writes where it is told
  s->zero_copy = true;
  for (size_t k = 0; k < meta->num_outputs(); ++k) {
    auto om = meta->output_tensor_meta(k);
    if (!om.ok() || om->is_memory_planned()) s->zero_copy = false;
  }
  // buffers and the tensors on them, made once: the program reads them in place every call
  const size_t in_numel = static_cast<size_t>(s->batch) * (s->vocab ? 1 : s->d_in);
  s->frame.resize(in_numel * s->in_dtype.size);
  std::vector<executorch::aten::SizesType> fsizes = {s->batch, s->vocab ? 1 : s->d_in};
  TensorPtr frame = make_tensor_ptr(fsizes, s->frame.data(), s->in_dtype.type);
  s->tensor_ptrs.push_back(frame);
  const int sets = s->zero_copy ? 2 : 1;
  for (int k = 0; k < sets; ++k) {
    s->bufs[k].resize(s->tensors.size());
    s->inputs[k].emplace_back(frame);
    for (size_t i = 0; i < s->tensors.size(); ++i) {
      const auto& t = s->tensors[i];
      s->bufs[k][i].resize(t.numel() * t.dtype.size);
      TensorPtr p = state_tensor(t, s->bufs[k][i].data());
      s->tensor_ptrs.push_back(p);
      s->inputs[k].emplace_back(p);
    }
    if (s->zero_copy)
      for (int i : s->computed) s->outputs[k].push_back(s->inputs[k][1 + i]);
  }
  if (!s->zero_copy) {
    for (const auto& p : s->passed) {
      s->scratch.emplace_back();
      s->scratch.back().resize(s->bufs[0][p.second].size);
    }
  } else {
    s->y.resize(sizeof(float) * static_cast<size_t>(s->batch) * s->d_out);
    std::vector<executorch::aten::SizesType> ysizes = {s->batch, s->d_out};
    TensorPtr y = make_tensor_ptr(ysizes, s->y.data(), ScalarType::Float);
    s->tensor_ptrs.push_back(y);
    auto om = meta->output_tensor_meta(0);
    if (om->nbytes() != s->y.size || s->module->set_output(s->forward, EValue(y), 0) != executorch::runtime::Error::Ok)
      return fail(ES_ERR_MANIFEST, pte + ": the program's output does not match its manifest's d_out");
    for (size_t k = 0; k < s->computed.size(); ++k) {
      auto sm = meta->output_tensor_meta(1 + k);
      if (sm->nbytes() != s->bufs[0][s->computed[k]].size)
        return fail(ES_ERR_MANIFEST, pte + ": program output " + std::to_string(1 + k) + " does not match its manifest's state");
    }
    rc = point_outputs(s.get());
    if (rc) return rc;
  }
  initial_state(s.get());
  *out = s.release();
  return ES_OK;
}

void es_close(es_stream* s) { delete s; }

int es_d_in(const es_stream* s) { return s ? s->d_in : 0; }
int es_d_out(const es_stream* s) { return s ? s->d_out : 0; }
int es_batch(const es_stream* s) { return s ? s->batch : 0; }
int es_vocab_size(const es_stream* s) { return s ? s->vocab : 0; }
int es_delay(const es_stream* s) { return s ? s->delay : 0; }
int64_t es_steps(const es_stream* s) { return s ? s->steps : 0; }
const char* es_fingerprint(const es_stream* s) { return s ? s->fingerprint.c_str() : ""; }
int es_state_copied(const es_stream* s) { return s ? !s->zero_copy : 0; }

}  // extern "C"

// Whether the N values of dtype DT at P are all finite (none has its exponent bits all ones). On the bits as
// integers, eight lanes at a time, which g++ -O2 vectorizes: a 4-layer Mamba's 38,912 state floats take 2.8 us
// here (in cache).
static bool all_finite(const void* p, size_t n, const DType& dt) {
  if (dt.code == 0) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    uint32_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) {
        uint32_t v;
        std::memcpy(&v, b + 4 * (i + k), 4);
        acc[k] |= (v & 0x7f800000u) + 0x00800000u;  // bit 31 set only by an all-ones exponent
      }
    for (; i < n; ++i) {
      uint32_t v;
      std::memcpy(&v, b + 4 * i, 4);
      acc[0] |= (v & 0x7f800000u) + 0x00800000u;
    }
    uint32_t all = 0;
    for (uint32_t a : acc) all |= a;
    return !(all & 0x80000000u);
  }
  if (dt.code == 1 || dt.code == 4) {  // half, bfloat16
    const uint16_t mask = dt.code == 1 ? 0x7C00 : 0x7F80;
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, b + 2 * i, 2);
      if ((v & mask) == mask) return false;
    }
  }
  return true;  // integer state
}

// all_finite over the rows of a (batch, ...) tensor that the step checks (s->check_rows; every row without it)
static bool rows_finite(const es_stream* s, const void* p, size_t numel, const DType& dt) {
  if (!s->check_rows) return all_finite(p, numel, dt);
  const size_t per = numel / static_cast<size_t>(s->batch);
  const unsigned char* b = static_cast<const unsigned char*>(p);
  for (int r = 0; r < s->batch; ++r)
    if (s->check_rows[r] && !all_finite(b + per * dt.size * static_cast<size_t>(r), per, dt)) return false;
  return true;
}

static int nonfinite(const es_stream* s, const std::string& what) {
  return fail(ES_ERR_NUMERIC, "step " + std::to_string(s->steps) + " made " + what + " NaN/Inf from finite inputs (the model overflowed or diverged); the stream keeps its state from before this step (step " + std::to_string(s->steps) + ")");
}

static const DType kFloat32{ScalarType::Float, 4, 0};

static int run_step(es_stream* s, float* out, int* ready) {
  auto result = s->module->execute(s->forward, s->inputs[s->cur]);  // cur stays 0 without zero copy
  if (!result.ok()) return fail(ES_ERR_RUNTIME, "ExecuTorch: forward failed (error " + std::to_string(static_cast<int>(result.error())) + ")");
  const size_t ny = static_cast<size_t>(s->batch) * s->d_out;
  // the step is accepted only if its output and the state it computed are finite: checked before anything of it is
  // kept (the state the stream has stays as it was), in the order the Python session names them (state, output)
  const float* y = nullptr;
  if (s->zero_copy) {
    // the next state is in the other set already; passed-through state copied there from this call's inputs
    auto& next = s->bufs[1 - s->cur];
    for (int i : s->computed)
      if (!rows_finite(s, next[i].data(), s->tensors[i].numel(), s->tensors[i].dtype)) return nonfinite(s, "state tensor '" + s->tensors[i].name + "'");
    if (!rows_finite(s, s->y.data(), ny, kFloat32)) return nonfinite(s, "the output");
    for (const auto& p : s->passed) std::memcpy(next[p.first].data(), s->state()[p.second].data(), next[p.first].size);
    s->cur = 1 - s->cur;
    int rc = point_outputs(s);
    if (rc) return rc;
    y = reinterpret_cast<const float*>(s->y.data());
  } else {
    const auto& outs = *result;
    auto& st = s->bufs[0];
    for (size_t k = 0; k < s->computed.size(); ++k) {
      const auto& t = outs[1 + k].toTensor();
      const auto& tensor = s->tensors[s->computed[k]];
      if (static_cast<size_t>(t.nbytes()) != st[s->computed[k]].size) return fail(ES_ERR_RUNTIME, "program output " + std::to_string(1 + k) + " has an unexpected size");
      if (!rows_finite(s, t.const_data_ptr(), tensor.numel(), tensor.dtype)) return nonfinite(s, "state tensor '" + tensor.name + "'");
    }
    y = outs[0].toTensor().const_data_ptr<float>();
    if (!rows_finite(s, y, ny, kFloat32)) return nonfinite(s, "the output");
    // the outputs live in the program's planned memory: copied into the one set of state buffers, the
    // passed-through state first (its sources are this call's inputs, through a scratch copy)
    for (size_t k = 0; k < s->passed.size(); ++k)
      std::memcpy(s->scratch[k].data(), st[s->passed[k].second].data(), s->scratch[k].size);
    for (size_t k = 0; k < s->passed.size(); ++k)
      std::memcpy(st[s->passed[k].first].data(), s->scratch[k].data(), s->scratch[k].size);
    for (size_t k = 0; k < s->computed.size(); ++k)  // copied in the layout the program gave it
      std::memcpy(st[s->computed[k]].data(), outs[1 + k].toTensor().const_data_ptr(), st[s->computed[k]].size);
  }
  std::memcpy(out, y, sizeof(float) * ny);
  if (ready) *ready = s->steps >= s->delay && (s->steps - s->delay) % s->stride == 0;
  s->steps += 1;
  return ES_OK;
}

// N steps of PUSH (es_push or es_push_tokens) over N inputs of PER values each (es_run, es_run_tokens)
template <typename T>
static int run_steps(es_stream* s, int64_t n, const T* in, size_t per, float* out, int64_t* done,
                     int (*push)(es_stream*, const T*, float*, int*), const char* what) {
  if (done) *done = 0;
  if (!s || (n > 0 && (!in || !out)) || n < 0) return fail(ES_ERR_ARG, std::string(what) + ": null argument or negative n");
  const size_t o = static_cast<size_t>(s->batch) * s->d_out;
  for (int64_t t = 0; t < n; ++t) {
    int rc = push(s, in + per * static_cast<size_t>(t), out + o * static_cast<size_t>(t), nullptr);
    if (rc) return rc;
    if (done) *done = t + 1;
  }
  return ES_OK;
}

extern "C" {

int es_push(es_stream* s, const float* frame, float* out, int* ready) {
  if (!s || !frame || !out) return fail(ES_ERR_ARG, "es_push: null argument");
  if (s->vocab) return fail(ES_ERR_ARG, "this model takes token ids: use es_push_tokens");
  const size_t n = static_cast<size_t>(s->batch) * s->d_in;
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(frame[i]))
      return fail(ES_ERR_VALUE, "step " + std::to_string(s->steps) + " has " + (std::isnan(frame[i]) ? "NaN" : "Inf") + " at feature " + std::to_string(i % s->d_in));
  std::memcpy(s->frame.data(), frame, n * sizeof(float));
  return run_step(s, out, ready);
}

int es_push_tokens(es_stream* s, const int64_t* ids, float* out, int* ready) {
  if (!s || !ids || !out) return fail(ES_ERR_ARG, "es_push_tokens: null argument");
  if (!s->vocab) return fail(ES_ERR_ARG, "this model takes feature frames: use es_push");
  for (int b = 0; b < s->batch; ++b)
    if (ids[b] < 0 || ids[b] >= s->vocab)
      return fail(ES_ERR_VALUE, "step " + std::to_string(s->steps) + ": token id " + std::to_string(ids[b]) + " outside 0.." + std::to_string(s->vocab - 1));
  std::memcpy(s->frame.data(), ids, sizeof(int64_t) * s->batch);
  return run_step(s, out, ready);
}

int es_run(es_stream* s, int64_t n, const float* frames, float* out, int64_t* done) {
  return run_steps(s, n, frames, s ? static_cast<size_t>(s->batch) * s->d_in : 0, out, done, es_push, "es_run");
}

int es_run_tokens(es_stream* s, int64_t n, const int64_t* ids, float* out, int64_t* done) {
  return run_steps(s, n, ids, s ? static_cast<size_t>(s->batch) : 0, out, done, es_push_tokens, "es_run_tokens");
}

int es_reset(es_stream* s) {
  if (!s) return fail(ES_ERR_ARG, "es_reset: null argument");
  initial_state(s);
  return ES_OK;
}

}  // extern "C"

// the state format: "ESST", u32 version 1, u32 fingerprint length + bytes, i64 steps, u32 tensors; per tensor:
// u32 name length + name, u32 dtype code, u32 rank, i64 dims, the values in C order of the logical shape
namespace {
template <typename T>
void put(std::vector<unsigned char>& b, T v) {
  unsigned char raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  b.insert(b.end(), raw, raw + sizeof(T));
}

// One tensor's bytes in the state format's logical C order: the whole batch (row < 0) or one row of it
void logical_bytes(const StateTensor& t, const Buffer& buf, int row, unsigned char* dst) {
  const size_t rowbytes = buf.size / static_cast<size_t>(t.shape[0]);
  const unsigned char* src = row < 0 ? buf.data() : buf.data() + rowbytes * static_cast<size_t>(row);
  std::vector<int64_t> shape = t.shape;
  if (row >= 0) shape[0] = 1;
  if (t.channels_last) channels_last_copy(src, dst, shape, t.dtype.size, false);  // (N, H, W, C): N outermost
  else std::memcpy(dst, src, row < 0 ? buf.size : rowbytes);
}

// The inverse: one tensor's logical bytes SRC stored into the whole batch (row < 0) or one row of it
void store_logical(const StateTensor& t, Buffer& buf, int row, const unsigned char* src) {
  const size_t rowbytes = buf.size / static_cast<size_t>(t.shape[0]);
  unsigned char* dst = row < 0 ? buf.data() : buf.data() + rowbytes * static_cast<size_t>(row);
  std::vector<int64_t> shape = t.shape;
  if (row >= 0) shape[0] = 1;
  if (t.channels_last) channels_last_copy(src, dst, shape, t.dtype.size, true);
  else std::memcpy(dst, src, row < 0 ? buf.size : rowbytes);
}

// The state of the whole batch (row < 0), or of one row as a batch-1 state (a pool's stream), with STEPS
std::vector<unsigned char> serialize(const es_stream* s, int row = -1, int64_t steps = -1) {
  std::vector<unsigned char> b = {'E', 'S', 'S', 'T'};
  put<uint32_t>(b, 1);
  put<uint32_t>(b, static_cast<uint32_t>(s->fingerprint.size()));
  b.insert(b.end(), s->fingerprint.begin(), s->fingerprint.end());
  put<int64_t>(b, steps < 0 ? s->steps : steps);
  put<uint32_t>(b, static_cast<uint32_t>(s->tensors.size()));
  for (size_t i = 0; i < s->tensors.size(); ++i) {
    const auto& t = s->tensors[i];
    put<uint32_t>(b, static_cast<uint32_t>(t.name.size()));
    b.insert(b.end(), t.name.begin(), t.name.end());
    put<uint32_t>(b, t.dtype.code);
    put<uint32_t>(b, static_cast<uint32_t>(t.shape.size()));
    for (size_t k = 0; k < t.shape.size(); ++k) put<int64_t>(b, k == 0 && row >= 0 ? 1 : t.shape[k]);
    size_t at = b.size(), n = s->state()[i].size / (row < 0 ? 1 : static_cast<size_t>(t.shape[0]));
    b.resize(at + n);
    logical_bytes(t, s->state()[i], row, b.data() + at);
  }
  return b;
}

struct Reader {
  const unsigned char* p;
  size_t n, at = 0;
  bool take(void* dst, size_t k) {
    if (at + k > n) return false;
    std::memcpy(dst, p + at, k);
    at += k;
    return true;
  }
};
// A state in the format above, of this model with batch BATCH, checked whole: each tensor's values in logical order
int parse_state(const es_stream* s, const unsigned char* buf, size_t n, int64_t batch,
                std::vector<std::vector<unsigned char>>* values, int64_t* steps) {
  Reader r{buf, n};
  char magic[4];
  uint32_t version = 0, flen = 0, count = 0;
  if (!r.take(magic, 4) || std::memcmp(magic, "ESST", 4) != 0 || !r.take(&version, 4) || version != 1)
    return fail(ES_ERR_STATE, "not an edgeseq state (no ESST header)");
  if (!r.take(&flen, 4) || flen > 256) return fail(ES_ERR_STATE, "a truncated state");
  std::string fp(flen, '\0');
  if (!r.take(&fp[0], flen) || !r.take(steps, 8) || !r.take(&count, 4)) return fail(ES_ERR_STATE, "a truncated state");
  if (fp != s->fingerprint) return fail(ES_ERR_STATE, "the state comes from another model (fingerprint " + fp.substr(0, 16) + ", this model " + s->fingerprint.substr(0, 16) + ")");
  if (count != s->tensors.size()) return fail(ES_ERR_STATE, "the state has " + std::to_string(count) + " tensors; the model " + std::to_string(s->tensors.size()));
  values->assign(count, {});
  for (uint32_t i = 0; i < count; ++i) {
    const auto& t = s->tensors[i];
    std::vector<int64_t> want = t.shape;
    want[0] = batch;
    uint32_t len = 0, code = 0, rank = 0;
    if (!r.take(&len, 4) || len > 4096) return fail(ES_ERR_STATE, "a truncated state");
    std::string name(len, '\0');
    if (!r.take(&name[0], len) || !r.take(&code, 4) || !r.take(&rank, 4) || rank > 16) return fail(ES_ERR_STATE, "a truncated state");
    std::vector<int64_t> dims(rank);
    for (auto& d : dims)
      if (!r.take(&d, 8)) return fail(ES_ERR_STATE, "a truncated state");
    if (name != t.name || code != t.dtype.code || dims != want)
      return fail(ES_ERR_STATE, "state tensor " + std::to_string(i) + " is " + name + ", not " + t.name + " of this model's shape and dtype" + (batch != t.shape[0] ? " (a batch-1 state expected)" : ""));
    (*values)[i].resize(s->state()[i].size / static_cast<size_t>(t.shape[0]) * static_cast<size_t>(batch));
    if (!r.take((*values)[i].data(), (*values)[i].size())) return fail(ES_ERR_STATE, "a truncated state");
  }
  if (r.at != n) return fail(ES_ERR_STATE, "trailing bytes after the state");
  return ES_OK;
}
}  // namespace

extern "C" {

int es_state_bytes(const es_stream* s, size_t* bytes) {
  if (!s || !bytes) return fail(ES_ERR_ARG, "es_state_bytes: null argument");
  *bytes = serialize(s).size();
  return ES_OK;
}

int es_save_state(const es_stream* s, unsigned char* buf, size_t cap, size_t* written) {
  if (!s || !buf) return fail(ES_ERR_ARG, "es_save_state: null argument");
  auto b = serialize(s);
  if (b.size() > cap) return fail(ES_ERR_SHAPE, "es_save_state: the buffer holds " + std::to_string(cap) + " bytes; the state needs " + std::to_string(b.size()));
  std::memcpy(buf, b.data(), b.size());
  if (written) *written = b.size();
  return ES_OK;
}

int es_load_state(es_stream* s, const unsigned char* buf, size_t n) {
  if (!s || !buf) return fail(ES_ERR_ARG, "es_load_state: null argument");
  std::vector<std::vector<unsigned char>> values;
  int64_t steps = 0;
  int rc = parse_state(s, buf, n, s->batch, &values, &steps);
  if (rc) return rc;
  for (size_t i = 0; i < values.size(); ++i) store_logical(s->tensors[i], s->state()[i], -1, values[i].data());  // all checked
  s->steps = steps;
  return ES_OK;
}

int es_set_threads(int n) {
  if (n < 1) return fail(ES_ERR_ARG, "es_set_threads: at least 1 thread");
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (!pool) return fail(ES_ERR_RUNTIME, "no thread pool");
  // a resize replaces the pool under every program already open (their XNNPACK runtimes keep the old one): only
  // when the size differs
  if (pool->get_thread_count() == static_cast<size_t>(n)) return ES_OK;
  if (!pool->_unsafe_reset_threadpool(static_cast<uint32_t>(n))) return fail(ES_ERR_RUNTIME, "cannot resize the thread pool");
  return ES_OK;
}

int es_benchmark(es_stream* s, int n, double* execute_us, double* push_us) {
  if (!s || n < 1 || !execute_us || !push_us) return fail(ES_ERR_ARG, "es_benchmark: bad argument");
  using clock = std::chrono::steady_clock;
  std::vector<float> frame(static_cast<size_t>(s->batch) * s->d_in, 0.0f), out(static_cast<size_t>(s->batch) * s->d_out);
  std::vector<int64_t> ids(s->batch, 0);
  auto push = [&]() { return s->vocab ? es_push_tokens(s, ids.data(), out.data(), nullptr) : es_push(s, frame.data(), out.data(), nullptr); };
  for (int i = 0; i < n; ++i)  // warm-up of both
    if (!s->module->execute(s->forward, s->inputs[s->cur]).ok() || push() != ES_OK) return fail(ES_ERR_RUNTIME, "es_benchmark: forward failed");
  // rounds that take turns, so that a neighbour's load slows both alike
  double ex = 0, pu = 0;
  const int rounds = 10, per = n / rounds > 0 ? n / rounds : 1;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = clock::now();
    for (int i = 0; i < per; ++i)
      if (!s->module->execute(s->forward, s->inputs[s->cur]).ok()) return fail(ES_ERR_RUNTIME, "es_benchmark: forward failed");
    auto t1 = clock::now();
    for (int i = 0; i < per; ++i)
      if (push() != ES_OK) return ES_ERR_RUNTIME;
    auto t2 = clock::now();
    ex += std::chrono::duration<double, std::micro>(t1 - t0).count();
    pu += std::chrono::duration<double, std::micro>(t2 - t1).count();
  }
  initial_state(s);
  *execute_us = ex / (rounds * per);
  *push_us = pu / (rounds * per);
  return ES_OK;
}

}  // extern "C"

// ------------------------------------------------------------------------------------------------ pools
struct es_pool {
  std::unique_ptr<es_stream> s;  // the batched program and its state; each slot is one row
  int slots = 0;
  std::vector<char> active;      // per row; rows past `slots` count as taken (never free, never given a frame)
  std::vector<int64_t> steps;    // per row
  std::vector<char> given;       // per row, for the step being made
  std::vector<float> y;          // the batched output
  std::vector<std::vector<unsigned char>> held;  // waiting rows' state, kept across a step
};

namespace {
size_t row_bytes(const es_stream* s, size_t i) { return s->state()[i].size / static_cast<size_t>(s->batch); }

int check_slot(const es_pool* p, int slot, const char* what) {
  if (slot < 0 || slot >= p->slots || !p->active[slot])
    return fail(ES_ERR_ARG, std::string(what) + ": slot " + std::to_string(slot) + " has no stream");
  return ES_OK;
}
}  // namespace

extern "C" {

int es_pool_open(const char* pte_path, int slots, es_pool** out) {
  if (!pte_path || !out) return fail(ES_ERR_ARG, "es_pool_open: null argument");
  *out = nullptr;
  es_stream* raw = nullptr;
  int rc = es_open(pte_path, &raw);
  if (rc) return rc;
  auto p = std::make_unique<es_pool>();
  p->s.reset(raw);
  const int rows = raw->batch;
  if (raw->vocab) return fail(ES_ERR_ARG, std::string(pte_path) + ": a pool of language models (token ids) is not supported; one es_stream per stream");
  if (slots == 0) slots = rows;
  if (slots < 1 || slots > rows)
    return fail(ES_ERR_ARG, std::string(pte_path) + ": a pool of " + std::to_string(slots) + " streams needs a program of batch >= " + std::to_string(slots) + "; this one has batch " + std::to_string(rows) + " (export with --batch 1," + std::to_string(slots) + ")");
  p->slots = slots;
  p->active.assign(rows, 0);
  for (int r = slots; r < rows; ++r) p->active[r] = 1;
  p->steps.assign(rows, 0);
  p->given.assign(rows, 0);
  p->y.resize(static_cast<size_t>(rows) * raw->d_out);
  p->held.resize(raw->tensors.size());
  for (size_t i = 0; i < raw->tensors.size(); ++i) p->held[i].resize(raw->state()[i].size);
  *out = p.release();
  return ES_OK;
}

void es_pool_close(es_pool* p) { delete p; }
int es_pool_slots(const es_pool* p) { return p ? p->slots : 0; }
int es_pool_d_in(const es_pool* p) { return p ? p->s->d_in : 0; }
int es_pool_d_out(const es_pool* p) { return p ? p->s->d_out : 0; }
int es_pool_active(const es_pool* p, int slot) { return p && slot >= 0 && slot < p->slots && p->active[slot]; }
int64_t es_pool_steps(const es_pool* p, int slot) { return es_pool_active(p, slot) ? p->steps[slot] : -1; }

int es_pool_state_bytes(const es_pool* p, size_t* bytes) {
  if (!p || !bytes) return fail(ES_ERR_ARG, "es_pool_state_bytes: null argument");
  *bytes = serialize(p->s.get(), 0, 0).size();
  return ES_OK;
}

int es_pool_join(es_pool* p, const unsigned char* state, size_t n, int* slot) {
  if (!p || !slot) return fail(ES_ERR_ARG, "es_pool_join: null argument");
  es_stream* s = p->s.get();
  int free = -1;
  for (int r = 0; r < p->slots && free < 0; ++r)
    if (!p->active[r]) free = r;
  if (free < 0) return fail(ES_ERR_ARG, "es_pool_join: all " + std::to_string(p->slots) + " slots are taken; a stream must leave first");
  int64_t steps = 0;
  if (state) {
    std::vector<std::vector<unsigned char>> values;
    int rc = parse_state(s, state, n, 1, &values, &steps);
    if (rc) return rc;
    for (size_t i = 0; i < values.size(); ++i) store_logical(s->tensors[i], s->state()[i], free, values[i].data());
  } else {
    for (size_t i = 0; i < s->tensors.size(); ++i) {
      const auto& t = s->tensors[i];
      fill_value(s->state()[i].data() + row_bytes(s, i) * free, t.numel() / static_cast<size_t>(s->batch), t.dtype, t.fill);
    }
  }
  p->active[free] = 1;
  p->steps[free] = steps;
  *slot = free;
  return ES_OK;
}

int es_pool_leave(es_pool* p, int slot, unsigned char* buf, size_t cap, size_t* written) {
  if (!p) return fail(ES_ERR_ARG, "es_pool_leave: null argument");
  int rc = check_slot(p, slot, "es_pool_leave");
  if (rc) return rc;
  if (buf) {
    auto b = serialize(p->s.get(), slot, p->steps[slot]);
    if (b.size() > cap) return fail(ES_ERR_SHAPE, "es_pool_leave: the buffer holds " + std::to_string(cap) + " bytes; the state needs " + std::to_string(b.size()));
    std::memcpy(buf, b.data(), b.size());
    if (written) *written = b.size();
  }
  p->active[slot] = 0;
  return ES_OK;
}

int es_pool_step(es_pool* p, int n, const int* slots, const float* frames, float* out, int* ready) {
  if (!p || !slots || !frames || !out) return fail(ES_ERR_ARG, "es_pool_step: null argument");
  es_stream* s = p->s.get();
  const int rows = s->batch, d_in = s->d_in, d_out = s->d_out;
  if (n < 1 || n > p->slots) return fail(ES_ERR_ARG, "es_pool_step: " + std::to_string(n) + " frames for a pool of " + std::to_string(p->slots) + " slots");
  std::fill(p->given.begin(), p->given.end(), 0);
  for (int k = 0; k < n; ++k) {
    int rc = check_slot(p, slots[k], "es_pool_step");
    if (rc) return rc;
    if (p->given[slots[k]]) return fail(ES_ERR_ARG, "es_pool_step: slot " + std::to_string(slots[k]) + " is given two frames");
    p->given[slots[k]] = 1;
    const float* f = frames + static_cast<size_t>(k) * d_in;
    for (int j = 0; j < d_in; ++j)
      if (!std::isfinite(f[j]))
        return fail(ES_ERR_VALUE, "slot " + std::to_string(slots[k]) + "'s frame at its step " + std::to_string(p->steps[slots[k]]) + " has " + (std::isnan(f[j]) ? "NaN" : "Inf") + " at feature " + std::to_string(j));
  }
  float* x = reinterpret_cast<float*>(s->frame.data());
  const bool partial = n != rows;
  if (partial) std::memset(x, 0, sizeof(float) * static_cast<size_t>(rows) * d_in);
  for (int k = 0; k < n; ++k) std::memcpy(x + static_cast<size_t>(slots[k]) * d_in, frames + static_cast<size_t>(k) * d_in, sizeof(float) * d_in);
  // the streams that wait keep their state: their rows are held across the call and put back (free rows are not:
  // a stream joining one starts from its own state)
  std::vector<int> waiting;
  if (partial)
    for (int r = 0; r < p->slots; ++r)
      if (p->active[r] && !p->given[r]) waiting.push_back(r);
  for (size_t i = 0; i < s->tensors.size(); ++i)
    for (int r : waiting) std::memcpy(p->held[i].data() + row_bytes(s, i) * r, s->state()[i].data() + row_bytes(s, i) * r, row_bytes(s, i));
  s->check_rows = p->given.data();  // only the rows given frames: a waiting row's throwaway step, or a free row, is not
  int rc = run_step(s, p->y.data(), nullptr);  // this step's to refuse (their results are put back or never read)
  s->check_rows = nullptr;
  if (rc) return rc;
  for (size_t i = 0; i < s->tensors.size(); ++i)
    for (int r : waiting) std::memcpy(s->state()[i].data() + row_bytes(s, i) * r, p->held[i].data() + row_bytes(s, i) * r, row_bytes(s, i));
  for (int k = 0; k < n; ++k) {
    const int r = slots[k];
    std::memcpy(out + static_cast<size_t>(k) * d_out, p->y.data() + static_cast<size_t>(r) * d_out, sizeof(float) * d_out);
    if (ready) ready[k] = p->steps[r] >= s->delay && (p->steps[r] - s->delay) % s->stride == 0;
    p->steps[r] += 1;
  }
  return ES_OK;
}

int es_pool_benchmark(es_pool* p, int n, double* step_us) {
  if (!p || n < 1 || !step_us) return fail(ES_ERR_ARG, "es_pool_benchmark: bad argument");
  es_stream* s = p->s.get();
  std::vector<int> slots;
  for (int r = 0; r < p->slots; ++r)
    if (p->active[r]) slots.push_back(r);
  if (slots.empty()) return fail(ES_ERR_ARG, "es_pool_benchmark: no stream has joined the pool");
  std::vector<std::vector<unsigned char>> saved;
  for (size_t i = 0; i < s->tensors.size(); ++i) saved.emplace_back(s->state()[i].data(), s->state()[i].data() + s->state()[i].size);
  const auto steps = p->steps;
  std::vector<float> frames(slots.size() * static_cast<size_t>(s->d_in), 0.0f), out(slots.size() * static_cast<size_t>(s->d_out));
  const int k = static_cast<int>(slots.size());
  for (int i = 0; i < n; ++i)
    if (es_pool_step(p, k, slots.data(), frames.data(), out.data(), nullptr) != ES_OK) return ES_ERR_RUNTIME;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i)
    if (es_pool_step(p, k, slots.data(), frames.data(), out.data(), nullptr) != ES_OK) return ES_ERR_RUNTIME;
  *step_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / n;
  for (size_t i = 0; i < s->tensors.size(); ++i) std::memcpy(s->state()[i].data(), saved[i].data(), saved[i].size());
  p->steps = steps;
  return ES_OK;
}

}  // extern "C"
