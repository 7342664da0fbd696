// edgeseq's own ExecuTorch operators: the kernels a program exported with custom_ops=True calls (docs/custom-ops.md).
// Their schemas and torch reference implementations are in edgeseq/ops.py; this library registers the out
// variants with the ExecuTorch runtime when it is loaded (a static initializer). libedgeseq_runtime.so links it;
// edgeseq's Python executorch runtime loads it (runtimes/kernels.py); an app of your own links it or compiles
// this file in.
//
// edgeseq::ssm_update.out(Tensor s, Tensor dt, Tensor x, Tensor A, Tensor B, Tensor C, Tensor D, *,
//                         Tensor(a!) s_out, Tensor(b!) y_out) -> (Tensor(a!), Tensor(b!))
//   One selective-scan step of Mamba-1, per stream b, channel e, state index n:
//     s_out[b,e,n] = exp(dt[b,e] A[e,n]) s[b,e,n] + dt[b,e] x[b,e] B[b,n]
//     y_out[b,e]   = sum_n s_out[b,e,n] C[b,n] + D[e] x[b,e]
//   s, s_out (batch, E, N); dt, x, y_out (batch, E); A (E, N), A <= 0 and dt >= 0 (decay factors in (0, 1]);
//   B, C (batch, N); D (E,); float32, contiguous. XNNPACK runs the same step as six elementwise passes over (E, N)
//   and a batched matmul; here it is one pass, with the decay's exp computed in registers.
//
// edgeseq::ssm2_update.out(same arguments) -> (Tensor(a!), Tensor(b!))
//   One step of Mamba-2 (SSD), per stream b, head h (of group g = h / (H / G)), head channel p, state index n:
//     s_out[b,h,p,n] = exp(dt[b,h] A[h]) s[b,h,p,n] + dt[b,h] x[b,hP+p] B[b,gN+n]
//     y_out[b,hP+p]  = sum_n s_out[b,h,p,n] C[b,gN+n] + D[hP+p] x[b,hP+p]
//   s, s_out (batch, H, P, N); dt (batch, H); x, y_out (batch, H P); A (H,) <= 0; B, C (batch, G N); D (H P,).
//   XNNPACK: three elementwise passes over the state and a batched matmul; here one pass.
//
// exp(v), v <= 0: 2^k p(r), k = round(v / ln 2), r = v - k ln 2 (ln 2 in two parts), p(r) = 1 + r + r^2 q(r) with q
// of degree 5 (Cephes' expf coefficients, used as published figures), about 1 ulp; below -87 the factor is
// clamped to exp(-87) (1.6e-38, where exp itself is within 1.6e-38 of it); NaN stays NaN. v > 0 is outside the op's
// domain (the converter writes A = -exp(A_log) < 0 and dt = softplus(..) >= 0): it is clamped at exp(88) rather
// than overflow the exponent bits. The same arithmetic at every width.

#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ES_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define ES_NEON 1
#endif

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::Kernel;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
constexpr float kFloor = -87.0f, kCeil = 88.0f;  // NaN passes both clamps (and comes out NaN)
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f, kP3 = 4.1665795894e-2f,
                kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

struct Rows {  // one stream's operands
  int64_t E, N;
  const float *s, *dt, *x, *A, *B, *C, *D;
  float *s_out, *y;
};

