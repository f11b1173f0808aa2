// CPU forward and backward of the depth-wise 2-D convolution with an odd square kernel, stride 1,
// dilation 1 and "same" zero padding (the 3×3 convolutions of the Restormer family's attention and
// feed-forward blocks, and DRSformer's 5×5 ones), on NCHW maps.
//
// Why it exists: oneDNN, which torch calls for these convolutions on CPU, reorders NCHW maps into a
// blocked layout and back on every call; for a depth-wise kernel that does 9 multiply-adds per value
// this costs several times the memory traffic of the convolution itself.
//
// Every (b, c) plane is independent. For one output row the K input rows it reads sit in cache; the
// interior of the row (columns R .. W−R−1, R = K/2) is one loop over w with the K×K taps unrolled and
// accumulated in registers, so it vectorises over w; the R columns at each edge take the bounds-checked
// path. Rows outside the image read a row of zeros.
//
//   forward   y[h, w]  = b + Σ_ij k[i, j] · x[h+i−R, w+j−R]
//   grad x    dx[h, w] = Σ_ij k[K−1−i, K−1−j] · dy[h+i−R, w+j−R]          (the same kernel, flipped taps)
//   grad k    dk[i, j] = Σ_bhw dy[h, w] · x[h+i−R, w+j−R]
//   grad b    db       = Σ_bhw dy
//
// The backward walks one channel per task: for each of its planes dx, then dk and db while that plane of
// dy is in cache. dk and db are reduced over b and h in a fixed order (float64 accumulators across rows),
// so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

#include "../ddsa.h"

