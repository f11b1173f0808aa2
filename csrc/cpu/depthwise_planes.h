// Plane kernels of the depth-wise K×K convolution (odd K ≤ 7, stride 1, zero "same" padding) on
// (H, W) planes whose rows are contiguous, shared by depthwise_conv_cpu.cpp and depthwise_chain_cpu.cpp
// (and the feed-forward kernels). The dilated variants are at the end of this file.
//
//   forward   y[h, w]  = b + Σ_ij k[i, j] · x[h+i−R, w+j−R]                 (conv_plane)
//   grad x    dx[h, w] = Σ_ij k[K−1−i, K−1−j] · dy[h+i−R, w+j−R]          (conv_plane, flipped taps)
//   grad k    dk[i, j] = Σ_hw dy[h, w] · x[h+i−R, w+j−R], db = Σ_hw dy    (tap_grads_plane)
//
// For one output row the K input rows it reads sit in cache; the interior of the row (columns
// R .. W−R−1, R = K/2) is one loop over w with the K×K taps unrolled and accumulated in registers, so it
// vectorises over w; the R columns at each edge take the bounds-checked path. Rows outside the image
// read a row of zeros.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <tuple>
#include <type_traits>

namespace ddsa {
namespace cpu {
namespace dw {

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

inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// f(std::integral_constant<int, K>{}) for the supported kernel sizes K = 1, 3, 5, 7: the pickers below
// instantiate their kernel template per size here, instead of each spelling out the switch.
template <typename F>
auto with_kernel_size(int64_t K, const char* op, const F& f) {
  switch (K) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: TORCH_CHECK(false, "ddsa ", op, " cpu backend: kernel size ", K, " is not 1, 3, 5 or 7");
  }
}

template <typename T>
PlaneFn<T> plane_kernel(int64_t K) {
  return with_kernel_size(K, "depthwise_conv", [](auto k) -> PlaneFn<T> {
    constexpr int KK = decltype(k)::value;
#ifdef DDSA_DW_AVX2
    if constexpr (KK == 3)
      if (cpu_has_avx2_fma()) return conv_plane_avx2<KK, T>;
#endif
    return conv_plane<KK, T>;
  });
}

template <typename T>
using GradFn = void (*)(const T*, const T*, int64_t, int64_t, double*, double*, const T*);

template <typename T>
GradFn<T> grad_kernel(int64_t K) {
  return with_kernel_size(K, "depthwise_conv", [](auto k) -> GradFn<T> {
    constexpr int KK = decltype(k)::value;
#ifdef DDSA_DW_AVX2
    if constexpr (KK == 3)
      if (cpu_has_avx2_fma()) return tap_grads_plane_avx2<KK, T>;
#endif
    return tap_grads_plane<KK, T>;
  });
}

// ---- Dilated kernels: the taps D ≥ 1 pixels apart, zero padding D·R ---------------------------------------
//
//   forward   y[h, w]  = b + Σ_ij k[i, j] · x[h+D(i−R), w+D(j−R)]                (conv_plane_dilated)
//   grad k    dk[i, j] = Σ_hw dy[h, w] · x[h+D(i−R), w+D(j−R)], db = Σ_hw dy   (tap_grads_plane_dilated)
//
// Same structure as the kernels above with the offsets scaled by D (the interior of a row is D·R .. W−D·R−1).
// They are separate bodies, not the ones above with a D argument: GCC compiled those, even with D = 1
// known at compile time, into different and for K = 5, 7 slower code, so the undilated path keeps its own.

template <int K, typename T>
__attribute__((always_inline)) inline void conv_plane_dilated(const T* __restrict x, T* __restrict y, const T* taps,
                                                              T bias, int64_t H, int64_t W, const T* zeros,
                                                              int64_t D) {
  constexpr int R = K / 2;
  const int64_t reach = D * R;
  for (int64_t h = 0; h < H; ++h) {
    std::array<const T*, K> rows;
    for (int i = 0; i < K; ++i) {
      const int64_t hh = h + (i - R) * D;
      rows[i] = (hh >= 0 && hh < H) ? x + hh * W : zeros;
    }
    T* __restrict out = y + h * W;
    const int64_t lo = std::min<int64_t>(reach, W), hi = std::max<int64_t>(W - reach, lo);
    auto edge = [&](int64_t w) {
      T acc = bias;
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
          const int64_t ww = w + (j - R) * D;
          if (ww >= 0 && ww < W) acc += taps[i * K + j] * rows[i][ww];
        }
      out[w] = acc;
    };
    for (int64_t w = 0; w < lo; ++w) edge(w);
    if constexpr (K == 3) {
      const T k0 = taps[0], k1 = taps[1], k2 = taps[2], k3 = taps[3], k4 = taps[4], k5 = taps[5], k6 = taps[6],
              k7 = taps[7], k8 = taps[8];
      const T* __restrict r0 = rows[0];
      const T* __restrict r1 = rows[1];
      const T* __restrict r2 = rows[K - 1];
#pragma omp simd
      for (int64_t w = lo; w < hi; ++w) {
        out[w] = bias + k0 * r0[w - D] + k1 * r0[w] + k2 * r0[w + D] + k3 * r1[w - D] + k4 * r1[w] + k5 * r1[w + D] +
                 k6 * r2[w - D] + k7 * r2[w] + k8 * r2[w + D];
      }
    } else {
      // One pass over the row per input row, its K taps in registers (K loads and one load/store of the
      // output per K multiply-adds); rows outside the image add nothing.
      for (int64_t w = lo; w < hi; ++w) out[w] = bias;
      for (int i = 0; i < K; ++i) {
        if (rows[i] == zeros) continue;
        const T* __restrict r = rows[i];
        std::array<T, K> t;
        for (int j = 0; j < K; ++j) t[j] = taps[i * K + j];
#pragma omp simd
        for (int64_t w = lo; w < hi; ++w) {
          T acc = out[w];
          for (int j = 0; j < K; ++j) acc += t[j] * r[w + (j - R) * D];
          out[w] = acc;
        }
      }
    }
    for (int64_t w = hi; w < W; ++w) edge(w);
  }
}

template <int K, typename T>
__attribute__((always_inline)) inline void tap_grads_plane_dilated(const T* __restrict x, const T* __restrict dy,
                                                                   int64_t H, int64_t W, double* acc, double* db,
                                                                   int64_t D) {
  constexpr int R = K / 2;
  double bsum = 0;
  for (int64_t h = 0; h < H; ++h) {
    const T* __restrict g = dy + h * W;
    T rowsum = 0;
#pragma omp simd reduction(+ : rowsum)
    for (int64_t w = 0; w < W; ++w) rowsum += g[w];
    bsum += rowsum;
    for (int i = 0; i < K; ++i) {
      const int64_t hh = h + (i - R) * D;
      if (hh < 0 || hh >= H) continue;
      const T* __restrict r = x + hh * W;
      for (int j = 0; j < K; ++j) {
        const int64_t off = (j - R) * D;
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

// The signatures of PlaneFn and GradFn with the dilation D as a last argument (GradFn's row of zeros is
// not needed: rows outside the image are skipped).
template <typename T>
using DilatedPlaneFn = void (*)(const T*, T*, const T*, T, int64_t, int64_t, const T*, int64_t);
template <typename T>
using DilatedGradFn = void (*)(const T*, const T*, int64_t, int64_t, double*, double*, int64_t);

template <int K, typename T>
void conv_plane_dilated_entry(const T* __restrict x, T* __restrict y, const T* taps, T bias, int64_t H, int64_t W,
                              const T* zeros, int64_t D) {
  conv_plane_dilated<K, T>(x, y, taps, bias, H, W, zeros, D);
}

template <int K, typename T>
void tap_grads_plane_dilated_entry(const T* __restrict x, const T* __restrict dy, int64_t H, int64_t W, double* acc,
                                   double* db, int64_t D) {
  tap_grads_plane_dilated<K, T>(x, dy, H, W, acc, db, D);
}

#ifdef DDSA_DW_AVX2
template <int K, typename T>
__attribute__((target("avx2,fma"))) void conv_plane_dilated_avx2(const T* __restrict x, T* __restrict y,
                                                                 const T* taps, T bias, int64_t H, int64_t W,
                                                                 const T* zeros, int64_t D) {
  conv_plane_dilated<K, T>(x, y, taps, bias, H, W, zeros, D);
}

template <int K, typename T>
__attribute__((target("avx2,fma"))) void tap_grads_plane_dilated_avx2(const T* __restrict x, const T* __restrict dy,
                                                                      int64_t H, int64_t W, double* acc, double* db,
                                                                      int64_t D) {
  tap_grads_plane_dilated<K, T>(x, dy, H, W, acc, db, D);
}
#endif

template <typename T>
DilatedPlaneFn<T> dilated_plane_kernel(int64_t K) {
  return with_kernel_size(K, "depthwise_conv", [](auto k) -> DilatedPlaneFn<T> {
    constexpr int KK = decltype(k)::value;
#ifdef DDSA_DW_AVX2
    if (cpu_has_avx2_fma()) return conv_plane_dilated_avx2<KK, T>;
#endif
    return conv_plane_dilated_entry<KK, T>;
  });
}

template <typename T>
DilatedGradFn<T> dilated_grad_kernel(int64_t K) {
  return with_kernel_size(K, "depthwise_conv", [](auto k) -> DilatedGradFn<T> {
    constexpr int KK = decltype(k)::value;
#ifdef DDSA_DW_AVX2
    if (cpu_has_avx2_fma()) return tap_grads_plane_dilated_avx2<KK, T>;
#endif
    return tap_grads_plane_dilated_entry<KK, T>;
  });
}

// Where plane (b, c) of a (B, C, H, W) tensor starts: its rows are unit-stride and W apart (planes_ok),
// while b and c may have any strides (a channel slice of a larger map is read in place).
struct Planes {
  int64_t sb, sc, C;
  explicit Planes(const at::Tensor& t) : sb(t.stride(0)), sc(t.stride(1)), C(t.size(1)) {}
  int64_t offset(int64_t p) const { return (p / C) * sb + (p % C) * sc; }
};

// The float64 accumulators of a depth-wise weight's gradient, dk (C, K·K), and of its bias's, db (C,): the
// backward kernels sum into them in a fixed order, so results do not depend on the thread count.
// grads(dx) returns (dx, dk, db) with dk and db in the weight's dtype and shape.
struct TapGrads {
  at::Tensor weight, dk, db;
  explicit TapGrads(const at::Tensor& w)
      : weight(w),
        dk(at::zeros({w.size(0), w.size(2) * w.size(3)}, w.options().dtype(at::kDouble))),
        db(at::zeros({w.size(0)}, w.options().dtype(at::kDouble))) {}
  std::tuple<at::Tensor, at::Tensor, at::Tensor> grads(const at::Tensor& dx) const {
    return {dx, dk.to(weight.scalar_type()).reshape(weight.sizes()), db.to(weight.scalar_type())};
  }
};

inline at::Tensor planes_ok(const at::Tensor& t) {
  const int64_t H = t.size(2), W = t.size(3);
  const bool rows = (W <= 1 || t.stride(3) == 1) && (H <= 1 || t.stride(2) == W);
  return rows ? t : t.contiguous();
}

}  // namespace dw
}  // namespace cpu
}  // namespace ddsa