inline float exp_neg(float v) {
  v = v < kFloor ? kFloor : v;
  v = v > kCeil ? kCeil : v;
  const float t = v * kLog2e + kMagic;
  const float k = t - kMagic;
  const float r = (v - k * kLn2Hi) - k * kLn2Lo;
  float p = kP0;
  p = p * r + kP1;
  p = p * r + kP2;
  p = p * r + kP3;
  p = p * r + kP4;
  p = p * r + kP5;
  p = p * r * r + (r + 1.0f);
  int32_t bits;
  std::memcpy(&bits, &t, 4);
  bits = (bits - 0x4B400000 + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// state indices [from, N) of row e, one at a time; returns their part of the readout
inline float row_tail(const Rows& o, int64_t e, int64_t from) {
  const float d = o.dt[e], u = d * o.x[e];
  const float *a = o.A + e * o.N, *si = o.s + e * o.N;
  float* so = o.s_out + e * o.N;
  float acc = 0.0f;
  for (int64_t n = from; n < o.N; ++n) {
    const float v = exp_neg(d * a[n]) * si[n] + u * o.B[n];
    so[n] = v;
    acc += v * o.C[n];
  }
  return acc;
}

[[maybe_unused]] void rows_scalar(const Rows& o) {
  for (int64_t e = 0; e < o.E; ++e) o.y[e] = row_tail(o, e, 0) + o.D[e] * o.x[e];
}

struct Heads {  // one stream's operands of ssm2_update
  int64_t H, P, N, G;
  const float *s, *dt, *x, *A, *B, *C, *D;
  float *s_out, *y;
};

// one (head, channel) row of N state entries from index `from`, decay and u given; its part of the readout
inline float row2_tail(const float* si, float* so, const float* Bg, const float* Cg, float decay, float u, int64_t from,
                       int64_t N) {
  float acc = 0.0f;
  for (int64_t n = from; n < N; ++n) {
    const float v = decay * si[n] + u * Bg[n];
    so[n] = v;
    acc += v * Cg[n];
  }
  return acc;
}

// calls row(si, so, Bg, Cg, decay, u) -> readout for every (head, channel) row, then writes y
template <class Row>
inline void for_heads(const Heads& o, Row row) {
  const int64_t per_group = o.H / o.G;
  for (int64_t h = 0; h < o.H; ++h) {
    const float d = o.dt[h], decay = exp_neg(d * o.A[h]);
    const float *Bg = o.B + (h / per_group) * o.N, *Cg = o.C + (h / per_group) * o.N;
    for (int64_t p = 0; p < o.P; ++p) {
      const int64_t r = h * o.P + p;
      o.y[r] = row(o.s + r * o.N, o.s_out + r * o.N, Bg, Cg, decay, d * o.x[r]) + o.D[r] * o.x[r];
    }
  }
}

[[maybe_unused]] void heads_scalar(const Heads& o) {
  for_heads(o, [&](const float* si, float* so, const float* Bg, const float* Cg, float decay, float u) {
    return row2_tail(si, so, Bg, Cg, decay, u, 0, o.N);
  });
}

#if ES_X86
#define ES_AVX2 __attribute__((target("avx2,fma")))

ES_AVX2 inline __m256 exp_neg8(__m256 v) {
  v = _mm256_min_ps(_mm256_set1_ps(kCeil), _mm256_max_ps(_mm256_set1_ps(kFloor), v));  // NaN: the 2nd operand
  const __m256 t = _mm256_fmadd_ps(v, _mm256_set1_ps(kLog2e), _mm256_set1_ps(kMagic));
  const __m256 k = _mm256_sub_ps(t, _mm256_set1_ps(kMagic));
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Hi), v);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000)), _mm256_set1_epi32(127)),
      23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

ES_AVX2 inline float hsum8(__m256 acc) {  // the sum of the 8 lanes
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

ES_AVX2 void rows_avx2(const Rows& o) {
  const int64_t N8 = o.N - o.N % 8;
  for (int64_t e = 0; e < o.E; ++e) {
    const __m256 d = _mm256_set1_ps(o.dt[e]), u = _mm256_set1_ps(o.dt[e] * o.x[e]);
    const float *a = o.A + e * o.N, *si = o.s + e * o.N;
    float* so = o.s_out + e * o.N;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t n = 0; n < N8; n += 8) {
      const __m256 v = _mm256_fmadd_ps(exp_neg8(_mm256_mul_ps(d, _mm256_loadu_ps(a + n))), _mm256_loadu_ps(si + n),
                                       _mm256_mul_ps(u, _mm256_loadu_ps(o.B + n)));
      _mm256_storeu_ps(so + n, v);
      acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(o.C + n), acc);
    }
    o.y[e] = (hsum8(acc) + row_tail(o, e, N8)) + o.D[e] * o.x[e];
  }
}

ES_AVX2 void heads_avx2(const Heads& o) {
  const int64_t N8 = o.N - o.N % 8;
  for_heads(o, [&](const float* si, float* so, const float* Bg, const float* Cg, float decay, float u)
                   __attribute__((target("avx2,fma"))) {
    const __m256 dv = _mm256_set1_ps(decay), uv = _mm256_set1_ps(u);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t n = 0; n < N8; n += 8) {
      const __m256 v = _mm256_fmadd_ps(dv, _mm256_loadu_ps(si + n), _mm256_mul_ps(uv, _mm256_loadu_ps(Bg + n)));
      _mm256_storeu_ps(so + n, v);
      acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(Cg + n), acc);
    }
    return hsum8(acc) + row2_tail(si, so, Bg, Cg, decay, u, N8, o.N);
  });
}

bool has_avx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
}

void rows_best(const Rows& o) {
  if (has_avx2()) {
    rows_avx2(o);
  } else {
    rows_scalar(o);
  }
}

