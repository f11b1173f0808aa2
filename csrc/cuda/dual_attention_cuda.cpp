// Host side of the CUDA backend: argument checks, allocation, split choice and the kernel
// sequence (csrc/cuda/kernels.cuh). Built only when setup.py builds the CUDA extension.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../ddsa.h"
#include "kernels.cuh"

namespace ddsa {
namespace {

cuda::DType kernel_dtype(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "ddsa cuda backend: unsupported dtype ", st, " (float32, float16 or bfloat16)");
  }
}

cuda::Operand operand(const at::Tensor& t) {
  // Size-1 dimensions get stride 0 so that they never break the alignment test below.
  return {t.data_ptr(), t.size(0) > 1 ? t.stride(0) : 0, t.size(1) > 1 ? t.stride(1) : 0,
          t.size(2) > 1 ? t.stride(2) : t.size(3)};
}

// True when every row of t starts on a 16-byte boundary (then tiles load 16 bytes at a time).
bool rows_aligned(const at::Tensor& t) {
  const cuda::Operand op = operand(t);
  const int64_t vec = 16 / t.element_size();
  return reinterpret_cast<uintptr_t>(op.ptr) % 16 == 0 && op.sb % vec == 0 && op.sh % vec == 0 && op.sc % vec == 0;
}

int multiprocessors(int device) {
  static int cached[64] = {};
  if (device < 0 || device >= 64) return 80;
  if (cached[device] == 0) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 80;
    cached[device] = sms;
  }
  return cached[device];
}

// Splits of N in the Gram sweep (1 when B·H blocks already fill the GPU), the smallest of:
// * about one wave: 2 blocks per SM over all (b, h) — more splits add partial sums, not bandwidth;
// * tiles / 8 — each split streams ≥ 8 tiles (gram_tile_pixels: 64 pixels at C ≤ 64, 32 above);
// * the traffic cap: S splits write S·(C² + 2C)·4 bytes of partial sums (read back once by
//   reduce_splits) while the sweep reads 2·C·N·elem bytes; keeping the former ≤ 1/32 of the
//   latter gives S ≤ 2·C·N·elem / (32·4·(C² + 2C)) = N·elem / (64·(C + 2)).
// E.g. (1, 1, 48, 1024²) fp16 on an H200 (132 SMs): wave 264, tiles/8 = 2048, traffic cap 655
// → 264 splits, 2.5 MB of partials (1.3 % of the 201 MB read), reduced by a ⌈264/32⌉ + 5-deep tree.
// Depends only on the shape, dtype and device, so results are reproducible run to run.
int gram_splits(int64_t BH, int64_t C, int64_t N, int64_t elem, int device) {
  const int64_t tile = cuda::gram_tile_pixels(static_cast<int>(C));
  const int64_t tiles = (N + tile - 1) / tile;
  const int64_t want = (2 * multiprocessors(device) + BH - 1) / std::max<int64_t>(BH, 1);
  const int64_t traffic_cap = N * elem / (64 * (C + 2));
  return static_cast<int>(std::clamp<int64_t>(std::min({want, tiles / 8, traffic_cap}), 1, 65535));
}

// Σ over the splits of sweep 1's partials, (BH, C·C + 2·C): the partials themselves for one split.
at::Tensor reduce_splits(const at::Tensor& partial, cudaStream_t stream) {
  const int splits = static_cast<int>(partial.size(0));
  if (splits == 1) return partial[0];
  at::Tensor sums = at::empty({partial.size(1), partial.size(2)}, partial.options());
  cuda::launch_reduce_splits(partial.data_ptr<float>(), splits, sums.numel(), sums.data_ptr<float>(), stream);
  return sums;
}

void check_cuda_args(const at::Tensor& q, const std::vector<int64_t>& keep) {
  TORCH_CHECK(q.is_cuda(), "ddsa cuda backend: tensors must be on a CUDA device, got ", q.device());
  kernel_dtype(q.scalar_type());
  TORCH_CHECK(q.size(2) <= cuda::kMaxChannels, "ddsa cuda backend: at most ", cuda::kMaxChannels,
              " channels per head, got C=", q.size(2));
  TORCH_CHECK(static_cast<int64_t>(keep.size()) <= cuda::kMaxBranches, "ddsa cuda backend: at most ",
              cuda::kMaxBranches, " branches, got ", keep.size());
  TORCH_CHECK(q.size(0) * q.size(1) <= 65535, "ddsa cuda backend: B*H must be at most 65535, got ",
              q.size(0) * q.size(1));
}

}  // namespace

