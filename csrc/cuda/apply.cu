// Sweep 2 of both directions: dst = M x (− s ⊙ y), M a C×C fp32 matrix per (b, h), x and y
// (C, N) operands streamed tile by tile, dst (C, N) contiguous. Forward: out = A v (one job).
// Backward: dq = P k − s_q ⊙ q, dk = Pᵀ q − s_k ⊙ k, dv = Aᵀ dO (three jobs, one launch).
//
// Structure. A block (256 threads) owns one (job, b·h, range of tiles). It stages M once in
// shared memory, transposed to mt[c][r] (≤ 64 KiB at C = 128), then streams tiles of
// TN = 32·RN pixels: 16-byte global loads of the next tile are issued into registers before the
// current tile is computed (software double buffering), converted to fp32 into xs[c][n] after.
// Thread (ty, tx) computes a register tile of RM rows (ty·RM + i) × RN pixels (tx·RN + j) over
// CP = 8·RM ≥ C rows; per channel c it reads RM values of mt (float4/float2, a warp reads 4
// distinct addresses: ≤ 2 wavefronts) and RN values of xs (8 distinct float4/float2 in a warp:
// 1 wavefront) for RM·RN FMAs. Warp lanes are laid out 4 row groups × 8 pixel groups so both
// reads are near-broadcasts:
//   C ≤ 16: RM 2,  RN 4 → 8 FMA per 2 shared loads;   C ≤ 48: RM 6,  RN 4 → 24 per 4;
//   C ≤ 32: RM 4,  RN 4 → 16 per 2;                   C ≤ 64: RM 8,  RN 4 → 32 per 3;
//   C ≤ 96: RM 12, RN 2 → 24 per 4;                   C ≤ 128: RM 16, RN 2 → 32 per 5.
// Shared memory C·(CP + TN)·4 bytes: 33 KiB at C = 48, 96 KiB at C = 128 (< 99 KiB of sm_86).
// Each output is one fmaf chain over c = 0..C−1 in fp32, as before: bitwise deterministic.
// The dq/dk/dv jobs of a tile range are adjacent block indices, so the second read of q and k
// (x of one job, y of the other) mostly hits L2.
//
// Roofline, per (b, h): C·N·e bytes read + C·N·e written (e = 2 fp16/bf16, 4 fp32) against C²·N
// FMAs on CUDA cores. FMA time / DRAM time = C·BW / (2·e·F), F = FMA/s:
//   H200:     BW 4.8 TB/s, F = 132 SM·128·1.98 GHz = 33.4 T → ratio 0.072·C/e.
//   RTX 3090: BW 0.936 TB/s, F = 82 SM·128·1.70 GHz = 17.8 T → ratio 0.026·C/e.
// Expected fraction of the HBM roofline = min(1, 1/ratio) (shared-memory wavefronts above stay
// below the FMA issue time for every C):
//            fp16/bf16 C=48   C=96   C=128 | fp32 C=48   C=96   C=128
//   H200:       58 %     29 %   22 %     |     100 %    58 %   43 %
//   RTX 3090:  100 %     79 %   59 %     |     100 %   100 %   100 %
// E.g. (1, 1, 48, 1024²) fp16: 201 MB of traffic = 42 µs at 4.8 TB/s vs 2.4 G FMA = 72 µs on
// H200; 215 µs vs 136 µs on an RTX 3090. Above the ratio-1 line (H200 fp16/bf16 at C > 28) the
// remaining step is tensor cores (mma.sync with M split into a hi + lo pair in the I/O dtype, as
// the Triton backend does), which changes the rounding of M and is left out here.
#include "device_utils.cuh"