void heads_best(const Heads& o) {
  if (has_avx2()) {
    heads_avx2(o);
  } else {
    heads_scalar(o);
  }
}
#elif ES_NEON
inline float32x4_t exp_neg4(float32x4_t v) {
  v = vminq_f32(vmaxq_f32(v, vdupq_n_f32(kFloor)), vdupq_n_f32(kCeil));  // NaN propagates
  const float32x4_t t = vfmaq_f32(vdupq_n_f32(kMagic), v, vdupq_n_f32(kLog2e));
  const float32x4_t k = vsubq_f32(t, vdupq_n_f32(kMagic));
  float32x4_t r = vfmsq_f32(v, k, vdupq_n_f32(kLn2Hi));
  r = vfmsq_f32(r, k, vdupq_n_f32(kLn2Lo));
  float32x4_t p = vdupq_n_f32(kP0);
  p = vfmaq_f32(vdupq_n_f32(kP1), p, r);
  p = vfmaq_f32(vdupq_n_f32(kP2), p, r);
  p = vfmaq_f32(vdupq_n_f32(kP3), p, r);
  p = vfmaq_f32(vdupq_n_f32(kP4), p, r);
  p = vfmaq_f32(vdupq_n_f32(kP5), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), vmulq_f32(p, r), r);
  const int32x4_t bits = vshlq_n_s32(vaddq_s32(vsubq_s32(vreinterpretq_s32_f32(t), vdupq_n_s32(0x4B400000)),
                                               vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(bits));
}

void rows_best(const Rows& o) {
  const int64_t N4 = o.N - o.N % 4;
  for (int64_t e = 0; e < o.E; ++e) {
    const float32x4_t d = vdupq_n_f32(o.dt[e]), u = vdupq_n_f32(o.dt[e] * o.x[e]);
    const float *a = o.A + e * o.N, *si = o.s + e * o.N;
    float* so = o.s_out + e * o.N;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t n = 0; n < N4; n += 4) {
      const float32x4_t v = vfmaq_f32(vmulq_f32(u, vld1q_f32(o.B + n)), exp_neg4(vmulq_f32(d, vld1q_f32(a + n))),
                                      vld1q_f32(si + n));
      vst1q_f32(so + n, v);
      acc = vfmaq_f32(acc, v, vld1q_f32(o.C + n));
    }
    o.y[e] = (vaddvq_f32(acc) + row_tail(o, e, N4)) + o.D[e] * o.x[e];
  }
}

void heads_best(const Heads& o) {
  const int64_t N4 = o.N - o.N % 4;
  for_heads(o, [&](const float* si, float* so, const float* Bg, const float* Cg, float decay, float u) {
    const float32x4_t dv = vdupq_n_f32(decay), uv = vdupq_n_f32(u);
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t n = 0; n < N4; n += 4) {
      const float32x4_t v = vfmaq_f32(vmulq_f32(uv, vld1q_f32(Bg + n)), dv, vld1q_f32(si + n));
      vst1q_f32(so + n, v);
      acc = vfmaq_f32(acc, v, vld1q_f32(Cg + n));
    }
    return vaddvq_f32(acc) + row2_tail(si, so, Bg, Cg, decay, u, N4, o.N);
  });
}
#else
void rows_best(const Rows& o) { rows_scalar(o); }
void heads_best(const Heads& o) { heads_scalar(o); }
#endif

// A tensor of float32 with these sizes, in the default (contiguous) dim order.
bool is_f32(const Tensor& t, std::initializer_list<int64_t> sizes) {
  if (t.scalar_type() != ScalarType::Float || t.dim() != static_cast<ssize_t>(sizes.size())) return false;
  ssize_t i = 0;
  for (int64_t want : sizes) {
    if (t.size(i) != want || t.dim_order()[i] != i) return false;
    ++i;
  }
  return true;
}

// The nine tensors of an update's stack (the 7 inputs, the 2 outs; a returned tuple may follow), else false with
// the call failed.
bool tensors(KernelRuntimeContext& ctx, Span<EValue*> stack, const char* op, const Tensor* (&t)[9]) {
  if (stack.size() < 9) {
    ET_LOG(Error, "%s: %zu arguments, expected 9", op, stack.size());
    ctx.fail(Error::InvalidArgument);
    return false;
  }
  for (size_t i = 0; i < 9; ++i) {
    if (!stack[i]->isTensor()) {
      ET_LOG(Error, "%s: argument %zu is not a tensor", op, i);
      ctx.fail(Error::InvalidArgument);
      return false;
    }
    t[i] = &stack[i]->toTensor();
  }
  return true;
}

