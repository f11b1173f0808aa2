// CPU kernels of Restormer's gated depth-wise feed-forward (GDFN):
//
//   u = W_in · x + b_in          1×1 convolution, C → 2h channels
//   d = k ⊛ u + b_dw             depth-wise K×K convolution on the 2h channels (zero "same" padding)
//   y = gelu(d_a) · d_g          d_a = d[:, :h], d_g = d[:, h:], gelu exact: a · Φ(a)
//   z = W_out · y + b_out        1×1 convolution, h → C_out channels
//
// Three entry points:
//
// * gated_ffn_forward_cpu: inference of the whole block in bands of rows. Unfused, u and d are 2h-channel
//   maps (Restormer: 5.3× x's size each) written to memory and read back, and torch's NCHW depth-wise
//   convolution is slow on CPU. Here bands::run walks the image in bands of rows: one GEMM computes u for
//   the band plus K/2 halo rows either side into a per-thread buffer (the halo rows below a band are
//   kept and reused as the halo above the next one), the depth-wise convolution and the gate run per
//   channel pair in two scratch planes, y overwrites the band's rows of u_a in place, and one GEMM writes z.
// * gated_depthwise_forward_cpu / gated_depthwise_backward_cpu: the middle, y = gelu(d_a) · d_g from u,
//   for training (the 1×1 convolutions stay torch's). The backward recomputes d from u instead of saving
//   it (u is saved anyway: one extra convolution instead of a 2h-channel map held until the backward):
//
//     da = dy · d_g · gelu'(d_a),   dg = dy · gelu(d_a),   gelu'(a) = Φ(a) + a · φ(a)
//     du = k̃ ⊛ [da, dg]  (taps rotated 180°),   dk = Σ_bhw [da, dg] · shift(u),   db = Σ_bhw [da, dg]
//
//   One task per channel pair walks the batch in order, so dk and db (float64 accumulators) are reduced in
//   a fixed order: results do not depend on the thread count.
//
// Φ in float32: Φ(a) = 1 − ½·e^{−x²}·Q(x) for a ≥ 0 and ½·e^{−x²}·Q(x) for a < 0, x = |a|/√2, where
// Q = e^{x²}·erfc(x) is a degree-10 polynomial in s = 2t − 1, t = 1/(1 + x/2) (a least-squares fit of Q/t,
// relative error 1e-8 in exact arithmetic, 3e-7 evaluated in float32), and e^{−x²} a Cody–Waite reduced
// polynomial fed x² = a²/2 without rounding. gelu(a) = a·Φ(a) comes out within 6e-7 relative for |a| ≤ 4
// and 5e-6 down to a = −12 (torch's float32 F.gelu: 6e-3 for |a| ≤ 4). Everything is branch-free so the
// loops vectorise (std::erf does not); φ reuses the same exponential. float64 uses std::erfc and std::exp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "../ddsa.h"
#include "bands.h"
#include "blas.h"
#include "depthwise_planes.h"

