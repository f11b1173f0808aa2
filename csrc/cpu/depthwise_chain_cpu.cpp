// CPU forward and backward of the depth-wise ReLU chain of IDT-DDSA's feed-forward block (SEFN):
// x (B, n·C, H, W) is n channel groups x_1 .. x_n of C channels; one depth-wise K×K kernel k (C, 1, K, K)
// (and bias) is applied along the chain
//
//   y_1 = relu(k ⊛ x_1),   y_i = relu(k ⊛ (y_{i−1} + x_i))   for i = 2 .. n,     y = [y_1, .., y_n]
//
// Why it exists: written as torch ops this is n convolutions (oneDNN reorders each NCHW slice into a
// blocked layout and back), n − 1 additions, n ReLUs and a concatenation, and autograd adds the
// concatenation of the gradients, the ReLU masks and the additions again. Here every (b, c) plane runs
// its whole chain in one task with one scratch plane, writing each y_i straight into its slice of y.
//
// Backward, with u_1 = x_1, u_i = y_{i−1} + x_i the convolution inputs (recomputed from x and y) and
// g_i the gradient of the pre-activation:
//
//   g_n = dy_n · [y_n > 0],   g_i = (dy_i + du_{i+1}) · [y_i > 0],   du_i = k̃ ⊛ g_i   (k̃: taps rotated 180°)
//   dx_i = du_i,   dk = Σ_i Σ_bhw g_i · shift(u_i),   db = Σ_i Σ_bhw g_i
//
// One task per channel c walks its planes in batch order and the chain from i = n down to 1, so dk and
// db (float64 accumulators) are reduced in a fixed order: results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../ddsa.h"
#include "bands.h"
#include "blas.h"
#include "depthwise_planes.h"

namespace ddsa {
namespace cpu {
namespace {

void check_chain_args(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(),
              "ddsa depthwise_chain cpu backend: tensors must be on the CPU, got x on ", x.device(), " and weight on ",
              weight.device());
  TORCH_CHECK(x.dim() == 4, "ddsa depthwise_chain: x must have shape (B, n·C, H, W), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == 1 && weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1 &&
                  weight.size(0) > 0 && x.size(1) % weight.size(0) == 0,
              "ddsa depthwise_chain: weight must have shape (C, 1, K, K) with K odd and C dividing x's ", x.size(1),
              " channels, got ", weight.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "ddsa depthwise_chain cpu backend: unsupported dtype ", x.scalar_type(), " (expected float32 or float64)");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "ddsa depthwise_chain: weight has dtype ",
              weight.scalar_type(), " but x has dtype ", x.scalar_type());
}

// The selects below are branch-free only without -ftrapping-math (GCC keeps a compare that may raise
// the invalid flag as control flow, which blocks vectorisation); FP exception flags are never read here.
#define DDSA_SELECT_LOOP __attribute__((optimize("no-trapping-math")))

template <typename T>
DDSA_SELECT_LOOP void relu_inplace(T* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = y[i];
    y[i] = v > T(0) || v != v ? v : T(0);  // NaN stays NaN, as in torch.relu
  }
}

template <typename T>
void add_planes(const T* __restrict a, const T* __restrict b, T* __restrict out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// g = (dy + carry) · [y > 0]; carry may be nullptr (the last link of the chain). Both sides of the
// select are computed first so that the loop compiles to a blend: about half of y is zero, in no
// pattern a branch predictor could follow.
template <typename T>
DDSA_SELECT_LOOP void relu_grad(const T* __restrict y, const T* __restrict dy, const T* __restrict carry, T* __restrict g, int64_t n) {
  if (carry) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T v = dy[i] + carry[i];
      g[i] = y[i] > T(0) ? v : T(0);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T v = dy[i];
      g[i] = y[i] > T(0) ? v : T(0);
    }
  }
}

}  // namespace
}  // namespace cpu

