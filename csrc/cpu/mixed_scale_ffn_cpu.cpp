// CPU kernels of DRSformer's mixed-scale feed-forward block (MSFN). With u = W_in · x + b_in the 2h-channel
// projection of x (B, C, H, W) and d_K a depth-wise K×K convolution (zero padding K/2):
//
//   s3 = relu(d_3(u)), s5 = relu(d_5(u))                       stage 1, 2h channels each
//   X1 = [s3[:h], s5[:h]],  X2 = [s3[h:], s5[h:]]              the chunk / cat shuffle
//   p_j = relu(b3_1[j] + Σ_g w3_1[j, g] ⊛ X1[2j + g])           stage 2, grouped (2 inputs per output)
//   q_j = relu(b5_1[j] + Σ_g w5_1[j, g] ⊛ X2[2j + g])
//   m = [p, q],   z = W_out · m + b_out
//
// ("3" and "5" name the branches; each branch's kernel may be any odd size up to 7.) Every stage-1 plane
// feeds exactly one stage-2 output: cat index i = t·h + (c mod h) of branch t's channel c lands in half
// c / h (X1 or X2), at output j = i / 2 and input g = i mod 2. So an output plane of m needs two stage-1
// planes, each computed once, straight from two planes of u.
//
// * mixed_scale_ffn_mid_forward_cpu: u → m, one task per output plane (training forward).
// * mixed_scale_ffn_mid_backward_cpu: recomputes s3, s5 from u and reads the masks of p and q off the
//   saved m; one task per channel c of u owns du[c], the stage-1 weights of c and the stage-2 weights that
//   c's two stage-1 planes feed, summed over the batch in order (float64 accumulators): results do not
//   depend on the thread count.
// * mixed_scale_ffn_forward_cpu: inference of the whole block in bands of rows, u and m of one band in a
//   per-thread buffer (one GEMM in, both stages, one GEMM out).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "../ddsa.h"
#include "bands.h"
#include "blas.h"
#include "depthwise_planes.h"