namespace ddsa {
namespace cpu {
namespace gdfn {
namespace {

// The selects below are branch-free, so the loops vectorise, only without -ftrapping-math; GCC does not
// carry a caller's optimize attribute into always-inlined callees, so every helper carries it.
#define DDSA_GDFN_LOOP __attribute__((optimize("no-trapping-math")))
#define DDSA_GDFN_INLINE __attribute__((always_inline, optimize("no-trapping-math"))) inline

// e^{−(hi + lo)} for hi ≥ 0, |lo| ≪ 1 (0 past 87, where float32 would go subnormal): lo joins the reduced
// argument, so hi + lo need not be representable.
DDSA_GDFN_INLINE float exp_negative(float hi, float lo) {
  const float v = hi > 87.0f ? -87.0f : -hi;
  const float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(v / ln 2), 1.5·2²³ trick
  float f = v - n * 0.693145751953125f;                                    // ln 2 high part (15 bits: n·hi exact)
  f = f - n * 1.42860682030941723212e-6f - lo;                             // ln 2 low part
  // e^f for |f| ≤ ln2 / 2 + |lo|: Taylor to degree 7, truncation error < 2e-8 relative
  float p = 1.0f / 5040.0f;
  p = p * f + 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f;
  p = p * f + 1.0f / 24.0f;
  p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  const float r = p * __builtin_bit_cast(float, bits);
  return hi > 87.0f ? 0.0f : r;
}

// Φ(a) (cdf) and φ(a) (pdf) of the standard normal.
DDSA_GDFN_INLINE void normal_cdf_pdf(float a, float& cdf, float& pdf) {
  const float m = a < 0.0f ? -a : a;
  const float x = m * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.5f * x);
  const float s = 2.0f * t - 1.0f;
  // Q / t as a polynomial in s, highest degree first
  float q = 4.21969271e-05f;
  q = q * s + -3.66363383e-05f;
  q = q * s + -2.99476553e-04f;
  q = q * s + 4.30746499e-04f;
  q = q * s + 1.52924482e-03f;
  q = q * s + -3.24350758e-03f;
  q = q * s + -1.07516600e-02f;
  q = q * s + 1.82216838e-02f;
  q = q * s + 1.39735743e-01f;
  q = q * s + 3.43580306e-01f;
  q = q * s + 5.10791361e-01f;
  // x² = a²/2 without rounding a/√2 or the square (each would cost e^{−x²} ~x² ulps): Veltkamp-split
  // m = mh + ml with mh of 12 bits, so mh² is exact; |a| is capped where e^{−a²/2} is 0 anyway.
  const float mc = m < 14.0f ? m : 14.0f;
  const float split = 4097.0f * mc;
  const float mh = split - (split - mc), ml = mc - mh;
  const float e = exp_negative(0.5f * (mh * mh), (mh * ml + 0.5f * (ml * ml)));
  const float tail = 0.5f * e * (q * t);
  cdf = a < 0.0f ? tail : 1.0f - tail;
  pdf = e * 0.39894228040143268f;
}

DDSA_GDFN_INLINE void normal_cdf_pdf(double a, double& cdf, double& pdf) {
  cdf = 0.5 * std::erfc(-a * 0.70710678118654752440);
  pdf = std::exp(-0.5 * a * a) * 0.39894228040143267794;
}

// y = gelu(a) · g over n elements (y may be g).
template <typename T>
DDSA_GDFN_INLINE void gate(const T* a, const T* g, T* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = a[i];
    T cdf, pdf;
    normal_cdf_pdf(v, cdf, pdf);
    y[i] = v * cdf * g[i];
  }
}

// In place: a ← dy · g · gelu'(a), g ← dy · gelu(a).
template <typename T>
DDSA_GDFN_INLINE void gate_grad(T* a, T* g, const T* dy, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = a[i], d = dy[i];
    T cdf, pdf;
    normal_cdf_pdf(v, cdf, pdf);
    a[i] = d * g[i] * (cdf + v * pdf);
    g[i] = d * v * cdf;
  }
}

template <typename T>
using GateFn = void (*)(const T*, const T*, T*, int64_t);
template <typename T>
using GateGradFn = void (*)(T*, T*, const T*, int64_t);

template <typename T>
DDSA_GDFN_LOOP void gate_base(const T* a, const T* g, T* y, int64_t n) {
  gate<T>(a, g, y, n);
}
template <typename T>
DDSA_GDFN_LOOP void gate_grad_base(T* a, T* g, const T* dy, int64_t n) {
  gate_grad<T>(a, g, dy, n);
}

#if defined(DDSA_DW_AVX2)
// float32 at AVX2 + FMA width when the CPU has it (the package is built for the x86-64 baseline).
template <typename T>
__attribute__((target("avx2,fma"))) DDSA_GDFN_LOOP void gate_avx2(const T* a, const T* g, T* y, int64_t n) {
  gate<T>(a, g, y, n);
}
template <typename T>
__attribute__((target("avx2,fma"))) DDSA_GDFN_LOOP void gate_grad_avx2(T* a, T* g, const T* dy, int64_t n) {
  gate_grad<T>(a, g, dy, n);
}
#endif

template <typename T>
GateFn<T> gate_kernel() {
#if defined(DDSA_DW_AVX2)
  if (std::is_same_v<T, float> && dw::cpu_has_avx2_fma()) return gate_avx2<T>;
#endif
  return gate_base<T>;
}

template <typename T>
GateGradFn<T> gate_grad_kernel() {
#if defined(DDSA_DW_AVX2)
  if (std::is_same_v<T, float> && dw::cpu_has_avx2_fma()) return gate_grad_avx2<T>;
#endif
  return gate_grad_base<T>;
}

// w_dw (2h, 1, K, K) with odd K, matching u's 2h channels.
void check_depthwise(const at::Tensor& w_dw, int64_t channels) {
  TORCH_CHECK(w_dw.dim() == 4 && w_dw.size(1) == 1 && w_dw.size(2) == w_dw.size(3) && w_dw.size(2) % 2 == 1 &&
                  w_dw.size(2) <= 7 && w_dw.size(0) == channels && channels % 2 == 0 && channels > 0,
              "ddsa gated_ffn: w_dw must have shape (2h, 1, K, K) with K odd ≤ 7 and 2h = ", channels,
              " (an even number of channels), got ", w_dw.sizes());
}

// The arguments shared by gated_depthwise's forward and backward: u (B, 2h, H, W) of a float dtype, and w_dw, b_dw.
void check_gated_depthwise(const at::Tensor& u, const at::Tensor& w_dw, const std::optional<at::Tensor>& b_dw) {
  TORCH_CHECK(u.dim() == 4, "ddsa gated_depthwise: u must have shape (B, 2h, H, W), got ", u.sizes());
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "ddsa gated_depthwise cpu backend: unsupported dtype ",
              dtype, " (expected float32 or float64)");
  check_depthwise(w_dw, u.size(1));
  detail::check_cpu_operand(u, "gated_ffn", "u", dtype);
  detail::check_cpu_operand(w_dw, "gated_ffn", "w_dw", dtype);
  detail::check_cpu_operand(b_dw, "gated_ffn", "b_dw", dtype, u.size(1));
}

}  // namespace
}  // namespace gdfn
}  // namespace cpu

