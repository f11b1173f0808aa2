// Shared pieces of the banded inference kernels (the SEFN chain MLP, GDFN, DRSformer's mixed-scale
// feed-forward), which all compute
//
//   u = W_in · x + b_in  (1×1, C → U channels),   m = middle(u),   z = W_out · m + b_out  (1×1, M → C_out)
//
// with a middle of depth-wise convolutions that reads `halo` rows of u beyond the rows it writes. Unfused,
// u and m are maps several times x's size written to memory and read back; here each task owns a run of
// image rows and walks it in bands: one GEMM computes u for the band plus the halo into a per-thread
// buffer, the middle runs there, and one GEMM writes z's band, so u and m never leave the cache.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>

#include "../ddsa.h"
#include "blas.h"

namespace ddsa {
namespace cpu {

// An optional bias as a contiguous tensor (undefined when absent), and its data (null when undefined).
inline at::Tensor contiguous_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}
template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

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

// The block's tensors as contiguous raw pointers (biases may be null) and its sizes.
template <typename T>
struct Block {
  const T* x;  // (B, C, H, W)
  int64_t B, C, H, W;
  const T* w_in;  // (U, C)
  const T* b_in;  // (U,)
  int64_t U;
  const T* w_out;  // (C_out, M)
  const T* b_out;  // (C_out,)
  int64_t M, C_out;
  T* z;  // (B, C_out, H, W)
};

// The checks each banded op makes of x, the 1×1 convolutions' weights and biases (their shapes checked
// already) and the band: one CPU float dtype, biases of one value per channel, a channel, a row.
inline void check_operands(const char* op, const at::Tensor& x, const at::Tensor& w_in,
                           const std::optional<at::Tensor>& b_in, const at::Tensor& w_out,
                           const std::optional<at::Tensor>& b_out, int64_t band) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "ddsa ", op, " cpu backend: unsupported dtype ", dtype,
              " (expected float32 or float64)");
  detail::check_cpu_operand(x, op, "x", dtype);
  detail::check_cpu_operand(w_in, op, "w_in", dtype);
  detail::check_cpu_operand(w_out, op, "w_out", dtype);
  detail::check_cpu_operand(b_in, op, "b_in", dtype, w_in.size(0));
  detail::check_cpu_operand(b_out, op, "b_out", dtype, w_out.size(0));
  TORCH_CHECK(x.size(1) > 0, "ddsa ", op, ": x needs at least one channel, got ", x.sizes());
  TORCH_CHECK(band >= 1, "ddsa ", op, ": band must be at least 1 row, got ", band);
}

// x and the two 1×1 convolutions' weights (as (U, C) and (C_out, M) matrices) and biases, contiguous,
// and the output z (B, C_out, H, W), allocated here. block<T>() points a Block at them, so they must
// outlive it.
struct Operands {
  at::Tensor x, w_in, b_in, w_out, b_out, z;
  Operands(const at::Tensor& x_, const at::Tensor& w_in_, const std::optional<at::Tensor>& b_in_,
           const at::Tensor& w_out_, const std::optional<at::Tensor>& b_out_)
      : x(x_.contiguous()),
        w_in(w_in_.reshape({w_in_.size(0), w_in_.size(1)}).contiguous()),
        b_in(contiguous_or_none(b_in_)),
        w_out(w_out_.reshape({w_out_.size(0), w_out_.size(1)}).contiguous()),
        b_out(contiguous_or_none(b_out_)),
        z(at::empty({x.size(0), w_out.size(0), x.size(2), x.size(3)}, x.options())) {}

  template <typename T>
  Block<T> block() const {
    return {x.data_ptr<T>(),     x.size(0),         x.size(1),    x.size(2), x.size(3),
            w_in.data_ptr<T>(),  data_or_null<T>(b_in),  w_in.size(0),
            w_out.data_ptr<T>(), data_or_null<T>(b_out), w_out.size(1), w_out.size(0),
            z.data_ptr<T>()};
  }
};

