// The split reduction of sweep 1 and the C×C epilogues.
//
// reduce_splits_kernel sums the per-split partials of sweep 1 with a fixed-shape tree: 32 lanes
// per element each add every 32nd split serially, then a 5-level tree in shared memory. The
// order of every addition depends only on the split count, so results are bitwise reproducible;
// the dependent chain is ⌈S/32⌉ + 5 adds instead of S (S = 264 on a 132-SM GPU at B·H = 1).
//
// The epilogues, one block per (b, h), one warp per row: the same math as csrc/cpu/epilogue.h
// and ddsa_kernels/epilogue.py, on the reduced sums. The per-row k-th largest score is found in shared memory by counting (a value x
// of the row is the k-th largest iff fewer than k values are > x and at least k are ≥ x), so
// ties at the threshold are all kept, as in the reference.
#include <math.h>

#include "device_utils.cuh"

namespace ddsa::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kCols = kMaxChannels / 32;  // columns per lane: c = lane + 32·m
constexpr int kReduceLanes = 32;          // splits added side by side per element

// sums[e] = Σ_s partial[s·count + e]. Block (32 elements, kReduceLanes lanes): lane ty adds
// splits ty, ty + 32, ... (coalesced: a warp reads 32 consecutive elements of one split), then
// the lanes are folded pairwise (ty += ty + 16, + 8, ...), the same tree every run.
__global__ void __launch_bounds__(32 * kReduceLanes)
    reduce_splits_kernel(const float* __restrict__ partial, int splits, int64_t count, float* __restrict__ sums) {
  __shared__ float lane_sums[kReduceLanes][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  float s = 0.f;
  if (e < count) {
#pragma unroll 4
    for (int sp = ty; sp < splits; sp += kReduceLanes) s += partial[sp * count + e];
  }
  lane_sums[ty][tx] = s;
  __syncthreads();
#pragma unroll
  for (int half = kReduceLanes / 2; half > 0; half >>= 1) {
    if (ty < half) lane_sums[ty][tx] += lane_sums[ty + half][tx];
    __syncthreads();
  }
  if (ty == 0 && e < count) sums[e] = lane_sums[0][tx];
}

__global__ void __launch_bounds__(kWarps * 32)
    forward_epilogue_kernel(const float* __restrict__ sums, int H, int C,
                            const float* __restrict__ temperature, const float* __restrict__ weights, Keep keep,
                            float eps, float* __restrict__ gram, float* __restrict__ norms,
                            float* __restrict__ probs, float* __restrict__ attn) {
  __shared__ float norm_s[2 * kMaxChannels];
  __shared__ float rows_s[kWarps][kMaxChannels];
  const int bh = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float* part = sums + bh * (static_cast<int64_t>(C) * C + 2 * C);

  for (int i = tid; i < 2 * C; i += blockDim.x) {
    const float n = sqrtf(part[C * C + i]);
    norm_s[i] = n;
    norms[static_cast<int64_t>(bh) * 2 * C + i] = n;
  }
  __syncthreads();

  const float tau = temperature[bh % H];
  float* srow = rows_s[warp];
  for (int r = warp; r < C; r += kWarps) {
    const float nq = fmaxf(norm_s[r], eps);
    const int64_t row_off = (static_cast<int64_t>(bh) * C + r) * C;
    float row_max = -INFINITY;
    for (int c = lane; c < C; c += 32) {
      const float g = part[r * C + c] / (nq * fmaxf(norm_s[C + c], eps));
      gram[row_off + c] = g;
      const float s = g * tau;
      srow[c] = s;
      row_max = fmaxf(row_max, s);
    }
    row_max = warp_max(row_max);
    __syncwarp();

    float a_acc[kCols];
#pragma unroll
    for (int m = 0; m < kCols; ++m) a_acc[m] = 0.f;
    for (int i = 0; i < keep.n; ++i) {
      const int kc = keep.k[i];
      float threshold = -INFINITY;
      if (kc > 0 && kc < C) {
        float candidate = -INFINITY;
        for (int c = lane; c < C; c += 32) {
          const float x = srow[c];
          int greater = 0, at_least = 0;
          for (int j = 0; j < C; ++j) {
            const float y = srow[j];
            greater += y > x;
            at_least += y >= x;
          }
          if (greater < kc && at_least >= kc) candidate = x;
        }
        threshold = warp_max(candidate);
      }
      float e[kCols];
      float sum = 0.f;
#pragma unroll
      for (int m = 0; m < kCols; ++m) {
        const int c = lane + 32 * m;
        e[m] = 0.f;
        if (c < C && srow[c] >= threshold) e[m] = expf(srow[c] - row_max);
        sum += e[m];
      }
      sum = warp_sum(sum);
      const float inv = 1.f / sum;
      const float w = weights[i];
      float* pr = probs + ((static_cast<int64_t>(bh) * keep.n + i) * C + r) * C;
#pragma unroll
      for (int m = 0; m < kCols; ++m) {
        const int c = lane + 32 * m;
        if (c < C) {
          const float p = e[m] * inv;
          pr[c] = p;
          a_acc[m] += w * p;
        }
      }
    }
#pragma unroll
    for (int m = 0; m < kCols; ++m) {
      const int c = lane + 32 * m;
      if (c < C) attn[row_off + c] = a_acc[m];
    }
    __syncwarp();
  }
}

__global__ void __launch_bounds__(kWarps * 32)
    backward_epilogue_kernel(const float* __restrict__ sums, int H, int C,
                             const float* __restrict__ temperature, const float* __restrict__ weights, int nb,
                             float eps, const float* __restrict__ probs, const float* __restrict__ gram,
                             const float* __restrict__ norms, float* __restrict__ P, float* __restrict__ attn,
                             float* __restrict__ scales, float* __restrict__ dgg, float* __restrict__ dtemp_share,
                             float* __restrict__ dw_share) {
  __shared__ float norm_s[2 * kMaxChannels];
  __shared__ float warp_dtemp[kWarps];
  __shared__ float warp_dw[kWarps][kMaxBranches];
  const int bh = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float* part = sums + bh * (static_cast<int64_t>(C) * C + 2 * C);

  for (int i = tid; i < 2 * C; i += blockDim.x) norm_s[i] = norms[static_cast<int64_t>(bh) * 2 * C + i];
  if (tid < kWarps) warp_dtemp[tid] = 0.f;
  for (int i = tid; i < kWarps * kMaxBranches; i += blockDim.x) warp_dw[i / kMaxBranches][i % kMaxBranches] = 0.f;
  __syncthreads();

  const float tau = temperature[bh % H];
  for (int r = warp; r < C; r += kWarps) {
    const int64_t row_off = (static_cast<int64_t>(bh) * C + r) * C;
    float dA[kCols], ds[kCols], at[kCols];
#pragma unroll
    for (int m = 0; m < kCols; ++m) {
      const int c = lane + 32 * m;
      dA[m] = c < C ? part[r * C + c] : 0.f;
      ds[m] = 0.f;
      at[m] = 0.f;
    }
    for (int i = 0; i < nb; ++i) {
      const float w = weights[i];
      const float* pr = probs + ((static_cast<int64_t>(bh) * nb + i) * C + r) * C;
      float a[kCols];
      float dot = 0.f;
#pragma unroll
      for (int m = 0; m < kCols; ++m) {
        const int c = lane + 32 * m;
        a[m] = c < C ? pr[c] : 0.f;
        dot += dA[m] * a[m];
      }
      dot = warp_sum(dot);
      if (lane == 0) warp_dw[warp][i] += dot;
#pragma unroll
      for (int m = 0; m < kCols; ++m) {
        ds[m] += w * a[m] * (dA[m] - dot);
        at[m] += w * a[m];
      }
    }
    const float nq = fmaxf(norm_s[r], eps);
    float dt = 0.f, row = 0.f;
#pragma unroll
    for (int m = 0; m < kCols; ++m) {
      const int c = lane + 32 * m;
      if (c < C) {
        const float g = gram[row_off + c];
        dt += ds[m] * g;
        const float dg = tau * ds[m];
        row += dg * g;
        dgg[row_off + c] = dg * g;
        P[row_off + c] = dg / (nq * fmaxf(norm_s[C + c], eps));
        attn[row_off + c] = at[m];
      }
    }
    dt = warp_sum(dt);
    row = warp_sum(row);
    if (lane == 0) {
      warp_dtemp[warp] += dt;
      // F.normalize divides by max(‖x‖, eps): rows below eps get no projection term.
      scales[static_cast<int64_t>(bh) * 2 * C + r] = norm_s[r] >= eps ? row / (nq * nq) : 0.f;
    }
  }
  __syncthreads();  // dgg of every row written (global writes are visible block-wide after this)

  for (int c = tid; c < C; c += blockDim.x) {
    float col = 0.f;
    for (int r = 0; r < C; ++r) col += dgg[(static_cast<int64_t>(bh) * C + r) * C + c];
    const float nk = fmaxf(norm_s[C + c], eps);
    scales[static_cast<int64_t>(bh) * 2 * C + C + c] = norm_s[C + c] >= eps ? col / (nk * nk) : 0.f;
  }
  if (tid == 0) {
    float dt = 0.f;
    for (int w = 0; w < kWarps; ++w) dt += warp_dtemp[w];
    dtemp_share[bh] = dt;
    for (int i = 0; i < nb; ++i) {
      float dw = 0.f;
      for (int w = 0; w < kWarps; ++w) dw += warp_dw[w][i];
      dw_share[static_cast<int64_t>(bh) * nb + i] = dw;
    }
  }
}

}  // namespace