at::Tensor gated_ffn_forward_cpu(const at::Tensor& x_in, const at::Tensor& w_in, const std::optional<at::Tensor>& b_in,
                                 const at::Tensor& w_dw, const std::optional<at::Tensor>& b_dw, const at::Tensor& w_out,
                                 const std::optional<at::Tensor>& b_out, int64_t band) {
  namespace g = cpu::gdfn;
  TORCH_CHECK(x_in.dim() == 4, "ddsa gated_ffn: x must have shape (B, C, H, W), got ", x_in.sizes());
  const int64_t C = x_in.size(1), W = x_in.size(3);
  TORCH_CHECK(w_in.dim() == 4 && w_in.size(1) == C && w_in.size(2) == 1 && w_in.size(3) == 1,
              "ddsa gated_ffn: w_in must have shape (2h, ", C, ", 1, 1), got ", w_in.sizes());
  const int64_t h2 = w_in.size(0), h = h2 / 2;
  g::check_depthwise(w_dw, h2);
  TORCH_CHECK(w_out.dim() == 4 && w_out.size(1) == h && w_out.size(2) == 1 && w_out.size(3) == 1,
              "ddsa gated_ffn: w_out must have shape (C_out, ", h, ", 1, 1), got ", w_out.sizes());
  cpu::bands::check_operands("gated_ffn", x_in, w_in, b_in, w_out, b_out, band);
  const auto dtype = x_in.scalar_type();
  detail::check_cpu_operand(w_dw, "gated_ffn", "w_dw", dtype);
  detail::check_cpu_operand(b_dw, "gated_ffn", "b_dw", dtype, h2);
  const int64_t K = w_dw.size(2), R = K / 2;

  const cpu::bands::Operands io(x_in, w_in, b_in, w_out, b_out);
  const at::Tensor taps = w_dw.reshape({h2, K * K}).contiguous();
  const at::Tensor bd_t = cpu::contiguous_or_none(b_dw);
  if (io.z.numel() == 0) return io.z;

  AT_DISPATCH_FLOATING_TYPES(dtype, "ddsa_gated_ffn_forward_cpu", [&] {
    using T = scalar_t;
    const T* tp = taps.data_ptr<T>();
    const T* bdp = cpu::data_or_null<T>(bd_t);
    const cpu::dw::PlaneFn<T> conv = cpu::dw::plane_kernel<T>(K);
    const g::GateFn<T> gate = g::gate_kernel<T>();
    const std::vector<T> zeros(W, T(0));
    cpu::bands::run(io.block<T>(), band, R, [&](int64_t ps) {
      return [&, sa = std::unique_ptr<T[]>(new T[ps]), sg = std::unique_ptr<T[]>(new T[ps])](
                 T* u, const cpu::bands::Band& bd) {
        // The convolution pads the buffer's first and last rows with zeros, which is wrong where they are
        // not the image's edge, but only for the halo rows, which are not written out.
        const int64_t E = bd.rb - bd.ra, out0 = (bd.r0 - bd.ra) * W, len = (bd.r1 - bd.r0) * W;
        for (int64_t c = 0; c < h; ++c) {
          T* ua = u + c * bd.ps;
          const T* ug = u + (c + h) * bd.ps;
          conv(ua, sa.get(), tp + c * K * K, bdp ? bdp[c] : T(0), E, W, zeros.data());
          conv(ug, sg.get(), tp + (c + h) * K * K, bdp ? bdp[c + h] : T(0), E, W, zeros.data());
          gate(sa.get() + out0, sg.get() + out0, ua + out0, len);  // y overwrites the band's rows of u_a
        }
        return cpu::bands::MidRows<T>{u + out0, bd.ps};
      };
    });
  });
  return io.z;
}

