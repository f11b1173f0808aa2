// CUDA kernels of the channel LayerNorm (see channel_norm.cuh): a thread per pixel, looping over
// channels; two-pass statistics (mean, then centred variance), fp32 accumulation.
//
// The fp32 mean μ is exact only to half an ulp of |μ|, a sizeable part of x − μ on a near-constant
// pixel far from zero (2 ± 1e-5): x − μ is corrected by its residual mean r = mean_c (x − μ) wherever
// x̂ is formed, in the forward and the backward (which gets r from the same pass as its other sums),
// and the saved mean is μ + r.
#include "channel_norm.cuh"
#include "device_utils.cuh"

namespace ddsa::cuda {
namespace {

struct Pixel {
  int64_t n;     // pixel index in [0, H·W)
  bool valid;
};

__device__ __forceinline__ Pixel pixel_of_thread(int64_t N) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kNormThreads + threadIdx.x;
  return {n, n < N};
}

__device__ __forceinline__ int64_t offset(const NormOperand& t, int64_t b, int64_t n, int64_t W) {
  return b * t.sb + (n / W) * t.sh + (n % W) * t.sw;
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads) forward_kernel(NormOperand x, int64_t C, int64_t N, int64_t W,
                                                               const float* __restrict__ w,
                                                               const float* __restrict__ bias, float eps,
                                                               bool subtract_mean, T* __restrict__ y,
                                                               float* __restrict__ mean_out,
                                                               float* __restrict__ rstd_out) {
  const int64_t b = blockIdx.y;
  const Pixel p = pixel_of_thread(N);
  if (!p.valid) return;
  const T* xp = static_cast<const T*>(x.ptr) + offset(x, b, p.n, W);
  float sum = 0.f;
  for (int64_t c = 0; c < C; ++c) sum += to_float<T>(xp[c * x.sc]);
  const float mean = sum / static_cast<float>(C);
  float sq = 0.f, sd = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float d = to_float<T>(xp[c * x.sc]) - mean;
    sd += d;
    sq += d * d;
  }
  const float residual = sd / static_cast<float>(C);  // a constant pixel: every d equals it exactly
  const float rstd = 1.f / sqrtf(fmaxf(sq / static_cast<float>(C) - residual * residual, 0.f) + eps);
  T* yp = y + b * C * N + p.n;
  for (int64_t c = 0; c < C; ++c) {
    const float v = to_float<T>(xp[c * x.sc]);
    const float out =
        subtract_mean ? ((v - mean) - residual) * rstd * w[c] + (bias ? bias[c] : 0.f) : v * rstd * w[c];
    yp[c * N] = from_float<T>(out);
  }
  mean_out[b * N + p.n] = mean + residual;
  rstd_out[b * N + p.n] = rstd;
}