namespace ddsa {
namespace cpu {
namespace {

// One output plane: y = taps ⊛ x (+ bias), x and y (H, W) contiguous, `zeros` a row of W zeros.
// always_inline: the AVX2 entry points below inline these bodies and compile them for AVX2 + FMA.
template <int K, typename T>
__attribute__((always_inline)) inline void conv_plane(const T* __restrict x, T* __restrict y, const T* taps, T bias,
                                                      int64_t H, int64_t W, const T* zeros) {
  constexpr int R = K / 2;
  for (int64_t h = 0; h < H; ++h) {
    std::array<const T*, K> rows;
    for (int i = 0; i < K; ++i) {
      const int64_t hh = h + i - R;
      rows[i] = (hh >= 0 && hh < H) ? x + hh * W : zeros;
    }
    T* __restrict out = y + h * W;
    const int64_t lo = std::min<int64_t>(R, W), hi = std::max<int64_t>(W - R, lo);
    auto edge = [&](int64_t w) {
      T acc = bias;
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
          const int64_t ww = w + j - R;
          if (ww >= 0 && ww < W) acc += taps[i * K + j] * rows[i][ww];
        }
      out[w] = acc;
    };
    for (int64_t w = 0; w < lo; ++w) edge(w);
    if constexpr (K == 3) {
      // The common case, spelled out so the compiler keeps the 9 taps in registers.
      const T k0 = taps[0], k1 = taps[1], k2 = taps[2], k3 = taps[3], k4 = taps[4], k5 = taps[5], k6 = taps[6],
              k7 = taps[7], k8 = taps[8];
      const T* __restrict r0 = rows[0];
      const T* __restrict r1 = rows[1];
      const T* __restrict r2 = rows[K - 1];
#pragma omp simd
      for (int64_t w = lo; w < hi; ++w) {
        out[w] = bias + k0 * r0[w - 1] + k1 * r0[w] + k2 * r0[w + 1] + k3 * r1[w - 1] + k4 * r1[w] + k5 * r1[w + 1] +
                 k6 * r2[w - 1] + k7 * r2[w] + k8 * r2[w + 1];
      }
    } else {
      for (int64_t w = lo; w < hi; ++w) out[w] = bias;
      for (int i = 0; i < K; ++i) {
        const T* __restrict r = rows[i];
        for (int j = 0; j < K; ++j) {
          const T t = taps[i * K + j];
          const int64_t off = j - R;
#pragma omp simd
          for (int64_t w = lo; w < hi; ++w) out[w] += t * r[w + off];
        }
      }
    }
    for (int64_t w = std::max(hi, lo); w < W; ++w) edge(w);
  }
}

// Σ_hw dy[h, w] · x[h+i−R, w+j−R] for all K×K taps of one plane, added into acc (float64), and Σ dy into *db;
// `zeros` a row of W zeros (read for the rows outside the image).
template <int K, typename T>
__attribute__((always_inline)) inline void tap_grads_plane(const T* __restrict x, const T* __restrict dy, int64_t H,
                                                           int64_t W, double* acc, double* db, const T* zeros) {
  constexpr int R = K / 2;
  if constexpr (K == 3) {
    if (W >= 3) {
      // One pass over each dy row for all 9 taps (and the bias): 10 accumulators in registers.
      double bsum = 0;
      for (int64_t h = 0; h < H; ++h) {
        const T* __restrict g = dy + h * W;
        const T* __restrict r0 = h > 0 ? x + (h - 1) * W : zeros;
        const T* __restrict r1 = x + h * W;
        const T* __restrict r2 = h + 1 < H ? x + (h + 1) * W : zeros;
        // Edge columns: w = 0 has no left neighbour, w = W − 1 no right one.
        T s0 = 0, s1 = g[0] * r0[0], s2 = g[0] * r0[1], s3 = 0, s4 = g[0] * r1[0], s5 = g[0] * r1[1], s6 = 0,
          s7 = g[0] * r2[0], s8 = g[0] * r2[1], sb = g[0];
        const int64_t e = W - 1;
        s0 += g[e] * r0[e - 1];
        s1 += g[e] * r0[e];
        s3 += g[e] * r1[e - 1];
        s4 += g[e] * r1[e];
        s6 += g[e] * r2[e - 1];
        s7 += g[e] * r2[e];
        sb += g[e];
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7, s8, sb)
        for (int64_t w = 1; w < e; ++w) {
          const T gw = g[w];
          s0 += gw * r0[w - 1];
          s1 += gw * r0[w];
          s2 += gw * r0[w + 1];
          s3 += gw * r1[w - 1];
          s4 += gw * r1[w];
          s5 += gw * r1[w + 1];
          s6 += gw * r2[w - 1];
          s7 += gw * r2[w];
          s8 += gw * r2[w + 1];
          sb += gw;
        }
        acc[0] += s0, acc[1] += s1, acc[2] += s2, acc[3] += s3, acc[4] += s4;
        acc[5] += s5, acc[6] += s6, acc[7] += s7, acc[8] += s8;
        bsum += sb;
      }
      *db += bsum;
      return;
    }
  }
  double bsum = 0;
  for (int64_t h = 0; h < H; ++h) {
    const T* __restrict g = dy + h * W;
    T rowsum = 0;
#pragma omp simd reduction(+ : rowsum)
    for (int64_t w = 0; w < W; ++w) rowsum += g[w];
    bsum += rowsum;
    for (int i = 0; i < K; ++i) {
      const int64_t hh = h + i - R;
      if (hh < 0 || hh >= H) continue;
      const T* __restrict r = x + hh * W;
      for (int j = 0; j < K; ++j) {
        const int64_t off = j - R;
        const int64_t lo = std::max<int64_t>(0, -off), hi = std::min<int64_t>(W, W - off);
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t w = lo; w < hi; ++w) s += g[w] * r[w + off];
        acc[i * K + j] += s;
      }
    }
  }
  *db += bsum;
}

template <typename T>
using PlaneFn = void (*)(const T*, T*, const T*, T, int64_t, int64_t, const T*);