at::Tensor depthwise_chain_forward_cpu(const at::Tensor& x_in, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias) {
  cpu::check_chain_args(x_in, weight);
  const int64_t B = x_in.size(0), nC = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t C = weight.size(0), K = weight.size(2), n = nC / C;
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C && bias->scalar_type() == x_in.scalar_type() &&
                    bias->device().is_cpu(),
                "ddsa depthwise_chain: bias must be a (C,) CPU tensor of x's dtype with C=", C, ", got ",
                bias->sizes(), " ", bias->scalar_type());
  const at::Tensor x = cpu::dw::planes_ok(x_in);
  const at::Tensor taps = weight.reshape({C, K * K}).contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({B, nC, H, W}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddsa_depthwise_chain_forward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* tp = taps.data_ptr<scalar_t>();
    const scalar_t* bp = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    const cpu::dw::Planes xs(x);
    const cpu::dw::PlaneFn<scalar_t> conv = cpu::dw::plane_kernel<scalar_t>(K);
    const std::vector<scalar_t> zeros(W, scalar_t(0));
    const int64_t plane = H * W;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(plane * n, 1));
    at::parallel_for(0, B * C, grain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> u(n > 1 ? plane : 0);  // the input y_{i−1} + x_i of the next convolution
      for (int64_t p = begin; p < end; ++p) {
        const int64_t bi = p / C, c = p % C;
        const scalar_t bias_c = bp ? bp[c] : scalar_t(0);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t q = bi * nC + i * C + c;  // plane (b, i·C + c)
          const scalar_t* xi = xp + xs.offset(q);
          scalar_t* yi = yp + q * plane;
          const scalar_t* src = xi;
          if (i > 0) {
            cpu::add_planes(yi - C * plane, xi, u.data(), plane);
            src = u.data();
          }
          conv(src, yi, tp + c * K * K, bias_c, H, W, zeros.data());
          cpu::relu_inplace(yi, plane);
        }
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_chain_backward_cpu(const at::Tensor& grad_y,
                                                                            const at::Tensor& x_in,
                                                                            const at::Tensor& y_in,
                                                                            const at::Tensor& weight) {
  cpu::check_chain_args(x_in, weight);
  TORCH_CHECK(grad_y.sizes() == x_in.sizes() && y_in.sizes() == x_in.sizes(), "ddsa depthwise_chain: grad_y ",
              grad_y.sizes(), " and y ", y_in.sizes(), " must have x's shape ", x_in.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x_in.scalar_type() && y_in.scalar_type() == x_in.scalar_type() &&
                  grad_y.device().is_cpu() && y_in.device().is_cpu(),
              "ddsa depthwise_chain: grad_y and y must be CPU tensors of x's dtype");
  const int64_t B = x_in.size(0), nC = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t C = weight.size(0), K = weight.size(2), n = nC / C;
  const at::Tensor x = cpu::dw::planes_ok(x_in), y = cpu::dw::planes_ok(y_in), dy = cpu::dw::planes_ok(grad_y);
  const at::Tensor flipped = weight.flip({2, 3}).reshape({C, K * K}).contiguous();
  at::Tensor dx = at::empty({B, nC, H, W}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const auto f64 = x.options().dtype(at::kDouble);
  at::Tensor dk = at::zeros({C, K * K}, f64), db = at::zeros({C}, f64);
  if (dx.numel() == 0) return {dx, dk.to(weight.scalar_type()).reshape(weight.sizes()), db.to(weight.scalar_type())};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddsa_depthwise_chain_backward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    const scalar_t* fp = flipped.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    double* dkp = dk.data_ptr<double>();
    double* dbp = db.data_ptr<double>();
    const cpu::dw::Planes xs(x), ys(y), gs(dy);
    const cpu::dw::PlaneFn<scalar_t> conv = cpu::dw::plane_kernel<scalar_t>(K);
    const cpu::dw::GradFn<scalar_t> taps_grad = cpu::dw::grad_kernel<scalar_t>(K);
    const std::vector<scalar_t> zeros(W, scalar_t(0));
    const int64_t plane = H * W;
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> g(plane), u(plane);
      for (int64_t c = begin; c < end; ++c)
        for (int64_t bi = 0; bi < B; ++bi)
          for (int64_t i = n - 1; i >= 0; --i) {
            const int64_t q = bi * nC + i * C + c;
            const scalar_t* yi = yp + ys.offset(q);
            const scalar_t* dyi = gp + gs.offset(q);
            const scalar_t* carry = i + 1 < n ? dxp + (q + C) * plane : nullptr;  // du_{i+1}
            scalar_t* gv = g.data();
            cpu::relu_grad(yi, dyi, carry, gv, plane);
            const scalar_t* xi = xp + xs.offset(q);
            const scalar_t* ui = xi;
            if (i > 0) {
              cpu::add_planes(yp + ys.offset(q - C), xi, u.data(), plane);
              ui = u.data();
            }
            conv(gv, dxp + q * plane, fp + c * K * K, scalar_t(0), H, W, zeros.data());
            taps_grad(ui, gv, H, W, dkp + c * K * K, dbp + c, zeros.data());
          }
    });
  });
  return {dx, dk.to(weight.scalar_type()).reshape(weight.sizes()), db.to(weight.scalar_type())};
}