template <typename T>
// min 4 blocks/SM: a 128-register cap; with the default ptxas chose 32 registers on sm_80 and spilled.
__global__ void __launch_bounds__(kNormThreads, 4) backward_kernel(NormOperand grad_y, NormOperand x, int64_t C,
                                                                int64_t N, int64_t W, const float* __restrict__ w,
                                                                const float* __restrict__ mean_in,
                                                                const float* __restrict__ rstd_in,
                                                                bool subtract_mean, T* __restrict__ dx,
                                                                float* __restrict__ partial) {
  const int64_t b = blockIdx.y;
  const Pixel p = pixel_of_thread(N);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // Out-of-range threads stay (they join the warp sums) with rstd = 0: every term they add is 0.
  const int64_t n = p.valid ? p.n : 0;
  const T* xp = static_cast<const T*>(x.ptr) + offset(x, b, n, W);
  const T* gp = static_cast<const T*>(grad_y.ptr) + offset(grad_y, b, n, W);
  const float mean = p.valid ? mean_in[b * N + n] : 0.f;
  const float rstd = p.valid ? rstd_in[b * N + n] : 0.f;
  float sum_g = 0.f, sum_gx = 0.f, sum_d = 0.f;  // Σ g, Σ g·(x − μ) (or Σ g·x), Σ (x − μ)
  for (int64_t c = 0; c < C; ++c) {
    const float g = to_float<T>(gp[c * grad_y.sc]) * w[c];
    const float v = to_float<T>(xp[c * x.sc]);
    const float d = v - mean;
    sum_g += g;
    sum_d += d;
    sum_gx += g * (subtract_mean ? d : v);
  }
  const float inv_c = 1.f / static_cast<float>(C);
  const float residual = sum_d / static_cast<float>(C);
  const float mean_g = subtract_mean ? sum_g * inv_c : 0.f;
  // mean_c g·x̂ with x̂ = (x − μ − r)·rstd (or g·x·rstd without the mean)
  const float mean_gx = (subtract_mean ? sum_gx - residual * sum_g : sum_gx) * rstd * inv_c;
  T* dxp = dx + b * C * N + n;
  const int64_t row = (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * kNormWarps + warp;
  float* part = partial + row * 2 * C;
  for (int64_t c = 0; c < C; ++c) {
    const float dy = p.valid ? to_float<T>(gp[c * grad_y.sc]) : 0.f;
    const float v = to_float<T>(xp[c * x.sc]);
    const float xh = ((v - mean) - residual) * rstd;
    const float g = dy * w[c];
    if (p.valid) dxp[c * N] = from_float<T>((g - mean_g - xh * mean_gx) * rstd);
    const float dw = warp_sum(dy * (subtract_mean ? xh : v * rstd));
    const float db = warp_sum(dy);
    if (lane == 0) {
      part[c] = dw;
      part[C + c] = db;
    }
  }
}

template <typename T>
void forward_typed(NormOperand x, int64_t B, int64_t C, int64_t H, int64_t W, const float* w, const float* b,
                   float eps, bool subtract_mean, void* y, float* mean, float* rstd, cudaStream_t stream) {
  const int64_t N = H * W;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kNormThreads)), static_cast<unsigned>(B));
  forward_kernel<T><<<grid, kNormThreads, 0, stream>>>(x, C, N, W, w, b, eps, subtract_mean, static_cast<T*>(y),
                                                       mean, rstd);
  check_launch("channel_norm forward");
}

template <typename T>
void backward_typed(NormOperand grad_y, NormOperand x, int64_t B, int64_t C, int64_t H, int64_t W, const float* w,
                    const float* mean, const float* rstd, bool subtract_mean, void* dx, float* partial,
                    cudaStream_t stream) {
  const int64_t N = H * W;
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kNormThreads)), static_cast<unsigned>(B));
  backward_kernel<T><<<grid, kNormThreads, 0, stream>>>(grad_y, x, C, N, W, w, mean, rstd, subtract_mean,
                                                        static_cast<T*>(dx), partial);
  check_launch("channel_norm backward");
}

}  // namespace

void launch_channel_norm_forward(DType dtype, NormOperand x, int64_t B, int64_t C, int64_t H, int64_t W,
                                 const float* w, const float* b, float eps, bool subtract_mean, void* y, float* mean,
                                 float* rstd, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return forward_typed<float>(x, B, C, H, W, w, b, eps, subtract_mean, y, mean, rstd, stream);
    case DType::kFloat16: return forward_typed<__half>(x, B, C, H, W, w, b, eps, subtract_mean, y, mean, rstd, stream);
    case DType::kBFloat16:
      return forward_typed<__nv_bfloat16>(x, B, C, H, W, w, b, eps, subtract_mean, y, mean, rstd, stream);
  }
}

void launch_channel_norm_backward(DType dtype, NormOperand grad_y, NormOperand x, int64_t B, int64_t C, int64_t H,
                                  int64_t W, const float* w, const float* mean, const float* rstd, bool subtract_mean,
                                  void* dx, float* partial, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return backward_typed<float>(grad_y, x, B, C, H, W, w, mean, rstd, subtract_mean, dx, partial, stream);
    case DType::kFloat16:
      return backward_typed<__half>(grad_y, x, B, C, H, W, w, mean, rstd, subtract_mean, dx, partial, stream);
    case DType::kBFloat16:
      return backward_typed<__nv_bfloat16>(grad_y, x, B, C, H, W, w, mean, rstd, subtract_mean, dx, partial, stream);
  }
}

}  // namespace ddsa::cuda