// The same kernels compiled for AVX2 + FMA (the package is built for the x86-64 baseline, SSE2), picked
// at run time when the CPU has them: the 3×3 loops are arithmetic-bound at SSE2 width.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DDSA_DW_AVX2 1
template <int K, typename T>
__attribute__((target("avx2,fma"))) void conv_plane_avx2(const T* x, T* y, const T* taps, T bias, int64_t H,
                                                         int64_t W, const T* zeros) {
  conv_plane<K, T>(x, y, taps, bias, H, W, zeros);
}

template <int K, typename T>
__attribute__((target("avx2,fma"))) void tap_grads_plane_avx2(const T* x, const T* dy, int64_t H, int64_t W,
                                                              double* acc, double* db, const T* zeros) {
  tap_grads_plane<K, T>(x, dy, H, W, acc, db, zeros);
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename T>
PlaneFn<T> plane_kernel(int64_t K) {
#ifdef DDSA_DW_AVX2
  if (K == 3 && cpu_has_avx2_fma()) return conv_plane_avx2<3, T>;
#endif
  switch (K) {
    case 1: return conv_plane<1, T>;
    case 3: return conv_plane<3, T>;
    case 5: return conv_plane<5, T>;
    case 7: return conv_plane<7, T>;
    default: TORCH_CHECK(false, "ddsa depthwise_conv cpu backend: kernel size ", K, " is not 1, 3, 5 or 7");
  }
}

template <typename T>
using GradFn = void (*)(const T*, const T*, int64_t, int64_t, double*, double*, const T*);

template <typename T>
GradFn<T> grad_kernel(int64_t K) {
#ifdef DDSA_DW_AVX2
  if (K == 3 && cpu_has_avx2_fma()) return tap_grads_plane_avx2<3, T>;
#endif
  switch (K) {
    case 1: return tap_grads_plane<1, T>;
    case 3: return tap_grads_plane<3, T>;
    case 5: return tap_grads_plane<5, T>;
    case 7: return tap_grads_plane<7, T>;
    default: TORCH_CHECK(false, "ddsa depthwise_conv cpu backend: kernel size ", K, " is not 1, 3, 5 or 7");
  }
}

// Where plane (b, c) of a (B, C, H, W) tensor starts: its rows are unit-stride and W apart (planes_ok),
// while b and c may have any strides (a channel slice of a larger map is read in place).
struct Planes {
  int64_t sb, sc, C;
  explicit Planes(const at::Tensor& t) : sb(t.stride(0)), sc(t.stride(1)), C(t.size(1)) {}
  int64_t offset(int64_t p) const { return (p / C) * sb + (p % C) * sc; }
};

at::Tensor planes_ok(const at::Tensor& t) {
  const int64_t H = t.size(2), W = t.size(3);
  const bool rows = (W <= 1 || t.stride(3) == 1) && (H <= 1 || t.stride(2) == W);
  return rows ? t : t.contiguous();
}

// y = taps ⊛ x per (b, c) plane; y contiguous, taps (C, K·K) contiguous, bias (C,) or nullptr.
template <typename T>
void conv_all_planes(const T* x, const Planes& xs, T* y, const T* taps, const T* bias, int64_t B, int64_t C,
                     int64_t H, int64_t W, int64_t K) {
  const PlaneFn<T> fn = plane_kernel<T>(K);
  const std::vector<T> zeros(W, T(0));
  const int64_t plane = H * W;
  // Grain: enough planes per task to amortise the dispatch on small maps.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1));
  at::parallel_for(0, B * C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % C;
      fn(x + xs.offset(p), y + p * plane, taps + c * K * K, bias ? bias[c] : T(0), H, W, zeros.data());
    }
  });
}