at::Tensor gated_depthwise_forward_cpu(const at::Tensor& u_in, const at::Tensor& w_dw,
                                       const std::optional<at::Tensor>& b_dw) {
  namespace g = cpu::gdfn;
  g::check_gated_depthwise(u_in, w_dw, b_dw);
  const auto dtype = u_in.scalar_type();
  const int64_t B = u_in.size(0), h2 = u_in.size(1), h = h2 / 2, H = u_in.size(2), W = u_in.size(3), K = w_dw.size(2);
  const at::Tensor u = cpu::dw::planes_ok(u_in);
  const at::Tensor taps = w_dw.reshape({h2, K * K}).contiguous();
  const at::Tensor bd = b_dw.has_value() ? b_dw->contiguous() : at::Tensor();
  at::Tensor y = at::empty({B, h, H, W}, u.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(dtype, "ddsa_gated_depthwise_forward_cpu", [&] {
    using T = scalar_t;
    const T* up = u.data_ptr<T>();
    const T* tp = taps.data_ptr<T>();
    const T* bp = bd.defined() ? bd.data_ptr<T>() : nullptr;
    T* yp = y.data_ptr<T>();
    const cpu::dw::Planes us(u);
    const cpu::dw::PlaneFn<T> conv = cpu::dw::plane_kernel<T>(K);
    const g::GateFn<T> gate = g::gate_kernel<T>();
    const std::vector<T> zeros(W, T(0));
    const int64_t plane = H * W;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1));
    at::parallel_for(0, B * h, grain, [&](int64_t begin, int64_t end) {
      const std::unique_ptr<T[]> sa(new T[plane]);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t bi = p / h, c = p % h;
        T* yc = yp + p * plane;
        conv(up + us.offset(bi * h2 + c), sa.get(), tp + c * K * K, bp ? bp[c] : T(0), H, W, zeros.data());
        conv(up + us.offset(bi * h2 + c + h), yc, tp + (c + h) * K * K, bp ? bp[c + h] : T(0), H, W, zeros.data());
        gate(sa.get(), yc, yc, plane);
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_depthwise_backward_cpu(const at::Tensor& grad_y,
                                                                            const at::Tensor& u_in,
                                                                            const at::Tensor& w_dw,
                                                                            const std::optional<at::Tensor>& b_dw) {
  namespace g = cpu::gdfn;
  g::check_gated_depthwise(u_in, w_dw, b_dw);
  const auto dtype = u_in.scalar_type();
  detail::check_cpu_operand(grad_y, "gated_ffn", "grad_y", dtype);
  const int64_t B = u_in.size(0), h2 = u_in.size(1), h = h2 / 2, H = u_in.size(2), W = u_in.size(3), K = w_dw.size(2);
  TORCH_CHECK(grad_y.dim() == 4 && grad_y.size(0) == B && grad_y.size(1) == h && grad_y.size(2) == H &&
                  grad_y.size(3) == W,
              "ddsa gated_depthwise: grad_y must have shape (", B, ", ", h, ", ", H, ", ", W, "), got ",
              grad_y.sizes());
  const at::Tensor u = cpu::dw::planes_ok(u_in), dy = cpu::dw::planes_ok(grad_y);
  const at::Tensor taps = w_dw.reshape({h2, K * K}).contiguous();
  const at::Tensor flipped = w_dw.flip({2, 3}).reshape({h2, K * K}).contiguous();
  const at::Tensor bd = b_dw.has_value() ? b_dw->contiguous() : at::Tensor();
  at::Tensor du = at::empty({B, h2, H, W}, u.options().memory_format(at::MemoryFormat::Contiguous));
  const cpu::dw::TapGrads acc(w_dw);
  if (du.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "ddsa_gated_depthwise_backward_cpu", [&] {
      using T = scalar_t;
      const T* up = u.data_ptr<T>();
      const T* gp = dy.data_ptr<T>();
      const T* tp = taps.data_ptr<T>();
      const T* fp = flipped.data_ptr<T>();
      const T* bp = bd.defined() ? bd.data_ptr<T>() : nullptr;
      T* dup = du.data_ptr<T>();
      double* dkp = acc.dk.data_ptr<double>();
      double* dbp = acc.db.data_ptr<double>();
      const cpu::dw::Planes us(u), gs(dy);
      const cpu::dw::PlaneFn<T> conv = cpu::dw::plane_kernel<T>(K);
      const cpu::dw::GradFn<T> taps_grad = cpu::dw::grad_kernel<T>(K);
      const g::GateGradFn<T> gate_grad = g::gate_grad_kernel<T>();
      const std::vector<T> zeros(W, T(0));
      const int64_t plane = H * W;
      at::parallel_for(0, h, 1, [&](int64_t begin, int64_t end) {
        const std::unique_ptr<T[]> sa(new T[plane]), sg(new T[plane]);
        for (int64_t c = begin; c < end; ++c)
          for (int64_t bi = 0; bi < B; ++bi) {
            const int64_t qa = bi * h2 + c, qg = qa + h;  // planes of u_a and u_g
            const T* ua = up + us.offset(qa);
            const T* ug = up + us.offset(qg);
            conv(ua, sa.get(), tp + c * K * K, bp ? bp[c] : T(0), H, W, zeros.data());
            conv(ug, sg.get(), tp + (c + h) * K * K, bp ? bp[c + h] : T(0), H, W, zeros.data());
            gate_grad(sa.get(), sg.get(), gp + gs.offset(bi * h + c), plane);  // now da, dg
            conv(sa.get(), dup + qa * plane, fp + c * K * K, T(0), H, W, zeros.data());
            conv(sg.get(), dup + qg * plane, fp + (c + h) * K * K, T(0), H, W, zeros.data());
            taps_grad(ua, sa.get(), H, W, dkp + c * K * K, dbp + c, zeros.data());
            taps_grad(ug, sg.get(), H, W, dkp + (c + h) * K * K, dbp + c + h, zeros.data());
          }
      });
    });
  }
  return acc.grads(du);
}

}  // namespace ddsa
