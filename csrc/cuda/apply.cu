// Sweep 2 of both directions: C×C matrices applied to C-row tiles of N, one block per
// (tile of kApplyTile pixels, b·h). Inputs are staged in shared memory as float32 (16-byte
// loads when aligned); the C×C matrices are read through the read-only cache (every lane of a
// warp reads the same element: a broadcast). Outputs are written coalesced along N.
#include "device_utils.cuh"

namespace ddsa::cuda {
namespace {

constexpr int kRowGroups = 8;  // block = kApplyTile × kRowGroups threads; rows ty + 8·i

template <typename T, int RPT>
__global__ void __launch_bounds__(kApplyTile* kRowGroups)
    forward_apply_kernel(const float* __restrict__ attn, Operand v, int H, int C, int64_t N, bool vector_loads,
                         T* __restrict__ out) {
  extern __shared__ float smem[];
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kApplyTile;
  const T* vp = static_cast<const T*>(v.ptr) + b * v.sb + h * v.sh;
  load_tile<T, kApplyTile>(smem, kApplyTile, vp, v.sc, C, C, n0, N, vector_loads);
  __syncthreads();

  const float* A = attn + static_cast<int64_t>(bh) * C * C;
  float acc[RPT];
#pragma unroll
  for (int i = 0; i < RPT; ++i) acc[i] = 0.f;
  for (int c = 0; c < C; ++c) {
    const float x = smem[c * kApplyTile + tx];
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const int r = ty + kRowGroups * i;
      if (r < C) acc[i] = fmaf(__ldg(A + r * C + c), x, acc[i]);
    }
  }
  const int64_t n = n0 + tx;
  if (n < N) {
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const int r = ty + kRowGroups * i;
      if (r < C) out[(static_cast<int64_t>(bh) * C + r) * N + n] = from_float<T>(acc[i]);
    }
  }
}

template <typename T, int RPT>
__global__ void __launch_bounds__(kApplyTile* kRowGroups)
    backward_apply_kernel(const float* __restrict__ P, const float* __restrict__ attn,
                          const float* __restrict__ scales, Operand q, Operand k, Operand go, int H, int C, int64_t N,
                          bool vector_loads, T* __restrict__ dq, T* __restrict__ dk, T* __restrict__ dv) {
  extern __shared__ float smem[];
  float* qs = smem;
  float* ks = smem + C * kApplyTile;
  float* gs = smem + 2 * C * kApplyTile;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kApplyTile;
  load_tile<T, kApplyTile>(qs, kApplyTile, static_cast<const T*>(q.ptr) + b * q.sb + h * q.sh, q.sc, C, C, n0, N,
                           vector_loads);
  load_tile<T, kApplyTile>(ks, kApplyTile, static_cast<const T*>(k.ptr) + b * k.sb + h * k.sh, k.sc, C, C, n0, N,
                           vector_loads);
  load_tile<T, kApplyTile>(gs, kApplyTile, static_cast<const T*>(go.ptr) + b * go.sb + h * go.sh, go.sc, C, C, n0,
                           N, vector_loads);
  __syncthreads();

  const int64_t mat = static_cast<int64_t>(bh) * C * C;
  const float* Pm = P + mat;
  const float* Am = attn + mat;
  float aq[RPT], ak[RPT], av[RPT];
#pragma unroll
  for (int i = 0; i < RPT; ++i) aq[i] = ak[i] = av[i] = 0.f;
  for (int c = 0; c < C; ++c) {
    const float xq = qs[c * kApplyTile + tx];
    const float xk = ks[c * kApplyTile + tx];
    const float xg = gs[c * kApplyTile + tx];
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const int r = ty + kRowGroups * i;
      if (r < C) {
        aq[i] = fmaf(__ldg(Pm + r * C + c), xk, aq[i]);  // (P k)_r
        ak[i] = fmaf(__ldg(Pm + c * C + r), xq, ak[i]);  // (Pᵀ q)_r
        av[i] = fmaf(__ldg(Am + c * C + r), xg, av[i]);  // (attnᵀ dO)_r
      }
    }
  }
  const int64_t n = n0 + tx;
  if (n < N) {
    const float* sq = scales + static_cast<int64_t>(bh) * 2 * C;
    const float* sk = sq + C;
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const int r = ty + kRowGroups * i;
      if (r < C) {
        const int64_t o = (static_cast<int64_t>(bh) * C + r) * N + n;
        dq[o] = from_float<T>(aq[i] - sq[r] * qs[r * kApplyTile + tx]);
        dk[o] = from_float<T>(ak[i] - sk[r] * ks[r * kApplyTile + tx]);
        dv[o] = from_float<T>(av[i]);
      }
    }
  }
}