namespace ddsa {
namespace cpu {
namespace msffn {
namespace {

// Output rows [y0, y1) of a depth-wise convolution of a plane (width W) of which only rows [x0, x1) are
// held (row r at x + (r − x0)·W) and every other row reads as zero; y points at output row y0. ACC adds
// the result to y (bias ignored), RELU clamps the final value at zero (NaN stays NaN, as torch.relu).
template <int K, bool ACC, bool RELU, typename T>
__attribute__((always_inline)) inline void conv_rows_body(const T* __restrict x, int64_t x0, int64_t x1,
                                                          T* __restrict y, int64_t y0, int64_t y1, int64_t W,
                                                          const T* __restrict taps_in, T bias,
                                                          const T* __restrict zeros) {
  constexpr int R = K / 2;
  T taps[K * K];
  for (int t = 0; t < K * K; ++t) taps[t] = taps_in[t];
  const int64_t lo = std::min<int64_t>(R, W), hi = std::max<int64_t>(W - R, lo);
  for (int64_t r = y0; r < y1; ++r) {
    const T* rows[K];
    for (int i = 0; i < K; ++i) {
      const int64_t rr = r + i - R;
      rows[i] = (rr >= x0 && rr < x1) ? x + (rr - x0) * W : zeros;
    }
    T* __restrict out = y + (r - y0) * W;
    const auto edge = [&](int64_t w) {
      T acc = ACC ? out[w] : bias;
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
          const int64_t ww = w + j - R;
          if (ww >= 0 && ww < W) acc += taps[i * K + j] * rows[i][ww];
        }
      if constexpr (RELU) acc = acc < T(0) ? T(0) : acc;
      out[w] = acc;
    };
    for (int64_t w = 0; w < lo; ++w) edge(w);
#pragma omp simd
    for (int64_t w = lo; w < hi; ++w) {
      T acc = ACC ? out[w] : bias;
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) acc += taps[i * K + j] * rows[i][w + j - R];
      if constexpr (RELU) acc = acc < T(0) ? T(0) : acc;
      out[w] = acc;
    }
    for (int64_t w = std::max(hi, lo); w < W; ++w) edge(w);
  }
}

template <typename T>
using RowsFn = void (*)(const T*, int64_t, int64_t, T*, int64_t, int64_t, int64_t, const T*, T, const T*);

template <int K, bool ACC, bool RELU, typename T>
void conv_rows(const T* x, int64_t x0, int64_t x1, T* y, int64_t y0, int64_t y1, int64_t W, const T* taps, T bias,
               const T* zeros) {
  conv_rows_body<K, ACC, RELU, T>(x, x0, x1, y, y0, y1, W, taps, bias, zeros);
}

#ifdef DDSA_DW_AVX2
template <int K, bool ACC, bool RELU, typename T>
__attribute__((target("avx2,fma"))) void conv_rows_avx2(const T* x, int64_t x0, int64_t x1, T* y, int64_t y0,
                                                        int64_t y1, int64_t W, const T* taps, T bias,
                                                        const T* zeros) {
  conv_rows_body<K, ACC, RELU, T>(x, x0, x1, y, y0, y1, W, taps, bias, zeros);
}
#endif

template <bool ACC, bool RELU, typename T>
RowsFn<T> rows_kernel(int64_t K) {
  return dw::with_kernel_size(K, "mixed_scale_ffn", [](auto k) -> RowsFn<T> {
    constexpr int KK = decltype(k)::value;
#ifdef DDSA_DW_AVX2
    if (dw::cpu_has_avx2_fma()) return conv_rows_avx2<KK, ACC, RELU, T>;
#endif
    return conv_rows<KK, ACC, RELU, T>;
  });
}

// g = v · [s > 0], where g may alias v. Both sides are computed first so the loop compiles to a blend.
template <typename T>
__attribute__((optimize("no-trapping-math"))) void relu_mask(const T* __restrict s, const T* v, T* g, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T a = v[i];
    g[i] = s[i] > T(0) ? a : T(0);
  }
}

// The four depth-wise weights and biases of the middle as raw pointers, with their row kernels.
// Branch t = 0 is the "3×3" one (dwconv3x3 → p), t = 1 the "5×5" one (dwconv5x5 → q).
template <typename T>
struct Mid {
  int64_t h = 0, K1[2] = {0, 0}, K2[2] = {0, 0};
  const T* w1[2] = {nullptr, nullptr};  // (2h, K1²)
  const T* b1[2] = {nullptr, nullptr};  // (2h,) or null
  const T* w2[2] = {nullptr, nullptr};  // (h, 2, K2²): taps of (j, g) at (2j + g)·K2²
  const T* b2[2] = {nullptr, nullptr};  // (h,) or null
  RowsFn<T> stage1[2], stage2_first[2], stage2_second[2];

  int64_t reach1() const { return std::max(K1[0], K1[1]) / 2; }
  int64_t reach2() const { return std::max(K2[0], K2[1]) / 2; }

