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
  const cpu::dw::TapGrads acc(weight);
  if (dx.numel() == 0) return acc.grads(dx);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddsa_depthwise_chain_backward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    const scalar_t* fp = flipped.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    double* dkp = acc.dk.data_ptr<double>();
    double* dbp = acc.db.data_ptr<double>();
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
  return acc.grads(dx);
}

// Inference of the whole pointwise → chain → pointwise block (SEFN without its gate):
//
//   u = W_in · x + b_in   (1×1 convolution, C → n·C_h channels),   y = chain(u),   z = W_out · y + b_out
//
// Walked in bands by bands::run with `halo` = n·(K/2) rows either side (the chain's reach); the chain
// runs in place in the band's buffer of u. It pads the buffer's edge rows with zeros, which is wrong where
// the edge is not the image's: the error moves one row inward per link, so after n links it has reached
// `halo` rows, exactly the rows that are not written out.

at::Tensor depthwise_chain_mlp_forward_cpu(const at::Tensor& x_in, const at::Tensor& w_in,
                                           const std::optional<at::Tensor>& b_in, const at::Tensor& w_dw,
                                           const std::optional<at::Tensor>& b_dw, const at::Tensor& w_out,
                                           const std::optional<at::Tensor>& b_out, int64_t band) {
  TORCH_CHECK(x_in.dim() == 4, "ddsa depthwise_chain_mlp: x must have shape (B, C, H, W), got ", x_in.sizes());
  const int64_t C = x_in.size(1), W = x_in.size(3);
  TORCH_CHECK(w_in.dim() == 4 && w_in.size(1) == C && w_in.size(2) == 1 && w_in.size(3) == 1,
              "ddsa depthwise_chain_mlp: w_in must have shape (n·C_h, ", C, ", 1, 1), got ", w_in.sizes());
  const int64_t nh = w_in.size(0);
  TORCH_CHECK(w_dw.dim() == 4 && w_dw.size(1) == 1 && w_dw.size(2) == w_dw.size(3) && w_dw.size(2) % 2 == 1 &&
                  w_dw.size(0) > 0 && nh % w_dw.size(0) == 0,
              "ddsa depthwise_chain_mlp: w_dw must have shape (C_h, 1, K, K) with K odd and C_h dividing w_in's ", nh,
              " outputs, got ", w_dw.sizes());
  TORCH_CHECK(w_out.dim() == 4 && w_out.size(1) == nh && w_out.size(2) == 1 && w_out.size(3) == 1,
              "ddsa depthwise_chain_mlp: w_out must have shape (C_out, ", nh, ", 1, 1), got ", w_out.sizes());
  cpu::bands::check_operands("depthwise_chain_mlp", x_in, w_in, b_in, w_out, b_out, band);
  const int64_t h = w_dw.size(0), K = w_dw.size(2), n = nh / h;
  const auto dtype = x_in.scalar_type();
  detail::check_cpu_operand(w_dw, "depthwise_chain_mlp", "w_dw", dtype);
  detail::check_cpu_operand(b_dw, "depthwise_chain_mlp", "b_dw", dtype, h);
  TORCH_CHECK(C > 0 && nh > 0, "ddsa depthwise_chain_mlp: x and w_in need at least one channel, got x ", x_in.sizes(),
              " and w_in ", w_in.sizes());

  const cpu::bands::Operands io(x_in, w_in, b_in, w_out, b_out);
  const at::Tensor taps = w_dw.reshape({h, K * K}).contiguous();
  const at::Tensor bd_t = cpu::contiguous_or_none(b_dw);
  if (io.z.numel() == 0) return io.z;

  AT_DISPATCH_FLOATING_TYPES(dtype, "ddsa_depthwise_chain_mlp_forward_cpu", [&] {
    using T = scalar_t;
    const T* tp = taps.data_ptr<T>();
    const T* bdp = cpu::data_or_null<T>(bd_t);
    const cpu::dw::PlaneFn<T> conv = cpu::dw::plane_kernel<T>(K);
    const std::vector<T> zeros(W, T(0));
    cpu::bands::run(io.block<T>(), band, n * (K / 2), [&](int64_t ps) {
      return [&, su = std::unique_ptr<T[]>(new T[ps]), sy = std::unique_ptr<T[]>(new T[ps])](
                 T* u, const cpu::bands::Band& bd) {
        const int64_t E = bd.rb - bd.ra, len = E * W;
        for (int64_t c = 0; c < h; ++c) {
          const T bias_c = bdp ? bdp[c] : T(0);
          for (int64_t i = 0; i < n; ++i) {
            T* pi = u + (i * h + c) * bd.ps;
            if (i == 0) {
              conv(pi, sy.get(), tp + c * K * K, bias_c, E, W, zeros.data());
              cpu::relu_inplace(sy.get(), len);
              std::memcpy(pi, sy.get(), sizeof(T) * len);
            } else {
              cpu::add_planes(pi - h * bd.ps, pi, su.get(), len);
              conv(su.get(), pi, tp + c * K * K, bias_c, E, W, zeros.data());
              cpu::relu_inplace(pi, len);
            }
          }
        }
        return cpu::bands::MidRows<T>{u + (bd.r0 - bd.ra) * W, bd.ps};
      };
    });
  });
  return io.z;
}

}  // namespace ddsa