// Calls f(std::integral_constant<int, RPT>) with the smallest rows-per-thread bucket for C.
template <typename F>
void with_rows_per_thread(int C, F&& f) {
  if (C <= 16) return f(std::integral_constant<int, 2>());
  if (C <= 32) return f(std::integral_constant<int, 4>());
  if (C <= 48) return f(std::integral_constant<int, 6>());
  if (C <= 64) return f(std::integral_constant<int, 8>());
  if (C <= 96) return f(std::integral_constant<int, 12>());
  if (C <= 128) return f(std::integral_constant<int, 16>());
  throw std::runtime_error("ddsa cuda: apply sweep supports C <= 128 channels per head");
}

template <typename T>
void forward_apply_typed(const float* attn, Operand v, int B, int H, int C, int64_t N, bool vec, void* out,
                         cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kApplyTile)), B * H);
  const dim3 block(kApplyTile, kRowGroups);
  const size_t smem = sizeof(float) * C * kApplyTile;
  with_rows_per_thread(C, [&](auto rpt) {
    forward_apply_kernel<T, decltype(rpt)::value>
        <<<grid, block, smem, stream>>>(attn, v, H, C, N, vec, static_cast<T*>(out));
  });
  check_launch("forward_apply_kernel");
}

template <typename T>
void backward_apply_typed(const float* P, const float* attn, const float* scales, Operand q, Operand k, Operand go,
                          int B, int H, int C, int64_t N, bool vec, void* dq, void* dk, void* dv,
                          cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(N, kApplyTile)), B * H);
  const dim3 block(kApplyTile, kRowGroups);
  const size_t smem = 3 * sizeof(float) * C * kApplyTile;  // ≤ 48 KiB for C ≤ 128
  with_rows_per_thread(C, [&](auto rpt) {
    backward_apply_kernel<T, decltype(rpt)::value><<<grid, block, smem, stream>>>(
        P, attn, scales, q, k, go, H, C, N, vec, static_cast<T*>(dq), static_cast<T*>(dk), static_cast<T*>(dv));
  });
  check_launch("backward_apply_kernel");
}

}  // namespace

void launch_forward_apply(DType dtype, const float* attn, Operand v, int B, int H, int C, int64_t N,
                          bool vector_loads, void* out, cudaStream_t stream) {
  if (N == 0) return;
  switch (dtype) {
    case DType::kFloat32: return forward_apply_typed<float>(attn, v, B, H, C, N, vector_loads, out, stream);
    case DType::kFloat16: return forward_apply_typed<__half>(attn, v, B, H, C, N, vector_loads, out, stream);
    case DType::kBFloat16:
      return forward_apply_typed<__nv_bfloat16>(attn, v, B, H, C, N, vector_loads, out, stream);
  }
}

void launch_backward_apply(DType dtype, const float* P, const float* attn, const float* scales, Operand q,
                           Operand k, Operand grad_out, int B, int H, int C, int64_t N, bool vector_loads, void* dq,
                           void* dk, void* dv, cudaStream_t stream) {
  if (N == 0) return;
  switch (dtype) {
    case DType::kFloat32:
      return backward_apply_typed<float>(P, attn, scales, q, k, grad_out, B, H, C, N, vector_loads, dq, dk, dv,
                                         stream);
    case DType::kFloat16:
      return backward_apply_typed<__half>(P, attn, scales, q, k, grad_out, B, H, C, N, vector_loads, dq, dk, dv,
                                          stream);
    case DType::kBFloat16:
      return backward_apply_typed<__nv_bfloat16>(P, attn, scales, q, k, grad_out, B, H, C, N, vector_loads, dq, dk,
                                                 dv, stream);
  }
}

}  // namespace ddsa::cuda