namespace ddsa::cuda {
namespace {

constexpr int kThreads = 256;

// One product of the sweep: dst = M x, or Mᵀ x when `trans`, minus scale ⊙ y when y.ptr.
struct ApplyJob {
  const float* mat;     // (BH, C, C) fp32
  bool trans;
  Operand x;            // streamed operand (b, h, c strides; unit pixel stride)
  bool x_vec;           // rows of x start on 16-byte boundaries
  Operand y;            // y.ptr == nullptr: no correction term
  const float* scale;   // row scales at scale[bh·scale_stride + r]
  int64_t scale_stride;
  void* dst;            // (BH, C, N) contiguous
};

struct ApplyJobs {
  ApplyJob job[3];
  int count;
  int64_t tiles_per_block;
};

// A pack of RN outputs stored with one instruction (caller: p aligned to sizeof(Pack)).
template <typename T, int RN>
struct alignas(sizeof(T) * RN) Pack {
  T v[RN];
};

template <typename T, int RM, int RN>
__global__ void __launch_bounds__(kThreads, 1) apply_kernel(ApplyJobs jobs, int H, int C, int64_t N) {
  constexpr int CP = 8 * RM;   // rows covered: 8 row groups × RM
  constexpr int TN = 32 * RN;  // pixels per tile: 32 pixel groups × RN
  constexpr int VEC = 16 / sizeof(T);
  constexpr int GROUPS = TN / VEC;  // 16-byte groups per tile row
  constexpr int FETCH = (CP * GROUPS + kThreads - 1) / kThreads;
  static_assert(TN % VEC == 0, "a tile row holds whole 16-byte groups");

  extern __shared__ float4 smem4[];
  float* mt = reinterpret_cast<float*>(smem4);  // [C][CP]: mt[c·CP + r] = M[r][c] (Mᵀ: M[c][r])
  float* xs = mt + C * CP;                      // [C][TN]; CP·4 bytes is a multiple of 16

  const int jid = blockIdx.x % jobs.count;
  // Constant indices only: a dynamic index into the parameter array would copy it to local memory.
  const ApplyJob job = jid == 0 ? jobs.job[0] : jid == 1 ? jobs.job[1] : jobs.job[2];
  const int64_t n_tiles = ceil_div(N, TN);
  const int64_t t_lo = static_cast<int64_t>(blockIdx.x / jobs.count) * jobs.tiles_per_block;
  const int64_t t_hi = t_lo + jobs.tiles_per_block < n_tiles ? t_lo + jobs.tiles_per_block : n_tiles;
  if (t_lo >= t_hi) return;  // whole block: no barrier is skipped by part of it
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ty = (warp >> 2) * 4 + (lane >> 3);  // row group 0..7
  const int tx = (warp & 3) * 8 + (lane & 7);    // pixel group 0..31

  const float* M = job.mat + static_cast<int64_t>(bh) * C * C;
  const bool trans = job.trans;
  for (int idx = tid; idx < C * CP; idx += kThreads) {
    const int c = idx / CP, r = idx % CP;
    mt[idx] = r < C ? (trans ? M[c * C + r] : M[r * C + c]) : 0.f;
  }

  const T* xp = static_cast<const T*>(job.x.ptr) + b * job.x.sb + h * job.x.sh;
  const int64_t xsc = job.x.sc;
  const bool x_vec = job.x_vec;
  uint4 pre[FETCH] = {};
#pragma unroll
  for (int f = 0; f < FETCH; ++f) {
    const int idx = tid + kThreads * f, r = idx / GROUPS, n = t_lo * TN + (idx % GROUPS) * VEC;
    if (r < C) pre[f] = fetch16<T>(xp + r * xsc + n, n, N, x_vec);
  }

  const bool has_y = job.y.ptr != nullptr;
  const T* yp = has_y ? static_cast<const T*>(job.y.ptr) + b * job.y.sb + h * job.y.sh : nullptr;
  const float* scale = has_y ? job.scale + bh * job.scale_stride : nullptr;
  T* dst = static_cast<T*>(job.dst) + static_cast<int64_t>(bh) * C * N;
  const bool pack_ok = N % RN == 0;  // then every in-range pack of RN pixels is whole and aligned

  for (int64_t t = t_lo; t < t_hi; ++t) {
    __syncthreads();  // the previous tile's reads of xs are done
#pragma unroll
    for (int f = 0; f < FETCH; ++f) {
      const int idx = tid + kThreads * f, r = idx / GROUPS, j0 = (idx % GROUPS) * VEC;
      if (r < C) {
        float e[VEC];
        unpack16<T>(pre[f], e);
#pragma unroll
        for (int i = 0; i < VEC; ++i) xs[r * TN + j0 + i] = e[i];
      }
    }
    __syncthreads();  // xs (and, on the first tile, mt) complete
    if (t + 1 < t_hi) {
#pragma unroll
      for (int f = 0; f < FETCH; ++f) {
        const int idx = tid + kThreads * f, r = idx / GROUPS, n = (t + 1) * TN + (idx % GROUPS) * VEC;
        if (r < C) pre[f] = fetch16<T>(xp + r * xsc + n, n, N, x_vec);
      }
    }

    float acc[RM][RN];
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int j = 0; j < RN; ++j) acc[i][j] = 0.f;
    for (int c = 0; c < C; ++c) rank1_update<RM, RN>(acc, mt + c * CP + ty * RM, xs + c * TN + tx * RN);

    const int64_t n = t * TN + tx * RN;
    if (n >= N) continue;
#pragma unroll
    for (int i = 0; i < RM; ++i) {
      const int r = ty * RM + i;
      if (r < C) {
        float o[RN];
#pragma unroll
        for (int j = 0; j < RN; ++j) o[j] = acc[i][j];
        if (has_y) {
          const float s = scale[r];
          const T* yr = yp + r * job.y.sc + n;
#pragma unroll
          for (int j = 0; j < RN; ++j)
            if (n + j < N) o[j] = o[j] - s * to_float<T>(yr[j]);
        }
        T* dr = dst + r * N + n;
        if (pack_ok) {
          Pack<T, RN> pk;
#pragma unroll
          for (int j = 0; j < RN; ++j) pk.v[j] = from_float<T>(o[j]);
          *reinterpret_cast<Pack<T, RN>*>(dr) = pk;
        } else {
#pragma unroll
          for (int j = 0; j < RN; ++j)
            if (n + j < N) dr[j] = from_float<T>(o[j]);
        }
      }
    }
  }
}

template <typename T, int RM, int RN>
void launch_jobs(ApplyJobs jobs, int BH, int H, int C, int64_t N, cudaStream_t stream) {
  constexpr int TN = 32 * RN;
  const auto kernel = apply_kernel<T, RM, RN>;
  const size_t smem = sizeof(float) * C * (8 * RM + TN);
  // Tile ranges per (job, b·h): enough blocks for one full wave of resident blocks, each range
  // as long as possible so that staging M (C²·4 bytes from L2) is amortised over its tiles.
  const int64_t wave = static_cast<int64_t>(blocks_per_sm(kernel, kThreads, smem)) * multiprocessor_count();
  const int64_t tiles = ceil_div(N, TN);
  const int64_t slices = static_cast<int64_t>(BH) * jobs.count;
  const int64_t ranges = std::min<int64_t>(tiles, std::max<int64_t>(1, ceil_div(wave, slices)));
  jobs.tiles_per_block = ceil_div(tiles, ranges);
  const int64_t used = ceil_div(tiles, jobs.tiles_per_block);
  const dim3 grid(static_cast<unsigned>(used * jobs.count), static_cast<unsigned>(BH));
  kernel<<<grid, kThreads, smem, stream>>>(jobs, H, C, N);
  check_launch("apply_kernel");
}

// The largest bucket's shared memory fits the 99 KiB a block may use on sm_86/sm_89.
static_assert(sizeof(float) * 128 * (8 * 16 + 32 * 2) <= 99 * 1024, "apply tile exceeds 99 KiB of shared memory");

// Calls launch_jobs with the register tile of the smallest bucket holding C rows.
template <typename T>
void launch_buckets(const ApplyJobs& jobs, int BH, int H, int C, int64_t N, cudaStream_t s) {
  if (C <= 16) return launch_jobs<T, 2, 4>(jobs, BH, H, C, N, s);
  if (C <= 32) return launch_jobs<T, 4, 4>(jobs, BH, H, C, N, s);
  if (C <= 48) return launch_jobs<T, 6, 4>(jobs, BH, H, C, N, s);
  if (C <= 64) return launch_jobs<T, 8, 4>(jobs, BH, H, C, N, s);
  if (C <= 96) return launch_jobs<T, 12, 2>(jobs, BH, H, C, N, s);
  if (C <= 128) return launch_jobs<T, 16, 2>(jobs, BH, H, C, N, s);
  throw std::runtime_error("ddsa cuda: apply sweep supports C <= 128 channels per head");
}

void launch(DType dtype, const ApplyJobs& jobs, int BH, int H, int C, int64_t N, cudaStream_t stream) {
  if (N == 0 || BH == 0 || C == 0) return;
  switch (dtype) {
    case DType::kFloat32: return launch_buckets<float>(jobs, BH, H, C, N, stream);
    case DType::kFloat16: return launch_buckets<__half>(jobs, BH, H, C, N, stream);
    case DType::kBFloat16: return launch_buckets<__nv_bfloat16>(jobs, BH, H, C, N, stream);
  }
}

constexpr Operand kNone{nullptr, 0, 0, 0};

}  // namespace