// One band: output rows [r0, r1) need u on rows [ra, rb) = [r0 − halo, r1 + halo) ∩ [0, H), which the
// buffer holds from its start, plane c at u + c·ps.
struct Band {
  int64_t r0, r1, ra, rb, ps;
};

// What the middle hands to the output GEMM: rows [r0, r1) of m's M planes, plane c at data + c·ld.
template <typename T>
struct MidRows {
  const T* data;
  int64_t ld;
};

// Runs the block in bands of `band` rows (at most H). make_middle(ps) is called once per thread (ps: the u
// buffer's plane stride) and returns that thread's middle step, which owns its scratch:
//
//   MidRows<T> step(T* u, const Band& band)
//
// The step may overwrite u: the rows the next band shares are copied aside before it runs and copied
// back to the buffer's front afterwards instead of being recomputed. It is a template argument, so the
// call is direct and the per-op loops inside it compile as they would written out here.
template <typename T, typename MakeMiddle>
void run(const Block<T>& k, int64_t band, int64_t halo, const MakeMiddle& make_middle) {
  const int64_t H = k.H, W = k.W, plane = H * W;
  band = std::min(band, H);
  const auto [runs, run_rows] = row_runs(k.B, H, band);
  const int64_t ps = std::min(H, band + 2 * halo) * W, kept_ps = 2 * halo * W;
  at::parallel_for(0, k.B * runs, 1, [&](int64_t begin, int64_t end) {
    // uninitialised: every element is written before it is read (a zero fill would cost a pass)
    const std::unique_ptr<T[]> buf(new T[k.U * ps]), kept(new T[k.U * kept_ps + 1]);
    auto step = make_middle(ps);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / runs, R0 = (task % runs) * run_rows, R1 = std::min(H, R0 + run_rows);
      const T* xb = k.x + b * k.C * plane;
      T* zb = k.z + b * k.C_out * plane;
      int64_t kept_lo = 0, kept_hi = 0;  // image rows of u held in `kept` from the previous band
      for (int64_t r0 = R0; r0 < R1; r0 += band) {
        const int64_t r1 = std::min(R1, r0 + band);
        const int64_t ra = std::max<int64_t>(0, r0 - halo), rb = std::min(H, r1 + halo);
        int64_t fresh = ra;
        if (kept_hi > kept_lo) {  // kept_lo == ra by construction
          for (int64_t c = 0; c < k.U; ++c)
            std::memcpy(buf.get() + c * ps, kept.get() + c * kept_ps, sizeof(T) * (kept_hi - kept_lo) * W);
          fresh = kept_hi;
        }
        if (rb > fresh) {
          gemm(false, false, k.U, (rb - fresh) * W, k.C, T(1), k.w_in, k.C, xb + fresh * W, plane, T(0),
               buf.get() + (fresh - ra) * W, ps);
          add_row_bias(buf.get() + (fresh - ra) * W, k.U, ps, (rb - fresh) * W, k.b_in);
        }
        kept_lo = kept_hi = 0;
        if (r1 < R1 && halo > 0) {  // the next band's upper halo and first rows, before the middle runs
          kept_lo = std::max<int64_t>(0, r1 - halo);
          kept_hi = rb;
          for (int64_t c = 0; c < k.U; ++c)
            std::memcpy(kept.get() + c * kept_ps, buf.get() + c * ps + (kept_lo - ra) * W,
                        sizeof(T) * (kept_hi - kept_lo) * W);
        }
        const MidRows<T> m = step(buf.get(), Band{r0, r1, ra, rb, ps});
        const int64_t len = (r1 - r0) * W;
        gemm(false, false, k.C_out, len, k.M, T(1), k.w_out, k.M, m.data, m.ld, T(0), zb + r0 * W, plane);
        add_row_bias(zb + r0 * W, k.C_out, plane, len, k.b_out);
      }
    }
  });
}

}  // namespace bands
}  // namespace cpu
}  // namespace ddsa
