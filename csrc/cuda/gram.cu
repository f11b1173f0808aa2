// Sweep 1 (both directions): per (split of N, b·h) block, the partial X Yᵀ (C×C) and the
// partial squared row norms, in float32. Splits are summed later by reduce_splits_kernel in a
// fixed order: no atomics, bitwise-reproducible results.
//
// Structure. 256 threads; the C×C result is covered by TG×TG threads holding an R×R register
// tile each (rows ty·R + i of X, rows tx·R + j of Y, CP = TG·R ≥ C), and the 256/(TG·TG) = KG
// thread groups ("k-groups") split the pixels of every tile between them:
//   C ≤ 16: R 2, TG 8, KG 4;  C ≤ 32: R 4, TG 8, KG 4;   C ≤ 48: R 6, TG 8, KG 4;
//   C ≤ 64: R 8, TG 8, KG 4;  C ≤ 96: R 6, TG 16, KG 1;  C ≤ 128: R 8, TG 16, KG 1.
// Tiles of TILE pixels (64 for C ≤ 64, 32 above) are loaded 16 bytes at a time into registers
// one tile ahead (software double buffering) and stored transposed, pixel-major, into
// xs[n][r], ys[n][r] (row pitch CP + 4 floats), so that per pixel a thread reads its R rows of
// X and of Y as float4/float2 vectors: R² FMAs per 2·R/4 (or 2·R/2) shared loads, e.g. 36 FMAs
// per 6 float2 loads at C = 48, 64 per 4 float4 loads at C = 64 and C = 128 (the old kernel:
// 9 FMAs per 6 scalar loads). In a warp the X reads hit ≤ 4 distinct addresses and the Y reads
// 8 or 16 consecutive vectors: ≤ 2 shared wavefronts per load, below the FMA issue time.
// At the end the k-groups add their tiles in k-group order through shared memory
// (deterministic), and the 2C squared norms are summed pixel by pixel by threads 0..2C−1.
//
// Roofline, per (b, h): 2·C·N·e bytes read (e = 2 fp16/bf16, 4 fp32), (C² + 2C)·4 written per
// split, against C²·N FMAs (+ 2·C·N for the norms) on CUDA cores: the same FMA/byte ratio as
// the apply sweep, C·BW / (2·e·F) with F = FMA/s (H200: 132·128·1.98 GHz = 33.4 T, 4.8 TB/s;
// RTX 3090: 82·128·1.70 GHz = 17.8 T, 0.936 TB/s). Expected fraction of the HBM roofline:
//            fp16/bf16 C=48   C=96   C=128 | fp32 C=48   C=96   C=128
//   H200:       58 %     29 %   22 %     |     100 %    58 %   43 %
//   RTX 3090:  100 %     79 %   59 %     |     100 %   100 %   100 %
// E.g. (1, 1, 48, 1024²) fp16: 201 MB read = 42 µs at 4.8 TB/s vs 2.4 G FMA = 72 µs on H200.
// Above the ratio-1 line the next step is tensor cores (mma.sync m16n8k16 on the fp16/bf16 tiles
// with fp32 accumulation: X Yᵀ is exactly the row.col operand layout), not done here.
#include "device_utils.cuh"