void launch_forward_apply(DType dtype, const float* attn, Operand v, int B, int H, int C, int64_t N,
                          bool vector_loads, void* out, cudaStream_t stream) {
  ApplyJobs jobs{};
  jobs.job[0] = {attn, /*trans=*/false, v, vector_loads, kNone, nullptr, 0, out};
  jobs.count = 1;
  launch(dtype, jobs, B * H, H, C, N, stream);
}

void launch_backward_apply(DType dtype, const float* P, const float* attn, const float* scales, Operand q,
                           Operand k, Operand grad_out, int B, int H, int C, int64_t N, bool vector_loads, void* dq,
                           void* dk, void* dv, cudaStream_t stream) {
  ApplyJobs jobs{};
  const int64_t ss = 2 * static_cast<int64_t>(C);  // scales: (BH, 2, C) = (s_q, s_k)
  jobs.job[0] = {P, /*trans=*/false, k, vector_loads, q, scales, ss, dq};          // dq = P k − s_q ⊙ q
  jobs.job[1] = {P, /*trans=*/true, q, vector_loads, k, scales + C, ss, dk};       // dk = Pᵀ q − s_k ⊙ k
  jobs.job[2] = {attn, /*trans=*/true, grad_out, vector_loads, kNone, nullptr, 0, dv};  // dv = Aᵀ dO
  jobs.count = 3;
  launch(dtype, jobs, B * H, H, C, N, stream);
}

}  // namespace ddsa::cuda
