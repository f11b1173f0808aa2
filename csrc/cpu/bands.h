// Shared pieces of the banded inference kernels (the SEFN chain MLP, GDFN, DRSformer's mixed-scale
// feed-forward): how an image's rows are split among threads, and the per-channel bias added to rows
// that a GEMM wrote.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace ddsa {
namespace cpu {
namespace bands {

// Each of the B images is cut into `runs` runs of `run_rows` rows (the last may be shorter): enough runs
// for every thread, each at least one band of `band` rows long. Task t covers image t / runs, rows
// [(t % runs)·run_rows, min(H, that + run_rows)).
struct RowRuns {
  int64_t runs;
  int64_t run_rows;
};

inline RowRuns row_runs(int64_t B, int64_t H, int64_t band) {
  const int64_t threads = at::get_num_threads();
  const int64_t runs = std::max<int64_t>(1, std::min((threads + B - 1) / B, (H + band - 1) / band));
  return {runs, (H + runs - 1) / runs};
}

// rows[c·ld + i] += bias[c] for c < channels, i < count (nothing when bias is null).
template <typename T>
void add_row_bias(T* rows, int64_t channels, int64_t ld, int64_t count, const T* bias) {
  if (!bias) return;
  for (int64_t c = 0; c < channels; ++c) {
    T* p = rows + c * ld;
    const T b = bias[c];
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) p[i] += b;
  }
}

}  // namespace bands
}  // namespace cpu
}  // namespace ddsa