  // Output rows [r0, r1) of plane o of m, from the planes of u whose rows [ua, ub) are held (plane c's
  // row ua at u_plane(c)); `s` holds (r1 − r0 + 2·reach2()) rows of scratch.
  template <typename UPlane>
  void m_rows(int64_t o, const UPlane& u_plane, int64_t ua, int64_t ub, T* out, int64_t r0, int64_t r1, int64_t H,
              int64_t W, T* s, const T* zeros) const {
    const int64_t half = o / h, j = o % h, reach = K2[half] / 2;
    const int64_t sa = std::max<int64_t>(0, r0 - reach), sb = std::min<int64_t>(H, r1 + reach);
    for (int64_t g = 0; g < 2; ++g) {
      const int64_t idx = 2 * j + g, t = idx / h, c = half * h + idx % h;
      stage1[t](u_plane(c), ua, ub, s, sa, sb, W, w1[t] + c * K1[t] * K1[t], b1[t] ? b1[t][c] : T(0), zeros);
      const T* taps = w2[half] + idx * K2[half] * K2[half];
      if (g == 0)
        stage2_first[half](s, sa, sb, out, r0, r1, W, taps, b2[half] ? b2[half][j] : T(0), zeros);
      else
        stage2_second[half](s, sa, sb, out, r0, r1, W, taps, T(0), zeros);
    }
  }
};

struct MidArgs {
  const at::Tensor &w3, &w5, &w3_1, &w5_1;
  const std::optional<at::Tensor>&b3, &b5, &b3_1, &b5_1;
};

// Checks the middle's weights against u's 2h channels; returns h.
int64_t check_mid(const MidArgs& a, int64_t two_h, at::ScalarType dtype) {
  TORCH_CHECK(two_h > 0 && two_h % 2 == 0, "ddsa mixed_scale_ffn: the projection must have an even number 2h > 0 of "
              "channels, got ", two_h);
  const int64_t h = two_h / 2;
  const auto square_odd = [](const at::Tensor& w) {
    return w.dim() == 4 && w.size(2) == w.size(3) && w.size(2) % 2 == 1 && w.size(2) <= 7;
  };
  TORCH_CHECK(square_odd(a.w3) && a.w3.size(0) == two_h && a.w3.size(1) == 1,
              "ddsa mixed_scale_ffn: w3 must have shape (", two_h, ", 1, K, K) with K odd ≤ 7, got ", a.w3.sizes());
  TORCH_CHECK(square_odd(a.w5) && a.w5.size(0) == two_h && a.w5.size(1) == 1,
              "ddsa mixed_scale_ffn: w5 must have shape (", two_h, ", 1, K, K) with K odd ≤ 7, got ", a.w5.sizes());
  TORCH_CHECK(square_odd(a.w3_1) && a.w3_1.size(0) == h && a.w3_1.size(1) == 2,
              "ddsa mixed_scale_ffn: w3_1 must have shape (", h, ", 2, K, K) with K odd ≤ 7, got ", a.w3_1.sizes());
  TORCH_CHECK(square_odd(a.w5_1) && a.w5_1.size(0) == h && a.w5_1.size(1) == 2,
              "ddsa mixed_scale_ffn: w5_1 must have shape (", h, ", 2, K, K) with K odd ≤ 7, got ", a.w5_1.sizes());
  detail::check_cpu_operand(a.w3, "mixed_scale_ffn", "w3", dtype);
  detail::check_cpu_operand(a.w5, "mixed_scale_ffn", "w5", dtype);
  detail::check_cpu_operand(a.w3_1, "mixed_scale_ffn", "w3_1", dtype);
  detail::check_cpu_operand(a.w5_1, "mixed_scale_ffn", "w5_1", dtype);
  detail::check_cpu_operand(a.b3, "mixed_scale_ffn", "b3", dtype, two_h);
  detail::check_cpu_operand(a.b5, "mixed_scale_ffn", "b5", dtype, two_h);
  detail::check_cpu_operand(a.b3_1, "mixed_scale_ffn", "b3_1", dtype, h);
  detail::check_cpu_operand(a.b5_1, "mixed_scale_ffn", "b5_1", dtype, h);
  return h;
}

// Contiguous copies (or the tensors themselves) kept alive while Mid<T> points into them.
struct MidTensors {
  at::Tensor w1[2], b1[2], w2[2], b2[2];
  MidTensors(const MidArgs& a, bool flipped) {
    const auto prep = [&](const at::Tensor& w) { return (flipped ? w.flip({2, 3}) : w).contiguous(); };
    w1[0] = prep(a.w3), w1[1] = prep(a.w5), w2[0] = prep(a.w3_1), w2[1] = prep(a.w5_1);
    b1[0] = contiguous_or_none(a.b3), b1[1] = contiguous_or_none(a.b5);
    b2[0] = contiguous_or_none(a.b3_1), b2[1] = contiguous_or_none(a.b5_1);
  }
  template <typename T>
  Mid<T> view(int64_t h) const {
    Mid<T> m;
    m.h = h;
    for (int t = 0; t < 2; ++t) {
      m.K1[t] = w1[t].size(2), m.K2[t] = w2[t].size(2);
      m.w1[t] = w1[t].data_ptr<T>(), m.w2[t] = w2[t].data_ptr<T>();
      m.b1[t] = data_or_null<T>(b1[t]), m.b2[t] = data_or_null<T>(b2[t]);
      m.stage1[t] = rows_kernel<false, true, T>(m.K1[t]);
      m.stage2_first[t] = rows_kernel<false, false, T>(m.K2[t]);
      m.stage2_second[t] = rows_kernel<true, true, T>(m.K2[t]);
    }
    return m;
  }
};

void check_u(const at::Tensor& u, const char* name) {
  TORCH_CHECK(u.dim() == 4, "ddsa mixed_scale_ffn: ", name, " must have shape (B, 2h, H, W), got ", u.sizes());
  TORCH_CHECK(u.device().is_cpu(), "ddsa mixed_scale_ffn cpu backend: ", name, " must be on the CPU, got ", u.device());
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, "ddsa mixed_scale_ffn cpu backend: ",
              name, " has unsupported dtype ", u.scalar_type(), " (expected float32 or float64)");
}

}  // namespace
}  // namespace msffn
}  // namespace cpu