bool refuse(KernelRuntimeContext& ctx, const char* op, const char* expected) {
  ET_LOG(Error, "%s: expected float32 contiguous %s", op, expected);
  ctx.fail(Error::InvalidArgument);
  return false;
}

void ssm_update_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  static const char* op = "edgeseq::ssm_update.out";
  static const char* shapes = "s (b, E, N), dt/x (b, E), A (E, N), B/C (b, N), D (E), s_out like s, y_out like x";
  const Tensor* t[9];
  if (!tensors(ctx, stack, op, t)) return;
  const Tensor &s = *t[0], &dt = *t[1], &x = *t[2], &A = *t[3], &B = *t[4], &C = *t[5], &D = *t[6];
  if (s.dim() != 3) {
    refuse(ctx, op, shapes);
    return;
  }
  const int64_t batch = s.size(0), E = s.size(1), N = s.size(2);
  if (!(is_f32(s, {batch, E, N}) && is_f32(dt, {batch, E}) && is_f32(x, {batch, E}) && is_f32(A, {E, N}) &&
        is_f32(B, {batch, N}) && is_f32(C, {batch, N}) && is_f32(D, {E}) && is_f32(*t[7], {batch, E, N}) &&
        is_f32(*t[8], {batch, E}))) {
    refuse(ctx, op, shapes);
    return;
  }
  float *s_out = const_cast<Tensor*>(t[7])->mutable_data_ptr<float>(), *y = const_cast<Tensor*>(t[8])->mutable_data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    rows_best(Rows{E, N, s.const_data_ptr<float>() + b * E * N, dt.const_data_ptr<float>() + b * E,
                   x.const_data_ptr<float>() + b * E, A.const_data_ptr<float>(), B.const_data_ptr<float>() + b * N,
                   C.const_data_ptr<float>() + b * N, D.const_data_ptr<float>(), s_out + b * E * N, y + b * E});
  }
}

void ssm2_update_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  static const char* op = "edgeseq::ssm2_update.out";
  static const char* shapes =
      "s (b, H, P, N), dt (b, H), x (b, H P), A (H), B/C (b, G N) with G dividing H, D (H P), s_out like s, y_out like x";
  const Tensor* t[9];
  if (!tensors(ctx, stack, op, t)) return;
  const Tensor &s = *t[0], &dt = *t[1], &x = *t[2], &A = *t[3], &B = *t[4], &C = *t[5], &D = *t[6];
  if (s.dim() != 4 || B.dim() != 2 || s.size(3) < 1 || s.size(1) < 1) {
    refuse(ctx, op, shapes);
    return;
  }
  const int64_t batch = s.size(0), H = s.size(1), P = s.size(2), N = s.size(3), G = B.size(1) / N;
  if (!(B.size(1) % N == 0 && G >= 1 && H % G == 0 && is_f32(s, {batch, H, P, N}) && is_f32(dt, {batch, H}) &&
        is_f32(x, {batch, H * P}) && is_f32(A, {H}) && is_f32(B, {batch, G * N}) && is_f32(C, {batch, G * N}) &&
        is_f32(D, {H * P}) && is_f32(*t[7], {batch, H, P, N}) && is_f32(*t[8], {batch, H * P}))) {
    refuse(ctx, op, shapes);
    return;
  }
  float *s_out = const_cast<Tensor*>(t[7])->mutable_data_ptr<float>(), *y = const_cast<Tensor*>(t[8])->mutable_data_ptr<float>();
  const int64_t S = H * P * N, E = H * P;
  for (int64_t b = 0; b < batch; ++b) {
    heads_best(Heads{H, P, N, G, s.const_data_ptr<float>() + b * S, dt.const_data_ptr<float>() + b * H,
                     x.const_data_ptr<float>() + b * E, A.const_data_ptr<float>(), B.const_data_ptr<float>() + b * G * N,
                     C.const_data_ptr<float>() + b * G * N, D.const_data_ptr<float>(), s_out + b * S, y + b * E});
  }
}

const Kernel kKernels[] = {Kernel("edgeseq::ssm_update.out", ssm_update_out),
                           Kernel("edgeseq::ssm2_update.out", ssm2_update_out)};

struct Registration {
  // a second registration (the library loaded again under another name) is refused by the registry: kept as is
  Registration() { (void)executorch::runtime::register_kernels({kKernels, sizeof(kKernels) / sizeof(kKernels[0])}); }
} registration;

}  // namespace

// For runtimes/kernels.py: the operators this library registers, one per line.
extern "C" const char* edgeseq_kernels_ops() { return "edgeseq::ssm_update.out\nedgeseq::ssm2_update.out\n"; }
