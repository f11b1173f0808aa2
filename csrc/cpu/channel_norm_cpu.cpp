// CPU forward and backward of the channel LayerNorm of NCHW maps, in place of a permuted copy.
//
// x is viewed as (B, C, N) with N = H·W pixels at unit stride (other layouts are copied once).
// Work items are (b, pixel-chunk) pairs run on at::parallel_for's threads; a chunk walks its
// pixels in tiles of T pixels whose C×T block stays in cache. Inside a tile every loop runs over
// a contiguous pixel run of one channel, so it vectorises over pixels, and the per-pixel channel
// statistics live in T-long accumulators.
//
// Statistics are two-pass over the cached tile: the mean first, then the centred sums Σd and Σd²
// of d = x − μ. A one-pass Σx, Σx² would cost the same reads here (the tile is in cache either way)
// but loses every digit of the variance when |μ| ≫ σ (Σx²/C − μ² cancels), so it is not used.
// μ itself is only good to half an ulp of |μ|, which on a near-constant pixel far from zero
// (x = 2 ± 1e-3) is a sizeable part of every d: the residual mean Σd/C is therefore subtracted
// again wherever x̂ is formed (forward and backward), as autograd of the plain formula does through
// μ's own gradient. The saved mean is μ + Σd/C; the backward re-derives its residual from x.
//
// float16/bfloat16 tiles are converted to float32 once per tile; accumulation is float32
// (float64 for float64). dw and db are reduced per work item (each item one partial row), then
// the rows are added in item order; the items depend only on the shape, so results are bitwise
// identical for any thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../ddsa.h"

