// CUDA kernels of the channel LayerNorm of NCHW maps: launchers on raw pointers.
//
// Host code (channel_norm_cuda.cpp) owns tensors, checks and allocation. A block owns
// kNormThreads consecutive pixels of one batch element, a thread one pixel, looping over the C
// channels (so a warp's loads of one channel are consecutive pixels: coalesced for NCHW memory).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace ddsa::cuda {

constexpr int kNormThreads = 128;
constexpr int kNormWarps = kNormThreads / 32;

// A (B, C, H, W) operand with element strides.
struct NormOperand {
  const void* ptr;
  int64_t sb, sc, sh, sw;
};

// Rows of the backward's partial sums: one per warp of every block.
inline int64_t channel_norm_partial_rows(int64_t B, int64_t N) {
  return B * ((N + kNormThreads - 1) / kNormThreads) * kNormWarps;
}

// y (B, C, H·W contiguous, dtype), mean and rstd (B, H·W) float32; w, b (C,) float32 (b may be null).
void launch_channel_norm_forward(DType dtype, NormOperand x, int64_t B, int64_t C, int64_t H, int64_t W,
                                 const float* w, const float* b, float eps, bool subtract_mean, void* y, float* mean,
                                 float* rstd, cudaStream_t stream);

// dx (B, C, H·W contiguous, dtype); partial (channel_norm_partial_rows(B, H·W), 2, C) float32:
// per warp, Σ dy·x̂ (or Σ dy·x·rstd) and Σ dy per channel over its 32 pixels.
void launch_channel_norm_backward(DType dtype, NormOperand grad_y, NormOperand x, int64_t B, int64_t C, int64_t H,
                                  int64_t W, const float* w, const float* mean, const float* rstd, bool subtract_mean,
                                  void* dx, float* partial, cudaStream_t stream);

}  // namespace ddsa::cuda