at::Tensor mixed_scale_ffn_mid_forward_cpu(const at::Tensor& u_in, const at::Tensor& w3,
                                           const std::optional<at::Tensor>& b3, const at::Tensor& w5,
                                           const std::optional<at::Tensor>& b5, const at::Tensor& w3_1,
                                           const std::optional<at::Tensor>& b3_1, const at::Tensor& w5_1,
                                           const std::optional<at::Tensor>& b5_1) {
  namespace ms = cpu::msffn;
  ms::check_u(u_in, "u");
  const ms::MidArgs args{w3, w5, w3_1, w5_1, b3, b5, b3_1, b5_1};
  const int64_t B = u_in.size(0), two_h = u_in.size(1), H = u_in.size(2), W = u_in.size(3);
  const int64_t h = ms::check_mid(args, two_h, u_in.scalar_type());
  const at::Tensor u = u_in.contiguous();
  const ms::MidTensors weights(args, false);
  at::Tensor m = at::empty({B, two_h, H, W}, u.options());
  if (m.numel() == 0) return m;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ddsa_mixed_scale_ffn_mid_forward_cpu", [&] {
    using T = scalar_t;
    const ms::Mid<T> mid = weights.view<T>(h);
    const T* up = u.data_ptr<T>();
    T* mp = m.data_ptr<T>();
    const int64_t plane = H * W;
    const std::vector<T> zeros(W, T(0));
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1));
    at::parallel_for(0, B * two_h, grain, [&](int64_t begin, int64_t end) {
      const std::unique_ptr<T[]> s(new T[plane]);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / two_h, o = task % two_h;
        const T* ub = up + b * two_h * plane;
        mid.m_rows(o, [&](int64_t c) { return ub + c * plane; }, 0, H, mp + task * plane, 0, H, H, W, s.get(),
                   zeros.data());
      }
    });
  });
  return m;
}