void check_args(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(),
              "ddsa depthwise_conv cpu backend: tensors must be on the CPU, got x on ", x.device(), " and weight on ",
              weight.device());
  TORCH_CHECK(x.dim() == 4, "ddsa depthwise_conv: x must have shape (B, C, H, W), got ", x.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == weight.size(3) &&
                  weight.size(2) % 2 == 1,
              "ddsa depthwise_conv: weight must have shape (C, 1, K, K) with C=", C, " and K odd, got ",
              weight.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "ddsa depthwise_conv cpu backend: unsupported dtype ", x.scalar_type(), " (expected float32 or float64)");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "ddsa depthwise_conv: weight has dtype ", weight.scalar_type(),
              " but x has dtype ", x.scalar_type());
}

}  // namespace
}  // namespace cpu

at::Tensor depthwise_conv_forward_cpu(const at::Tensor& x_in, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias) {
  cpu::check_args(x_in, weight);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), K = weight.size(2);
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C && bias->scalar_type() == x_in.scalar_type() &&
                    bias->device().is_cpu(),
                "ddsa depthwise_conv: bias must be a (C,) CPU tensor of x's dtype with C=", C, ", got ", bias->sizes(),
                " ", bias->scalar_type());
  const at::Tensor x = cpu::planes_ok(x_in);
  const at::Tensor taps = weight.reshape({C, K * K}).contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({B, C, H, W}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddsa_depthwise_conv_forward_cpu", [&] {
    cpu::conv_all_planes<scalar_t>(x.data_ptr<scalar_t>(), cpu::Planes(x), y.data_ptr<scalar_t>(),
                                   taps.data_ptr<scalar_t>(),
                                   b.defined() ? b.data_ptr<scalar_t>() : nullptr, B, C, H, W, K);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv_backward_cpu(const at::Tensor& grad_y,
                                                                           const at::Tensor& x_in,
                                                                           const at::Tensor& weight) {
  cpu::check_args(x_in, weight);
  TORCH_CHECK(grad_y.sizes() == x_in.sizes(), "ddsa depthwise_conv: grad_y has shape ", grad_y.sizes(),
              " but x has shape ", x_in.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x_in.scalar_type() && grad_y.device().is_cpu(),
              "ddsa depthwise_conv: grad_y must be a CPU tensor of x's dtype");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), K = weight.size(2);
  const at::Tensor x = cpu::planes_ok(x_in), dy = cpu::planes_ok(grad_y);
  // dx is the forward with the taps rotated by 180°.
  const at::Tensor flipped = weight.flip({2, 3}).reshape({C, K * K}).contiguous();
  at::Tensor dx = at::empty({B, C, H, W}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const auto f64 = x.options().dtype(at::kDouble);
  at::Tensor dk = at::zeros({C, K * K}, f64), db = at::zeros({C}, f64);
  if (dx.numel() == 0) return {dx, dk.to(weight.scalar_type()).reshape(weight.sizes()), db.to(weight.scalar_type())};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddsa_depthwise_conv_backward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    const cpu::Planes xs(x), gs(dy);
    const cpu::PlaneFn<scalar_t> conv = cpu::plane_kernel<scalar_t>(K);
    const cpu::GradFn<scalar_t> taps_grad = cpu::grad_kernel<scalar_t>(K);
    const scalar_t* fp = flipped.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    double* dkp = dk.data_ptr<double>();
    double* dbp = db.data_ptr<double>();
    const std::vector<scalar_t> zeros(W, scalar_t(0));
    // Per plane, dx and then the tap gradients, while the plane of dy is still in cache. One task per
    // channel, its planes in batch order: the reduction order is fixed.
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c)
        for (int64_t b = 0; b < B; ++b) {
          const int64_t p = b * C + c;
          conv(gp + gs.offset(p), dxp + p * H * W, fp + c * K * K, scalar_t(0), H, W, zeros.data());
          taps_grad(xp + xs.offset(p), gp + gs.offset(p), H, W, dkp + c * K * K, dbp + c, zeros.data());
        }
    });
  });
  return {dx, dk.to(weight.scalar_type()).reshape(weight.sizes()), db.to(weight.scalar_type())};
}

}  // namespace ddsa