namespace ddsa {
namespace cpu {
namespace {

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Pixels per tile: the C×T block of x (and dy) in the accumulation dtype within ~64 KiB.
int64_t norm_tile_pixels(int64_t C, int64_t acc_bytes) {
  const int64_t t = (65536 / (acc_bytes * std::max<int64_t>(C, 1))) / 16 * 16;
  return std::clamp<int64_t>(t, 16, 1024);
}

// (b, pixel-chunk) work items: about kNormItems overall, a whole number of tiles each.
constexpr int64_t kNormItems = 64;

struct NormSplit {
  int64_t tile, tiles, chunks;
  NormSplit(int64_t B, int64_t C, int64_t N, int64_t acc_bytes) : tile(norm_tile_pixels(C, acc_bytes)) {
    tiles = (N + tile - 1) / tile;
    const int64_t want = (kNormItems + B - 1) / std::max<int64_t>(B, 1);
    chunks = std::max<int64_t>(1, std::min(tiles, want));
  }
  int64_t tile_begin(int64_t s) const { return s * tiles / chunks; }
};

// x (B, C, H, W) itself when its H·W pixels form one unit-stride run per (b, c), else a copy.
at::Tensor pixels_unit_stride(const at::Tensor& x) {
  const int64_t H = x.size(2), W = x.size(3);
  const bool w_ok = W <= 1 || x.stride(3) == 1;
  const bool h_ok = H <= 1 || x.stride(2) == W;
  return w_ok && h_ok ? x : x.contiguous();
}

// Rows of one tile: straight into x's memory when it is already in the accumulation dtype,
// else converted into `buf` (C rows of `len`, leading dimension T). Returns (pointer, row stride).
template <typename scalar_t, typename A>
const A* tile_rows(const scalar_t* src, int64_t sc, int64_t C, int64_t len, int64_t T, A* buf, int64_t& ld) {
  if constexpr (std::is_same_v<scalar_t, A>) {
    ld = sc;
    return src;
  } else {
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t* s = src + c * sc;
      A* d = buf + c * T;
      for (int64_t p = 0; p < len; ++p) d[p] = static_cast<A>(s[p]);
    }
    ld = T;
    return buf;
  }
}

// Runs body(item, scratch) for every item in [0, items) on at::parallel_for's threads; scratch
// is one buffer of `scratch_len` accumulators per thread range.
template <typename A, typename Body>
void for_items(int64_t items, int64_t scratch_len, const Body& body) {
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> scratch(scratch_len);
    for (int64_t item = begin; item < end; ++item) body(item, scratch.data());
  });
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const at::Tensor& x_in, const at::Tensor& weight,
                                                            const std::optional<at::Tensor>& bias, double eps,
                                                            bool subtract_mean) {
  using A = acc_t<scalar_t>;
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), N = H * W;
  const at::Tensor x = pixels_unit_stride(x_in);
  at::Tensor y = at::empty({B, C, H, W}, x_in.options().memory_format(at::MemoryFormat::Contiguous));
  const auto acc_opts = x_in.options().dtype(c10::CppTypeToScalarType<A>::value);
  at::Tensor mean = at::empty({B, H, W}, acc_opts);
  at::Tensor rstd = at::empty({B, H, W}, acc_opts);
  if (B == 0 || N == 0) return {y, mean, rstd};
  const at::Tensor w_t = weight.to(acc_opts).contiguous();
  const at::Tensor b_t = bias.has_value() ? bias->to(acc_opts).contiguous() : at::Tensor();
  const A* w = w_t.data_ptr<A>();
  const A* bb = b_t.defined() ? b_t.data_ptr<A>() : nullptr;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t sxb = x.stride(0), sxc = C > 1 ? x.stride(1) : N;
  scalar_t* yp = y.data_ptr<scalar_t>();
  A* mp = mean.data_ptr<A>();
  A* rp = rstd.data_ptr<A>();
  const NormSplit sp(B, C, N, sizeof(A));
  const int64_t T = sp.tile;
  const A c_a = static_cast<A>(C), inv_c = A(1) / c_a, eps_a = static_cast<A>(eps);
  const bool convert = !std::is_same_v<scalar_t, A>;
  for_items<A>(B * sp.chunks, 3 * T + (convert ? C * T : 0), [&](int64_t item, A* scratch) {
    const int64_t b = item / sp.chunks, s = item % sp.chunks;
    A* __restrict m = scratch;
    A* __restrict r = scratch + T;
    A* __restrict res = scratch + 2 * T;  // residual mean Σd/C
    A* buf = scratch + 3 * T;
    for (int64_t t = sp.tile_begin(s); t < sp.tile_begin(s + 1); ++t) {
      const int64_t n0 = t * T, len = std::min(T, N - n0);
      int64_t ld;
      const A* rows = tile_rows<scalar_t, A>(xp + b * sxb + n0, sxc, C, len, T, buf, ld);
      for (int64_t p = 0; p < len; ++p) m[p] = 0;
      for (int64_t c = 0; c < C; ++c) {
        const A* __restrict xr = rows + c * ld;
        for (int64_t p = 0; p < len; ++p) m[p] += xr[p];
      }
      for (int64_t p = 0; p < len; ++p) {  // a division, as torch's mean
        m[p] /= c_a;
        r[p] = res[p] = 0;
      }
      for (int64_t c = 0; c < C; ++c) {
        const A* __restrict xr = rows + c * ld;
        for (int64_t p = 0; p < len; ++p) {
          const A d = xr[p] - m[p];
          res[p] += d;
          r[p] += d * d;
        }
      }
      for (int64_t p = 0; p < len; ++p) {
        res[p] /= c_a;  // a constant pixel: every d equals res, so (x − μ) − res = 0 exactly
        r[p] = A(1) / std::sqrt(std::max(A(0), r[p] * inv_c - res[p] * res[p]) + eps_a);
        mp[b * N + n0 + p] = m[p] + res[p];
      }
      std::copy(r, r + len, rp + b * N + n0);
      for (int64_t c = 0; c < C; ++c) {
        const A* __restrict xr = rows + c * ld;
        scalar_t* __restrict yr = yp + (b * C + c) * N + n0;
        const A wc = w[c], bc = bb ? bb[c] : A(0);
        if (subtract_mean) {
          for (int64_t p = 0; p < len; ++p)
            yr[p] = static_cast<scalar_t>(((xr[p] - m[p]) - res[p]) * (r[p] * wc) + bc);
        } else {
          for (int64_t p = 0; p < len; ++p) yr[p] = static_cast<scalar_t>(xr[p] * (r[p] * wc));
        }
      }
    }
  });
  return {y, mean, rstd};
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_y, const at::Tensor& x_in,
                                                             const at::Tensor& weight, const at::Tensor& mean_in,
                                                             const at::Tensor& rstd_in, bool subtract_mean) {
  using A = acc_t<scalar_t>;
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), N = H * W;
  const at::Tensor x = pixels_unit_stride(x_in);
  const at::Tensor dy = pixels_unit_stride(grad_y);
  const auto acc_opts = x_in.options().dtype(c10::CppTypeToScalarType<A>::value);
  const at::Tensor mean = mean_in.to(acc_opts).contiguous(), rstd = rstd_in.to(acc_opts).contiguous();
  at::Tensor dx = at::empty({B, C, H, W}, x_in.options().memory_format(at::MemoryFormat::Contiguous));
  if (B == 0 || N == 0) return {dx, at::zeros({C}, acc_opts), at::zeros({C}, acc_opts)};
  const at::Tensor w_t = weight.to(acc_opts).contiguous();
  const A* w = w_t.data_ptr<A>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* gp = dy.data_ptr<scalar_t>();
  const int64_t sxb = x.stride(0), sxc = C > 1 ? x.stride(1) : N;
  const int64_t sgb = dy.stride(0), sgc = C > 1 ? dy.stride(1) : N;
  scalar_t* dxp = dx.data_ptr<scalar_t>();
  const A* mp = mean.data_ptr<A>();
  const A* rp = rstd.data_ptr<A>();
  const NormSplit sp(B, C, N, sizeof(A));
  const int64_t T = sp.tile, items = B * sp.chunks;
  const A inv_c = A(1) / static_cast<A>(C);
  const bool convert = !std::is_same_v<scalar_t, A>;
  std::vector<A> partial(items * 2 * C);  // per item: dw (C), db (C)
  for_items<A>(items, 3 * T + (convert ? 2 * C * T : 0), [&](int64_t item, A* scratch) {
    const int64_t b = item / sp.chunks, s = item % sp.chunks;
    A* __restrict sg = scratch;       // mean_c g
    A* __restrict sgx = scratch + T;  // mean_c g·x̂ (or g·x·rstd)
    A* __restrict res = scratch + 2 * T;  // residual mean of x − μ
    A* buf = scratch + 3 * T;
    A* dw_part = partial.data() + item * 2 * C;
    A* db_part = dw_part + C;
    std::fill(dw_part, dw_part + 2 * C, A(0));
    for (int64_t t = sp.tile_begin(s); t < sp.tile_begin(s + 1); ++t) {
      const int64_t n0 = t * T, len = std::min(T, N - n0);
      int64_t ldx, ldg;
      const A* xrows = tile_rows<scalar_t, A>(xp + b * sxb + n0, sxc, C, len, T, buf, ldx);
      const A* grows = tile_rows<scalar_t, A>(gp + b * sgb + n0, sgc, C, len, T, buf + C * T, ldg);
      const A* __restrict m = mp + b * N + n0;
      const A* __restrict r = rp + b * N + n0;
      // Pass 1: per pixel Σ g, Σ g·d (or Σ g·x·rstd) and Σ d, with d = x − μ; then r = Σ d / C and
      // mean(g·x̂) = (Σ g·d − r·Σ g)·rstd / C, so the residual costs no pass of its own.
      for (int64_t p = 0; p < len; ++p) sg[p] = sgx[p] = res[p] = 0;
      for (int64_t c = 0; c < C; ++c) {
        const A* __restrict xr = xrows + c * ldx;
        const A* __restrict gr = grows + c * ldg;
        const A wc = w[c];
        if (subtract_mean) {
#pragma omp simd
          for (int64_t p = 0; p < len; ++p) {
            const A d = xr[p] - m[p];
            const A g = gr[p] * wc;
            res[p] += d;
            sg[p] += g;
            sgx[p] += g * d;
          }
        } else {
#pragma omp simd
          for (int64_t p = 0; p < len; ++p) {
            res[p] += xr[p] - m[p];
            sgx[p] += gr[p] * wc * xr[p];
          }
        }
      }
      for (int64_t p = 0; p < len; ++p) {
        res[p] /= static_cast<A>(C);  // a division, as in the forward: a constant pixel gives d − r = 0
        sgx[p] = (subtract_mean ? sgx[p] - res[p] * sg[p] : sgx[p]) * r[p] * inv_c;
        sg[p] *= inv_c;
      }
      // Pass 2: dx, and this item's Σ dy·x̂ (or Σ dy·x·rstd) and Σ dy per channel.
      for (int64_t c = 0; c < C; ++c) {
        const A* __restrict xr = xrows + c * ldx;
        const A* __restrict gr = grows + c * ldg;
        scalar_t* __restrict dr = dxp + (b * C + c) * N + n0;
        const A wc = w[c];
        A dwc = 0, dbc = 0;
        if (subtract_mean) {
#pragma omp simd reduction(+ : dwc, dbc)
          for (int64_t p = 0; p < len; ++p) {
            const A xh = ((xr[p] - m[p]) - res[p]) * r[p];
            dr[p] = static_cast<scalar_t>((gr[p] * wc - sg[p] - xh * sgx[p]) * r[p]);
            dwc += gr[p] * xh;
            dbc += gr[p];
          }
        } else {
#pragma omp simd reduction(+ : dwc, dbc)
          for (int64_t p = 0; p < len; ++p) {
            const A xh = ((xr[p] - m[p]) - res[p]) * r[p];
            dr[p] = static_cast<scalar_t>((gr[p] * wc - xh * sgx[p]) * r[p]);
            dwc += gr[p] * xr[p] * r[p];
            dbc += gr[p];
          }
        }
        dw_part[c] += dwc;
        db_part[c] += dbc;
      }
    }
  });
  at::Tensor dw = at::zeros({C}, acc_opts), db = at::zeros({C}, acc_opts);
  A* dwp = dw.data_ptr<A>();
  A* dbp = db.data_ptr<A>();
  for (int64_t item = 0; item < items; ++item) {  // fixed order: deterministic
    const A* part = partial.data() + item * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      dwp[c] += part[c];
      dbp[c] += part[C + c];
    }
  }
  return {dx, dw, db};
}