void launch_reduce_splits(const float* partial, int splits, int64_t count, float* sums, cudaStream_t stream) {
  if (count == 0) return;
  const dim3 block(32, kReduceLanes);
  reduce_splits_kernel<<<static_cast<unsigned>(ceil_div(count, 32)), block, 0, stream>>>(partial, splits, count,
                                                                                          sums);
  check_launch("reduce_splits_kernel");
}

void launch_forward_epilogue(const float* sums, int BH, int H, int C, const float* temperature,
                             const float* weights, Keep keep, float eps, float* gram, float* norms, float* probs,
                             float* attn, cudaStream_t stream) {
  if (C > kMaxChannels || keep.n > kMaxBranches)
    throw std::runtime_error("ddsa cuda: epilogue supports C <= 128 and at most 16 branches");
  forward_epilogue_kernel<<<BH, kWarps * 32, 0, stream>>>(sums, H, C, temperature, weights, keep, eps, gram, norms,
                                                          probs, attn);
  check_launch("forward_epilogue_kernel");
}

void launch_backward_epilogue(const float* sums, int BH, int H, int C, const float* temperature,
                              const float* weights, int nb, float eps, const float* probs, const float* gram,
                              const float* norms, float* P, float* attn, float* scales, float* dgg,
                              float* dtemp_share, float* dw_share, cudaStream_t stream) {
  if (C > kMaxChannels || nb > kMaxBranches)
    throw std::runtime_error("ddsa cuda: epilogue supports C <= 128 and at most 16 branches");
  backward_epilogue_kernel<<<BH, kWarps * 32, 0, stream>>>(sums, H, C, temperature, weights, nb, eps, probs, gram,
                                                           norms, P, attn, scales, dgg, dtemp_share, dw_share);
  check_launch("backward_epilogue_kernel");
}

}  // namespace ddsa::cuda
