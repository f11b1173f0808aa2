// Host side of the channel LayerNorm's CUDA backend: argument checks, allocation, launches and
// the fixed-order reduction of the per-warp dw/db partials. Built only with the CUDA extension.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "../ddsa.h"
#include "channel_norm.cuh"

namespace ddsa {
namespace {

cuda::DType norm_dtype(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "ddsa channel_norm cuda backend: unsupported dtype ", st, " (float32, float16 or bfloat16)");
  }
}

cuda::NormOperand norm_operand(const at::Tensor& t) {
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

void check_norm_cuda(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "ddsa channel_norm cuda backend: tensors must be on a CUDA device, got ", x.device());
  norm_dtype(x.scalar_type());
  TORCH_CHECK(x.size(0) <= 65535, "ddsa channel_norm cuda backend: batch must be at most 65535, got ", x.size(0));
}

}  // namespace

NormFwd channel_norm_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, double eps, bool subtract_mean) {
  detail::check_channel_norm_args(x, weight, bias, eps, subtract_mean);
  check_norm_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor y = at::empty({B, C, H, W}, x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor mean = at::empty({B, H, W}, f32), rstd = at::empty({B, H, W}, f32);
  if (B == 0 || H * W == 0) return {y, mean, rstd};
  const at::Tensor w = weight.to(f32).contiguous();
  const at::Tensor b = bias.has_value() ? bias->to(f32).contiguous() : at::Tensor();
  cuda::launch_channel_norm_forward(norm_dtype(x.scalar_type()), norm_operand(x), B, C, H, W, w.data_ptr<float>(),
                                    b.defined() ? b.data_ptr<float>() : nullptr, static_cast<float>(eps),
                                    subtract_mean, y.data_ptr(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
                                    stream);
  return {y, mean, rstd};
}

NormBwd channel_norm_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& mean_in, const at::Tensor& rstd_in, bool subtract_mean) {
  detail::check_channel_norm_args(x, weight, std::nullopt, 1.0, subtract_mean);
  detail::check_channel_norm_backward_args(grad_y, x, mean_in, rstd_in);
  check_norm_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor dx = at::empty({B, C, H, W}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (B == 0 || H * W == 0) return {dx, at::zeros({C}, f32), at::zeros({C}, f32)};
  const at::Tensor w = weight.to(f32).contiguous();
  const at::Tensor mean = mean_in.to(f32).contiguous(), rstd = rstd_in.to(f32).contiguous();
  at::Tensor partial = at::empty({cuda::channel_norm_partial_rows(B, H * W), 2, C}, f32);
  cuda::launch_channel_norm_backward(norm_dtype(x.scalar_type()), norm_operand(grad_y), norm_operand(x), B, C, H, W,
                                     w.data_ptr<float>(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
                                     subtract_mean, dx.data_ptr(), partial.data_ptr<float>(), stream);
  // Fixed-shape reductions over the per-warp partials: deterministic (no atomics).
  return {dx, partial.select(1, 0).sum(0), partial.select(1, 1).sum(0)};
}

}  // namespace ddsa