std::vector<at::Tensor> mixed_scale_ffn_mid_backward_cpu(const at::Tensor& grad_m, const at::Tensor& u_in,
                                                         const at::Tensor& m_in, const at::Tensor& w3,
                                                         const std::optional<at::Tensor>& b3, const at::Tensor& w5,
                                                         const std::optional<at::Tensor>& b5, const at::Tensor& w3_1,
                                                         const std::optional<at::Tensor>& b3_1,
                                                         const at::Tensor& w5_1,
                                                         const std::optional<at::Tensor>& b5_1) {
  namespace ms = cpu::msffn;
  ms::check_u(u_in, "u");
  TORCH_CHECK(grad_m.sizes() == u_in.sizes() && m_in.sizes() == u_in.sizes(), "ddsa mixed_scale_ffn: grad_m ",
              grad_m.sizes(), " and m ", m_in.sizes(), " must have u's shape ", u_in.sizes());
  const auto dtype = u_in.scalar_type();
  detail::check_cpu_operand(grad_m, "mixed_scale_ffn", "grad_m", dtype);
  detail::check_cpu_operand(m_in, "mixed_scale_ffn", "m", dtype);
  const ms::MidArgs args{w3, w5, w3_1, w5_1, b3, b5, b3_1, b5_1};
  const int64_t B = u_in.size(0), two_h = u_in.size(1), H = u_in.size(2), W = u_in.size(3);
  const int64_t h = ms::check_mid(args, two_h, dtype);
  const at::Tensor u = u_in.contiguous(), m = m_in.contiguous(), dm = grad_m.contiguous();
  const ms::MidTensors weights(args, false), flipped(args, true);
  at::Tensor du = at::empty({B, two_h, H, W}, u.options());
  const auto f64 = u.options().dtype(at::kDouble);
  at::Tensor dw1[2], db1[2], dw2[2], db2[2];
  for (int t = 0; t < 2; ++t) {
    dw1[t] = at::zeros({two_h, weights.w1[t].size(2) * weights.w1[t].size(2)}, f64);
    db1[t] = at::zeros({two_h}, f64);
    dw2[t] = at::zeros({two_h, weights.w2[t].size(2) * weights.w2[t].size(2)}, f64);  // (h·2, K²)
    db2[t] = at::zeros({h}, f64);
  }
  if (du.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "ddsa_mixed_scale_ffn_mid_backward_cpu", [&] {
      using T = scalar_t;
      const ms::Mid<T> mid = weights.view<T>(h), flip = flipped.view<T>(h);
      ms::RowsFn<T> first_conv[2], add_conv[2], grad2_conv[2];
      cpu::dw::GradFn<T> taps1[2], taps2[2];
      for (int t = 0; t < 2; ++t) {
        first_conv[t] = ms::rows_kernel<false, false, T>(mid.K1[t]);
        add_conv[t] = ms::rows_kernel<true, false, T>(mid.K1[t]);
        grad2_conv[t] = ms::rows_kernel<false, false, T>(mid.K2[t]);
        taps1[t] = cpu::dw::grad_kernel<T>(mid.K1[t]);
        taps2[t] = cpu::dw::grad_kernel<T>(mid.K2[t]);
      }
      const T* up = u.data_ptr<T>();
      const T* mp = m.data_ptr<T>();
      const T* dmp = dm.data_ptr<T>();
      T* dup = du.data_ptr<T>();
      double *dw1p[2], *db1p[2], *dw2p[2], *db2p[2];
      for (int t = 0; t < 2; ++t)
        dw1p[t] = dw1[t].data_ptr<double>(), db1p[t] = db1[t].data_ptr<double>(),
        dw2p[t] = dw2[t].data_ptr<double>(), db2p[t] = db2[t].data_ptr<double>();
      const int64_t plane = H * W;
      const std::vector<T> zeros(W, T(0));
      at::parallel_for(0, two_h, 1, [&](int64_t begin, int64_t end) {
        const std::unique_ptr<T[]> s(new T[plane]), g2(new T[plane]), gs(new T[plane]);
        double unused_db = 0;
        for (int64_t c = begin; c < end; ++c)
          for (int64_t b = 0; b < B; ++b) {
            const T* uc = up + (b * two_h + c) * plane;
            T* duc = dup + (b * two_h + c) * plane;
            for (int t = 0; t < 2; ++t) {
              const int64_t K1 = mid.K1[t], half = c / h, idx = t * h + c % h, j = idx / 2, g = idx % 2;
              const int64_t o = half * h + j, K2 = mid.K2[half];
              mid.stage1[t](uc, 0, H, s.get(), 0, H, W, mid.w1[t] + c * K1 * K1, mid.b1[t] ? mid.b1[t][c] : T(0),
                            zeros.data());
              const int64_t qo = (b * two_h + o) * plane;
              ms::relu_mask(mp + qo, dmp + qo, g2.get(), plane);  // gradient of q_j / p_j's pre-activation
              grad2_conv[half](g2.get(), 0, H, gs.get(), 0, H, W, flip.w2[half] + idx * K2 * K2, T(0), zeros.data());
              ms::relu_mask(s.get(), gs.get(), gs.get(), plane);  // gradient of the stage-1 pre-activation
              taps2[half](s.get(), g2.get(), H, W, dw2p[half] + idx * K2 * K2, g == 0 ? db2p[half] + j : &unused_db,
                          zeros.data());
              (t == 0 ? first_conv : add_conv)[t](gs.get(), 0, H, duc, 0, H, W, flip.w1[t] + c * K1 * K1, T(0),
                                                  zeros.data());
              taps1[t](uc, gs.get(), H, W, dw1p[t] + c * K1 * K1, db1p[t] + c, zeros.data());
            }
          }
      });
    });
  }
  const auto weight_grad = [&](const at::Tensor& acc, const at::Tensor& like) {
    return acc.to(like.scalar_type()).reshape(like.sizes());
  };
  const auto bias_grad = [&](const at::Tensor& acc) { return acc.to(dtype); };
  return {du,
          weight_grad(dw1[0], w3),   bias_grad(db1[0]), weight_grad(dw1[1], w5),   bias_grad(db1[1]),
          weight_grad(dw2[0], w3_1), bias_grad(db2[0]), weight_grad(dw2[1], w5_1), bias_grad(db2[1])};
}