void check_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "ddsa channel_norm cpu backend: tensors must be on the CPU, got ", x.device());
}

}  // namespace
}  // namespace cpu

NormFwd channel_norm_forward_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 double eps, bool subtract_mean) {
  detail::check_channel_norm_args(x, weight, bias, eps, subtract_mean);
  cpu::check_cpu(x);
  switch (x.scalar_type()) {
    case at::kFloat: return cpu::forward_impl<float>(x, weight, bias, eps, subtract_mean);
    case at::kDouble: return cpu::forward_impl<double>(x, weight, bias, eps, subtract_mean);
    case at::kHalf: return cpu::forward_impl<c10::Half>(x, weight, bias, eps, subtract_mean);
    case at::kBFloat16: return cpu::forward_impl<c10::BFloat16>(x, weight, bias, eps, subtract_mean);
    default: TORCH_CHECK(false, "ddsa channel_norm cpu backend: unsupported dtype ", x.scalar_type());
  }
}

NormBwd channel_norm_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& mean, const at::Tensor& rstd, bool subtract_mean) {
  detail::check_channel_norm_args(x, weight, std::nullopt, 1.0, subtract_mean);
  detail::check_channel_norm_backward_args(grad_y, x, mean, rstd);
  cpu::check_cpu(x);
  switch (x.scalar_type()) {
    case at::kFloat: return cpu::backward_impl<float>(grad_y, x, weight, mean, rstd, subtract_mean);
    case at::kDouble: return cpu::backward_impl<double>(grad_y, x, weight, mean, rstd, subtract_mean);
    case at::kHalf: return cpu::backward_impl<c10::Half>(grad_y, x, weight, mean, rstd, subtract_mean);
    case at::kBFloat16: return cpu::backward_impl<c10::BFloat16>(grad_y, x, weight, mean, rstd, subtract_mean);
    default: TORCH_CHECK(false, "ddsa channel_norm cpu backend: unsupported dtype ", x.scalar_type());
  }
}

}  // namespace ddsa