Fwd forward_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                 const at::Tensor& temperature, const at::Tensor& weights, const std::vector<int64_t>& keep,
                 double eps) {
  detail::check_forward_args(q_in, k_in, v_in, temperature, weights, keep, eps);
  check_cuda_args(q_in, keep);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const at::Tensor q = detail::rows_unit_stride(q_in), k = detail::rows_unit_stride(k_in),
                   v = detail::rows_unit_stride(v_in);
  const int64_t B = q.size(0), H = q.size(1), C = q.size(2), N = q.size(3), BH = B * H;
  const int64_t nb = static_cast<int64_t>(keep.size());
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor out = at::empty({B, H, C, N}, q.options());
  at::Tensor probs = at::empty({B, H, nb, C, C}, f32);
  at::Tensor gram = at::empty({B, H, C, C}, f32);
  at::Tensor norms = at::empty({B, H, 2, C}, f32);
  if (BH == 0 || C == 0) return {out, probs, gram, norms};

  const at::Tensor temp = temperature.to(at::kFloat).contiguous();
  const at::Tensor w = weights.to(at::kFloat).contiguous();
  cuda::Keep kp{static_cast<int>(nb), {}};
  for (int64_t i = 0; i < nb; ++i) kp.k[i] = static_cast<int>(keep[i]);
  const auto dt = kernel_dtype(q.scalar_type());
  const int splits = gram_splits(BH, C, N, q.element_size(), q.get_device());
  at::Tensor partial = at::empty({splits, BH, C * C + 2 * C}, f32);
  at::Tensor attn = at::empty({BH, C, C}, f32);

  cuda::launch_gram_partial(dt, operand(q), operand(k), B, H, C, N, splits, /*with_norms=*/true,
                            rows_aligned(q) && rows_aligned(k), partial.data_ptr<float>(), stream);
  const at::Tensor sums = reduce_splits(partial, stream);
  cuda::launch_forward_epilogue(sums.data_ptr<float>(), BH, H, C, temp.data_ptr<float>(),
                                w.data_ptr<float>(), kp, static_cast<float>(eps), gram.data_ptr<float>(),
                                norms.data_ptr<float>(), probs.data_ptr<float>(), attn.data_ptr<float>(), stream);
  cuda::launch_forward_apply(dt, attn.data_ptr<float>(), operand(v), B, H, C, N, rows_aligned(v), out.data_ptr(),
                             stream);
  return {out, probs, gram, norms};
}

Bwd backward_cuda(const at::Tensor& grad_out, const at::Tensor& q_in, const at::Tensor& k_in,
                  const at::Tensor& v_in, const at::Tensor& temperature, const at::Tensor& weights,
                  const at::Tensor& probs_in, const at::Tensor& gram_in, const at::Tensor& norms_in,
                  const std::vector<int64_t>& keep, double eps) {
  detail::check_forward_args(q_in, k_in, v_in, temperature, weights, keep, eps);
  detail::check_backward_args(grad_out, q_in, probs_in, gram_in, norms_in, keep);
  check_cuda_args(q_in, keep);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const at::Tensor go = detail::rows_unit_stride(grad_out.to(q_in.scalar_type()));
  const at::Tensor q = detail::rows_unit_stride(q_in), k = detail::rows_unit_stride(k_in),
                   v = detail::rows_unit_stride(v_in);
  const int64_t B = q.size(0), H = q.size(1), C = q.size(2), N = q.size(3), BH = B * H;
  const int64_t nb = static_cast<int64_t>(keep.size());
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor dq = at::empty({B, H, C, N}, q.options());
  at::Tensor dk = at::empty({B, H, C, N}, q.options());
  at::Tensor dv = at::empty({B, H, C, N}, q.options());
  if (BH == 0 || C == 0) return {dq, dk, dv, at::zeros({H}, f32), at::zeros({nb}, f32)};

  const at::Tensor probs = probs_in.to(at::kFloat).contiguous(), gram = gram_in.to(at::kFloat).contiguous(),
                   norms = norms_in.to(at::kFloat).contiguous();
  const at::Tensor temp = temperature.to(at::kFloat).contiguous();
  const at::Tensor w = weights.to(at::kFloat).contiguous();
  const auto dt = kernel_dtype(q.scalar_type());
  const int splits = gram_splits(BH, C, N, q.element_size(), q.get_device());
  at::Tensor partial = at::empty({splits, BH, C * C + 2 * C}, f32);
  at::Tensor P = at::empty({BH, C, C}, f32);
  at::Tensor attn = at::empty({BH, C, C}, f32);
  at::Tensor dgg = at::empty({BH, C, C}, f32);
  at::Tensor scales = at::empty({BH, 2, C}, f32);
  at::Tensor dtemp_share = at::empty({B, H}, f32);
  at::Tensor dw_share = at::empty({BH, nb}, f32);

  cuda::launch_gram_partial(dt, operand(go), operand(v), B, H, C, N, splits, /*with_norms=*/false,
                            rows_aligned(go) && rows_aligned(v), partial.data_ptr<float>(), stream);
  const at::Tensor sums = reduce_splits(partial, stream);
  cuda::launch_backward_epilogue(sums.data_ptr<float>(), BH, H, C, temp.data_ptr<float>(),
                                 w.data_ptr<float>(), nb, static_cast<float>(eps), probs.data_ptr<float>(),
                                 gram.data_ptr<float>(), norms.data_ptr<float>(), P.data_ptr<float>(),
                                 attn.data_ptr<float>(), scales.data_ptr<float>(), dgg.data_ptr<float>(),
                                 dtemp_share.data_ptr<float>(), dw_share.data_ptr<float>(), stream);
  cuda::launch_backward_apply(dt, P.data_ptr<float>(), attn.data_ptr<float>(), scales.data_ptr<float>(), operand(q),
                              operand(k), operand(go), B, H, C, N, rows_aligned(q) && rows_aligned(k) && rows_aligned(go),
                              dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), stream);
  // Fixed-shape torch reductions over (b·h) shares: deterministic.
  return {dq, dk, dv, dtemp_share.sum(0), dw_share.sum(0)};
}

}  // namespace ddsa