// Inference of the whole block, walked in bands by bands::run with `halo` = reach1 + reach2 rows of u
// either side: each plane of m is computed for the band's rows only (stage 1 on the rows stage 2 reads,
// stage 2 on the band) into a second per-thread buffer, which the output GEMM reads.
at::Tensor mixed_scale_ffn_forward_cpu(const at::Tensor& x_in, const at::Tensor& w_in,
                                       const std::optional<at::Tensor>& b_in, const at::Tensor& w3,
                                       const std::optional<at::Tensor>& b3, const at::Tensor& w5,
                                       const std::optional<at::Tensor>& b5, const at::Tensor& w3_1,
                                       const std::optional<at::Tensor>& b3_1, const at::Tensor& w5_1,
                                       const std::optional<at::Tensor>& b5_1, const at::Tensor& w_out,
                                       const std::optional<at::Tensor>& b_out, int64_t band) {
  namespace ms = cpu::msffn;
  ms::check_u(x_in, "x");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(w_in.dim() == 4 && w_in.size(1) == C && w_in.size(2) == 1 && w_in.size(3) == 1 && w_in.size(0) > 0,
              "ddsa mixed_scale_ffn: w_in must have shape (2h, ", C, ", 1, 1), got ", w_in.sizes());
  const int64_t two_h = w_in.size(0);
  TORCH_CHECK(w_out.dim() == 4 && w_out.size(1) == two_h && w_out.size(2) == 1 && w_out.size(3) == 1 &&
                  w_out.size(0) > 0,
              "ddsa mixed_scale_ffn: w_out must have shape (C_out, ", two_h, ", 1, 1), got ", w_out.sizes());
  cpu::bands::check_operands("mixed_scale_ffn", x_in, w_in, b_in, w_out, b_out, band);
  const auto dtype = x_in.scalar_type();
  const ms::MidArgs args{w3, w5, w3_1, w5_1, b3, b5, b3_1, b5_1};
  const int64_t h = ms::check_mid(args, two_h, dtype);

  const cpu::bands::Operands io(x_in, w_in, b_in, w_out, b_out);
  const ms::MidTensors weights(args, false);
  if (io.z.numel() == 0) return io.z;

  const int64_t threads = at::get_num_threads();
  // Short maps: bands no taller than an even share of the rows, so that every thread gets a run.
  band = std::min({band, H, std::max<int64_t>(1, (H * B + threads - 1) / threads)});
  AT_DISPATCH_FLOATING_TYPES(dtype, "ddsa_mixed_scale_ffn_forward_cpu", [&] {
    using T = scalar_t;
    const ms::Mid<T> mid = weights.view<T>(h);
    const std::vector<T> zeros(W, T(0));
    const int64_t ms_ = band * W;  // m buffer: plane stride
    cpu::bands::run(io.block<T>(), band, mid.reach1() + mid.reach2(), [&](int64_t) {
      return [&, mbuf = std::unique_ptr<T[]>(new T[two_h * ms_]),
              s = std::unique_ptr<T[]>(new T[(band + 2 * mid.reach2()) * W])](T* u, const cpu::bands::Band& bd) {
        for (int64_t o = 0; o < two_h; ++o)
          mid.m_rows(o, [&](int64_t c) { return u + c * bd.ps; }, bd.ra, bd.rb, mbuf.get() + o * ms_, bd.r0, bd.r1,
                     H, W, s.get(), zeros.data());
        return cpu::bands::MidRows<T>{mbuf.get(), ms_};
      };
    });
  });
  return io.z;
}

}  // namespace ddsa
