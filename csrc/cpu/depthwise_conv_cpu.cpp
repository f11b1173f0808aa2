// CPU forward and backward of the depth-wise 2-D convolution with an odd square kernel, stride 1,
// dilation D ≥ 1 and "same" zero padding D·(K/2) (the 3×3 convolutions of the Restormer family's
// attention and feed-forward blocks, DRSformer's 5×5 ones and the dilated 3/5/7 ones of its level-0
// MEFC subnet), on NCHW maps.
//
// Why it exists: oneDNN, which torch calls for these convolutions on CPU, reorders NCHW maps into a
// blocked layout and back on every call; for a depth-wise kernel that does 9 multiply-adds per value
// this costs several times the memory traffic of the convolution itself.
//
// Every (b, c) plane is independent; the plane kernels are in depthwise_planes.h.
//
// The backward walks one channel per task: for each of its planes dx, then dk and db while that plane of
// dy is in cache. dk and db are reduced over b and h in a fixed order (float64 accumulators across rows),
// so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../ddsa.h"
#include "depthwise_planes.h"

namespace ddsa {
namespace cpu {
namespace {

using dw::Planes;
using dw::planes_ok;

// Calls `body(conv, taps_grad)` with the plane kernels for K and dilation D, as callables of the undilated
// signatures (PlaneFn, GradFn): for D = 1 the undilated kernels themselves, else the dilated ones with D bound.
template <typename T, typename Body>
void with_plane_kernels(int64_t K, int64_t D, Body&& body) {
  if (D == 1) {
    body(dw::plane_kernel<T>(K), dw::grad_kernel<T>(K));
    return;
  }
  const dw::DilatedPlaneFn<T> conv = dw::dilated_plane_kernel<T>(K);
  const dw::DilatedGradFn<T> grad = dw::dilated_grad_kernel<T>(K);
  body([conv, D](const T* x, T* y, const T* taps, T bias, int64_t H, int64_t W,
                 const T* zeros) { conv(x, y, taps, bias, H, W, zeros, D); },
       [grad, D](const T* x, const T* dy, int64_t H, int64_t W, double* acc, double* db,
                 const T*) { grad(x, dy, H, W, acc, db, D); });
}

// y = taps ⊛ x per (b, c) plane; y contiguous, taps (C, K·K) contiguous, bias (C,) or nullptr.
template <typename T, typename Conv>
void conv_all_planes(const T* x, const Planes& xs, T* y, const T* taps, const T* bias, int64_t B, int64_t C,
                     int64_t H, int64_t W, int64_t K, const Conv& fn) {
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

void check_args(const at::Tensor& x, const at::Tensor& weight, int64_t dilation) {
  TORCH_CHECK(dilation >= 1, "ddsa depthwise_conv: dilation must be an integer >= 1, got ", dilation);
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
                                      const std::optional<at::Tensor>& bias, int64_t dilation) {
  cpu::check_args(x_in, weight, dilation);
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
    cpu::with_plane_kernels<scalar_t>(K, dilation, [&](const auto& conv, const auto&) {
      cpu::conv_all_planes<scalar_t>(x.data_ptr<scalar_t>(), cpu::Planes(x), y.data_ptr<scalar_t>(),
                                     taps.data_ptr<scalar_t>(), b.defined() ? b.data_ptr<scalar_t>() : nullptr, B,
                                     C, H, W, K, conv);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv_backward_cpu(const at::Tensor& grad_y,
                                                                           const at::Tensor& x_in,
                                                                           const at::Tensor& weight,
                                                                           int64_t dilation) {
  cpu::check_args(x_in, weight, dilation);
  TORCH_CHECK(grad_y.sizes() == x_in.sizes(), "ddsa depthwise_conv: grad_y has shape ", grad_y.sizes(),
              " but x has shape ", x_in.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x_in.scalar_type() && grad_y.device().is_cpu(),
              "ddsa depthwise_conv: grad_y must be a CPU tensor of x's dtype");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), K = weight.size(2);
  const at::Tensor x = cpu::planes_ok(x_in), dy = cpu::planes_ok(grad_y);
  // dx is the forward with the taps rotated by 180° (and the same dilation).
  const at::Tensor flipped = weight.flip({2, 3}).reshape({C, K * K}).contiguous();
  at::Tensor dx = at::empty({B, C, H, W}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const cpu::dw::TapGrads acc(weight);
  if (dx.numel() == 0) return acc.grads(dx);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddsa_depthwise_conv_backward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    const cpu::Planes xs(x), gs(dy);
    const scalar_t* fp = flipped.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    double* dkp = acc.dk.data_ptr<double>();
    double* dbp = acc.db.data_ptr<double>();
    const std::vector<scalar_t> zeros(W, scalar_t(0));
    // Per plane, dx and then the tap gradients, while the plane of dy is still in cache. One task per
    // channel, its planes in batch order: the reduction order is fixed.
    cpu::with_plane_kernels<scalar_t>(K, dilation, [&](const auto& conv, const auto& taps_grad) {
      at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c)
          for (int64_t b = 0; b < B; ++b) {
            const int64_t p = b * C + c;
            conv(gp + gs.offset(p), dxp + p * H * W, fp + c * K * K, scalar_t(0), H, W, zeros.data());
            taps_grad(xp + xs.offset(p), gp + gs.offset(p), H, W, dkp + c * K * K, dbp + c, zeros.data());
          }
      });
    });
  });
  return acc.grads(dx);
}

}  // namespace ddsa
