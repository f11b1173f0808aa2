// Sweep 1 (both directions): per (split of N, b·h) block, the partial X Yᵀ (C×C) and the
// partial squared row norms, in float32. Splits are reduced later in a fixed order (epilogue
// kernels): no atomics, bitwise-reproducible results.
#include "device_utils.cuh"

namespace ddsa::cuda {
namespace {

constexpr int kThreads = 16;  // the block is kThreads × kThreads; thread (ty, tx) owns rows
                              // ty + 16·i and columns tx + 16·j of the C×C result

// R: rows (and columns) per thread; C ≤ 16·R.
template <typename T, int R>
__global__ void __launch_bounds__(kThreads* kThreads)
    gram_partial_kernel(Operand x, Operand y, int H, int C, int64_t N, int splits, bool with_norms,
                        bool vector_loads, float* __restrict__ partial) {
  constexpr int ROWS = kThreads * R;
  constexpr int LD = kGramTile + 1;  // padding: column reads hit distinct banks
  __shared__ float xs[ROWS * LD];
  __shared__ float ys[ROWS * LD];

  const int split = blockIdx.x;
  const int bh = blockIdx.y;
  const int b = bh / H, h = bh % H;
  const T* xp = static_cast<const T*>(x.ptr) + b * x.sb + h * x.sh;
  const T* yp = static_cast<const T*>(y.ptr) + b * y.sb + h * y.sh;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kThreads + tx;

  const int64_t tiles = ceil_div(N, kGramTile);
  const int64_t t_begin = split * tiles / splits, t_end = (split + 1) * tiles / splits;

  float acc[R][R];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < R; ++j) acc[i][j] = 0.f;
  float sq = 0.f;  // thread tid < C: ‖x_tid‖²; C ≤ tid < 2C: ‖y_(tid−C)‖²

  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t n0 = t * kGramTile;
    load_tile<T, kGramTile>(xs, LD, xp, x.sc, C, ROWS, n0, N, vector_loads);
    load_tile<T, kGramTile>(ys, LD, yp, y.sc, C, ROWS, n0, N, vector_loads);
    __syncthreads();
    if (with_norms && tid < 2 * C) {
      const float* row = tid < C ? xs + tid * LD : ys + (tid - C) * LD;
#pragma unroll 8
      for (int n = 0; n < kGramTile; ++n) sq += row[n] * row[n];
    }
#pragma unroll 4
    for (int n = 0; n < kGramTile; ++n) {
      float a[R], c[R];
#pragma unroll
      for (int i = 0; i < R; ++i) a[i] = xs[(ty + kThreads * i) * LD + n];
#pragma unroll
      for (int j = 0; j < R; ++j) c[j] = ys[(tx + kThreads * j) * LD + n];
#pragma unroll
      for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < R; ++j) acc[i][j] = fmaf(a[i], c[j], acc[i][j]);
    }
    __syncthreads();
  }

  const int64_t stride = static_cast<int64_t>(C) * C + 2 * C;
  float* out = partial + (static_cast<int64_t>(split) * gridDim.y + bh) * stride;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int r = ty + kThreads * i;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int c = tx + kThreads * j;
      if (r < C && c < C) out[r * C + c] = acc[i][j];
    }
  }
  if (tid < 2 * C) out[static_cast<int64_t>(C) * C + tid] = with_norms ? sq : 0.f;
}

template <typename T, int R>
void launch_typed(Operand x, Operand y, int B, int H, int C, int64_t N, int splits, bool with_norms,
                  bool vector_loads, float* partial, cudaStream_t stream) {
  const dim3 grid(splits, B * H);
  const dim3 block(kThreads, kThreads);
  gram_partial_kernel<T, R><<<grid, block, 0, stream>>>(x, y, H, C, N, splits, with_norms, vector_loads, partial);
  check_launch("gram_partial_kernel");
}

template <typename T>
void launch_rows(Operand x, Operand y, int B, int H, int C, int64_t N, int splits, bool with_norms, bool vec,
                 float* partial, cudaStream_t s) {
  if (C <= 16) return launch_typed<T, 1>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 32) return launch_typed<T, 2>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 48) return launch_typed<T, 3>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 64) return launch_typed<T, 4>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 96) return launch_typed<T, 6>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 128) return launch_typed<T, 8>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  throw std::runtime_error("ddsa cuda: gram sweep supports C <= 128 channels per head");
}

}  // namespace

void launch_gram_partial(DType dtype, Operand x, Operand y, int B, int H, int C, int64_t N, int splits,
                         bool with_norms, bool vector_loads, float* partial, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch_rows<float>(x, y, B, H, C, N, splits, with_norms, vector_loads, partial, stream);
    case DType::kFloat16:
      return launch_rows<__half>(x, y, B, H, C, N, splits, with_norms, vector_loads, partial, stream);
    case DType::kBFloat16:
      return launch_rows<__nv_bfloat16>(x, y, B, H, C, N, splits, with_norms, vector_loads, partial, stream);
  }
}

}  // namespace ddsa::cuda