namespace ddsa::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int R, int TG, int TILE>
__global__ void __launch_bounds__(kThreads, 1)
    gram_partial_kernel(Operand x, Operand y, int H, int C, int64_t N, int splits, bool with_norms,
                        bool vector_loads, float* __restrict__ partial) {
  constexpr int CP = TG * R;                // rows covered by the thread grid
  constexpr int KG = kThreads / (TG * TG);  // k-groups
  constexpr int KPIX = TILE / KG;           // pixels of a tile per k-group
  constexpr int LD = CP + 4;                // pitch of xs/ys rows; keeps 16-byte alignment
  constexpr int VEC = 16 / sizeof(T);
  constexpr int GROUPS = TILE / VEC;        // 16-byte groups per tile row
  constexpr int FETCH = (CP * GROUPS + kThreads - 1) / kThreads;  // per operand and thread
  static_assert(TILE % KG == 0 && TILE % VEC == 0, "tiles split evenly over k-groups and 16-byte groups");
  static_assert(KG == 1 || CP * CP <= 2 * TILE * LD, "k-group sums fit in the tile buffers");
  __shared__ float4 smem4[(2 * TILE * LD + 3) / 4];
  float* xs = reinterpret_cast<float*>(smem4);  // [TILE][LD]: xs[n·LD + r]
  float* ys = xs + TILE * LD;

  const int split = blockIdx.x;
  const int bh = blockIdx.y;
  const int b = bh / H, h = bh % H;
  const T* xp = static_cast<const T*>(x.ptr) + b * x.sb + h * x.sh;
  const T* yp = static_cast<const T*>(y.ptr) + b * y.sb + h * y.sh;
  const int tid = threadIdx.x, lane = tid & 31;
  const int kg = tid / (TG * TG), local = tid % (TG * TG);
  const int ty = (local / 32) * (32 / TG) + lane / TG;  // a warp: 32/TG row groups × TG column groups
  const int tx = lane % TG;

  const int64_t tiles = ceil_div(N, TILE);
  const int64_t t_begin = split * tiles / splits, t_end = (split + 1) * tiles / splits;

  float acc[R][R];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < R; ++j) acc[i][j] = 0.f;
  float sq = 0.f;  // thread tid < C: ‖x_tid‖²; C ≤ tid < 2C: ‖y_(tid−C)‖²

  uint4 pre_x[FETCH] = {}, pre_y[FETCH] = {};
  if (t_begin < t_end) {
#pragma unroll
    for (int f = 0; f < FETCH; ++f) {
      const int idx = tid + kThreads * f, r = idx / GROUPS;
      const int64_t n = t_begin * TILE + (idx % GROUPS) * VEC;
      if (r < C) {
        pre_x[f] = fetch16<T>(xp + r * x.sc + n, n, N, vector_loads);
        pre_y[f] = fetch16<T>(yp + r * y.sc + n, n, N, vector_loads);
      }
    }
  }

  for (int64_t t = t_begin; t < t_end; ++t) {
    __syncthreads();  // the previous tile's reads of xs/ys are done
#pragma unroll
    for (int f = 0; f < FETCH; ++f) {
      const int idx = tid + kThreads * f, r = idx / GROUPS, j0 = (idx % GROUPS) * VEC;
      if (r < C) {
        float ex[VEC], ey[VEC];
        unpack16<T>(pre_x[f], ex);
        unpack16<T>(pre_y[f], ey);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          xs[(j0 + i) * LD + r] = ex[i];
          ys[(j0 + i) * LD + r] = ey[i];
        }
      }
    }
    __syncthreads();
    if (t + 1 < t_end) {
#pragma unroll
      for (int f = 0; f < FETCH; ++f) {
        const int idx = tid + kThreads * f, r = idx / GROUPS;
        const int64_t n = (t + 1) * TILE + (idx % GROUPS) * VEC;
        if (r < C) {
          pre_x[f] = fetch16<T>(xp + r * x.sc + n, n, N, vector_loads);
          pre_y[f] = fetch16<T>(yp + r * y.sc + n, n, N, vector_loads);
        }
      }
    }
    if (with_norms && tid < 2 * C) {
      const float* col = tid < C ? xs + tid : ys + (tid - C);
#pragma unroll 8
      for (int n = 0; n < TILE; ++n) sq = fmaf(col[n * LD], col[n * LD], sq);
    }
#pragma unroll 4
    for (int m = 0; m < KPIX; ++m) {
      const int n = kg * KPIX + m;
      rank1_update<R, R>(acc, xs + n * LD + ty * R, ys + n * LD + tx * R);
    }
  }

  // k-group g > 0 hands its tile to k-group 0 through xs, in order g = 1, 2, ...
  if constexpr (KG > 1) {
    float* red = xs;  // [CP][CP]
    for (int g = 1; g < KG; ++g) {
      __syncthreads();
      if (kg == g) {
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
          for (int j = 0; j < R; ++j) red[(ty * R + i) * CP + tx * R + j] = acc[i][j];
      }
      __syncthreads();
      if (kg == 0) {
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
          for (int j = 0; j < R; ++j) acc[i][j] += red[(ty * R + i) * CP + tx * R + j];
      }
    }
  }

  const int64_t stride = static_cast<int64_t>(C) * C + 2 * C;
  float* out = partial + (static_cast<int64_t>(split) * gridDim.y + bh) * stride;
  if (kg == 0) {
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int r = ty * R + i;
#pragma unroll
      for (int j = 0; j < R; ++j) {
        const int c = tx * R + j;
        if (r < C && c < C) out[r * C + c] = acc[i][j];
      }
    }
  }
  if (tid < 2 * C) out[static_cast<int64_t>(C) * C + tid] = with_norms ? sq : 0.f;
}

template <typename T, int R, int TG, int TILE>
void launch_typed(Operand x, Operand y, int B, int H, int C, int64_t N, int splits, bool with_norms,
                  bool vector_loads, float* partial, cudaStream_t stream) {
  const dim3 grid(splits, B * H);
  gram_partial_kernel<T, R, TG, TILE>
      <<<grid, kThreads, 0, stream>>>(x, y, H, C, N, splits, with_norms, vector_loads, partial);
  check_launch("gram_partial_kernel");
}

template <typename T>
void launch_rows(Operand x, Operand y, int B, int H, int C, int64_t N, int splits, bool with_norms, bool vec,
                 float* partial, cudaStream_t s) {
  if (C <= 16) return launch_typed<T, 2, 8, 64>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 32) return launch_typed<T, 4, 8, 64>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 48) return launch_typed<T, 6, 8, 64>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 64) return launch_typed<T, 8, 8, 64>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 96) return launch_typed<T, 6, 16, 32>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  if (C <= 128) return launch_typed<T, 8, 16, 32>(x, y, B, H, C, N, splits, with_norms, vec, partial, s);
  throw std::runtime_error("ddsa cuda: gram sweep supports C <= 128 channels per head");
}

}  // namespace

int gram_tile_pixels(int C) { return C <= 64 ? 64 : 32; }

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
