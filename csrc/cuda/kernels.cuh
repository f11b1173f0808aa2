// CUDA kernels of the fused dual attention op: launchers on raw pointers, shared helpers.
//
// Host code (dual_attention_cuda.cpp) owns tensors, checks and allocation; the .cu files only
// see pointers, strides and a stream, so they compile with the CUDA headers alone.
//
// Forward:  gram_partial (split over N, per-split partial q kᵀ and squared norms)
//           → reduce_splits (fixed-shape tree over the splits; skipped for one split)
//           → forward_epilogue (normalise, softmaxes, attn)
//           → forward_apply (out = attn · v, tile by tile over N).
// Backward: gram_partial on (dO, v) → reduce_splits → backward_epilogue (P, row scales, attn, dτ/dw shares)
//           → backward_apply (dq, dk, dv in one pass over q, k, dO).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ddsa::cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

constexpr int kMaxChannels = 128;  // rows of the C×C tiles held per block
constexpr int kMaxBranches = 16;

// A (B, H, C, N) operand with unit stride along N (element strides for b, h, c).
struct Operand {
  const void* ptr;
  int64_t sb, sh, sc;
};

struct Keep {
  int n;                 // number of branches
  int k[kMaxBranches];   // keep-count per branch, 0 = dense
};

// Pixels per tile of the Gram sweep for C channels (a split covers whole tiles).
int gram_tile_pixels(int C);

// partial: (splits, B·H, C·C + 2·C) float32 — X Yᵀ and (with_norms) ‖x_r‖², ‖y_r‖².
void launch_gram_partial(DType dtype, Operand x, Operand y, int B, int H, int C, int64_t N, int splits,
                         bool with_norms, bool vector_loads, float* partial, cudaStream_t stream);

// sums (count) = Σ_s partial (splits, count), summed in a fixed order (bitwise reproducible).
void launch_reduce_splits(const float* partial, int splits, int64_t count, float* sums, cudaStream_t stream);

// From the sums (BH, C·C + 2·C) of sweep 1: gram (BH, C, C), norms (BH, 2, C),
// probs (BH, nb, C, C), attn (BH, C, C).
void launch_forward_epilogue(const float* sums, int BH, int H, int C, const float* temperature,
                             const float* weights, Keep keep, float eps, float* gram, float* norms, float* probs,
                             float* attn, cudaStream_t stream);

// out (BH, C, N contiguous, dtype) = attn · v.
void launch_forward_apply(DType dtype, const float* attn, Operand v, int B, int H, int C, int64_t N,
                          bool vector_loads, void* out, cudaStream_t stream);

// From the dA sums (BH, C·C + 2·C) of sweep 1, probs, gram, norms: P (BH, C, C), attn (BH, C, C),
// scales (BH, 2, C) = (scale_q, scale_k), dgg scratch (BH, C, C), dtemp_share (BH),
// dw_share (BH, nb).
void launch_backward_epilogue(const float* sums, int BH, int H, int C, const float* temperature,
                              const float* weights, int nb, float eps, const float* probs, const float* gram,
                              const float* norms, float* P, float* attn, float* scales, float* dgg,
                              float* dtemp_share, float* dw_share, cudaStream_t stream);

// dq = P k − scale_q ⊙ q, dk = Pᵀ q − scale_k ⊙ k, dv = attnᵀ dO; outputs (BH, C, N contiguous).
void launch_backward_apply(DType dtype, const float* P, const float* attn, const float* scales, Operand q,
                           Operand k, Operand grad_out, int B, int H, int C, int64_t N, bool vector_loads, void* dq,
                           void* dk, void* dv, cudaStream_t stream);

}  // namespace ddsa::cuda