// Inference of the whole pointwise → chain → pointwise block (SEFN without its gate):
//
//   u = W_in · x + b_in   (1×1 convolution, C → n·C_h channels),   y = chain(u),   z = W_out · y + b_out
//
// Unfused, u and y are (B, n·C_h, H, W) maps several times larger than x and z, each written to and read
// back from memory twice. Here each task owns a run of image rows and walks it in bands of `band` rows:
// it computes u for the band plus `halo` = n·(K/2) rows either side (the chain's reach) with one GEMM
// into a per-thread buffer, runs the chain there in place, and writes z's band with a second GEMM, so u
// and y never leave the buffer. The halo rows' u are copied over from the previous band instead of being
// recomputed. The chain pads the buffer's edge rows with zeros, which is wrong where the edge is not the
// image's: the error moves one row inward per link, so after n links it has reached `halo` rows, exactly
// the rows that are not written out.

at::Tensor depthwise_chain_mlp_forward_cpu(const at::Tensor& x_in, const at::Tensor& w_in,
                                           const std::optional<at::Tensor>& b_in, const at::Tensor& w_dw,
                                           const std::optional<at::Tensor>& b_dw, const at::Tensor& w_out,
                                           const std::optional<at::Tensor>& b_out, int64_t band) {
  TORCH_CHECK(x_in.dim() == 4, "ddsa depthwise_chain_mlp: x must have shape (B, C, H, W), got ", x_in.sizes());
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(w_in.dim() == 4 && w_in.size(1) == C && w_in.size(2) == 1 && w_in.size(3) == 1,
              "ddsa depthwise_chain_mlp: w_in must have shape (n·C_h, ", C, ", 1, 1), got ", w_in.sizes());
  const int64_t nh = w_in.size(0);
  TORCH_CHECK(w_dw.dim() == 4 && w_dw.size(1) == 1 && w_dw.size(2) == w_dw.size(3) && w_dw.size(2) % 2 == 1 &&
                  w_dw.size(0) > 0 && nh % w_dw.size(0) == 0,
              "ddsa depthwise_chain_mlp: w_dw must have shape (C_h, 1, K, K) with K odd and C_h dividing w_in's ", nh,
              " outputs, got ", w_dw.sizes());
  TORCH_CHECK(w_out.dim() == 4 && w_out.size(1) == nh && w_out.size(2) == 1 && w_out.size(3) == 1,
              "ddsa depthwise_chain_mlp: w_out must have shape (C_out, ", nh, ", 1, 1), got ", w_out.sizes());
  TORCH_CHECK(band >= 1, "ddsa depthwise_chain_mlp: band must be at least 1 row, got ", band);
  const int64_t h = w_dw.size(0), K = w_dw.size(2), n = nh / h, C_out = w_out.size(0);
  const auto dtype = x_in.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "ddsa depthwise_chain_mlp cpu backend: unsupported dtype ", dtype, " (expected float32 or float64)");
  const auto check = [&](const at::Tensor& t, const char* name, int64_t numel) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && (numel < 0 || (t.dim() == 1 && t.numel() == numel)),
                "ddsa depthwise_chain_mlp: ", name, " must be a CPU tensor of x's dtype ", dtype,
                numel < 0 ? "" : " and shape (" + std::to_string(numel) + ",)", ", got ", t.sizes(), " ",
                t.scalar_type(), " on ", t.device());
  };
  check(x_in, "x", -1);
  check(w_in, "w_in", -1);
  check(w_dw, "w_dw", -1);
  check(w_out, "w_out", -1);
  if (b_in.has_value()) check(*b_in, "b_in", nh);
  if (b_dw.has_value()) check(*b_dw, "b_dw", h);
  if (b_out.has_value()) check(*b_out, "b_out", C_out);

  const at::Tensor x = x_in.contiguous();
  const at::Tensor wi = w_in.reshape({nh, C}).contiguous(), wo = w_out.reshape({C_out, nh}).contiguous();
  const at::Tensor taps = w_dw.reshape({h, K * K}).contiguous();
  const at::Tensor bi_t = b_in.has_value() ? b_in->contiguous() : at::Tensor();
  const at::Tensor bd_t = b_dw.has_value() ? b_dw->contiguous() : at::Tensor();
  const at::Tensor bo_t = b_out.has_value() ? b_out->contiguous() : at::Tensor();
  at::Tensor z = at::empty({B, C_out, H, W}, x.options());
  TORCH_CHECK(C > 0 && nh > 0, "ddsa depthwise_chain_mlp: x and w_in need at least one channel, got x ", x_in.sizes(),
              " and w_in ", w_in.sizes());
  if (z.numel() == 0) return z;

  const int64_t halo = n * (K / 2);
  band = std::min(band, H);
  const auto [runs, run_rows] = cpu::bands::row_runs(B, H, band);
  AT_DISPATCH_FLOATING_TYPES(dtype, "ddsa_depthwise_chain_mlp_forward_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* wip = wi.data_ptr<T>();
    const T* wop = wo.data_ptr<T>();
    const T* tp = taps.data_ptr<T>();
    const T* bip = bi_t.defined() ? bi_t.data_ptr<T>() : nullptr;
    const T* bdp = bd_t.defined() ? bd_t.data_ptr<T>() : nullptr;
    const T* bop = bo_t.defined() ? bo_t.data_ptr<T>() : nullptr;
    T* zp = z.data_ptr<T>();
    const cpu::dw::PlaneFn<T> conv = cpu::dw::plane_kernel<T>(K);
    const std::vector<T> zeros(W, T(0));
    const int64_t rows_max = band + 2 * halo, ps = rows_max * W;  // buffer rows and plane stride
    at::parallel_for(0, B * runs, 1, [&](int64_t begin, int64_t end) {
      // uninitialised: every element is written before it is read (a zero fill would cost a pass)
      const std::unique_ptr<T[]> buf(new T[nh * ps]), kept(new T[nh * 2 * halo * W + 1]), su(new T[ps]), sy(new T[ps]);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / runs, R0 = (task % runs) * run_rows, R1 = std::min(H, R0 + run_rows);
        const T* xb = xp + b * C * H * W;
        T* zb = zp + b * C_out * H * W;
        int64_t kept_lo = 0, kept_hi = 0;  // rows of u held in `kept` from the previous band
        for (int64_t r0 = R0; r0 < R1; r0 += band) {
          const int64_t r1 = std::min(R1, r0 + band);
          const int64_t ra = std::max<int64_t>(0, r0 - halo), rb = std::min(H, r1 + halo), E = rb - ra;
          int64_t fresh = ra;
          if (kept_hi > kept_lo) {  // kept_lo == ra by construction
            const int64_t rows = kept_hi - kept_lo;
            for (int64_t c = 0; c < nh; ++c)
              std::memcpy(buf.get() + c * ps, kept.get() + c * 2 * halo * W, sizeof(T) * rows * W);
            fresh = kept_hi;
          }
          if (rb > fresh) {
            cpu::gemm(false, false, nh, (rb - fresh) * W, C, T(1), wip, C, xb + fresh * W, H * W, T(0),
                      buf.get() + (fresh - ra) * W, ps);
            cpu::bands::add_row_bias(buf.get() + (fresh - ra) * W, nh, ps, (rb - fresh) * W, bip);
          }
          kept_lo = kept_hi = 0;
          if (r1 < R1 && halo > 0) {  // the next band's leading halo rows, before the chain overwrites them
            kept_lo = std::max<int64_t>(0, r1 - halo);
            kept_hi = rb;
            for (int64_t c = 0; c < nh; ++c)
              std::memcpy(kept.get() + c * 2 * halo * W, buf.get() + c * ps + (kept_lo - ra) * W,
                          sizeof(T) * (kept_hi - kept_lo) * W);
          }
          const int64_t len = E * W;
          for (int64_t c = 0; c < h; ++c) {
            const T bias_c = bdp ? bdp[c] : T(0);
            for (int64_t i = 0; i < n; ++i) {
              T* pi = buf.get() + (i * h + c) * ps;
              if (i == 0) {
                conv(pi, sy.get(), tp + c * K * K, bias_c, E, W, zeros.data());
                cpu::relu_inplace(sy.get(), len);
                std::memcpy(pi, sy.get(), sizeof(T) * len);
              } else {
                cpu::add_planes(pi - h * ps, pi, su.get(), len);
                conv(su.get(), pi, tp + c * K * K, bias_c, E, W, zeros.data());
                cpu::relu_inplace(pi, len);
              }
            }
          }
          cpu::gemm(false, false, C_out, (r1 - r0) * W, nh, T(1), wop, nh, buf.get() + (r0 - ra) * W, ps, T(0),
                    zb + r0 * W, H * W);
          cpu::bands::add_row_bias(zb + r0 * W, C_out, H * W, (r1 - r0) * W, bop);
        }
      }
    });
  });
  return z;
}

}  // namespace ddsa
