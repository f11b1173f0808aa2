// CPU forward and backward of the fused dual attention op: two sweeps over N
// each way with a C×C epilogue between them, no C×N temporaries.
//
// Work is split into (batch·head, N-chunk) items run on at::parallel_for's threads (so
// torch.get_num_threads() is respected), claimed one at a time. The number of chunks and their
// pixel ranges depend only on the shape (one per (b, h) when B·H ≥ 16), and per-chunk partial
// sums are reduced in chunk order by whichever thread finishes a (b, h) last, which then runs its
// epilogue (and, with one chunk, its output sweep): results are bitwise identical for any thread
// count. With several chunks, the output sweep's items follow in the same parallel region, each
// waiting only for its own (b, h)'s epilogue (no barrier between the sweeps).
// The Gram sweep walks a chunk in near-equal tiles that stay in cache: one BLAS product per
// tile straight from the caller's strided memory (float32/float64; through a per-tile float32
// buffer for float16/bfloat16), then the row norms from the same, now cached, tile. The forward
// output sweep is one BLAS product per chunk for float32/float64 (BLAS blocks it), per tile
// through float32 buffers otherwise.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "../ddsa.h"
#include "blas.h"
#include "epilogue.h"

namespace ddsa {
namespace cpu {
namespace {

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Work items the N-split aims for: enough to keep many threads busy when B·H is small.
constexpr int64_t kTargetItems = 64;

// (B, H, C, N) tensor with unit stride along N, addressed per (b, h) and row.
template <typename scalar_t>
struct Rows {
  scalar_t* base;
  int64_t H, sb, sh, sc;
  Rows(const at::Tensor& t)
      : base(const_cast<scalar_t*>(t.data_ptr<scalar_t>())), H(t.size(1)), sb(t.stride(0)), sh(t.stride(1)),
        sc(t.size(2) > 1 ? t.stride(2) : t.size(3)) {}
  scalar_t* at(int64_t bh) const { return base + (bh / H) * sb + (bh % H) * sh; }
};

// Pixels per tile: the q and k tiles of C rows (float32) stay within ~256 KiB.
int64_t tile_pixels(int64_t C) {
  const int64_t t = (32768 / std::max<int64_t>(C, 1)) / 64 * 64;
  return std::clamp<int64_t>(t, 128, 2048);
}

// With B·H ≥ kWholeSlices every (b, h) is one work item and runs all of its sweeps on one
// thread inside a single parallel region; otherwise N is split into chunks.
constexpr int64_t kWholeSlices = 16;

struct Split {
  int64_t N, tile, chunks;
  Split(int64_t BH, int64_t C, int64_t N) : N(N), tile(tile_pixels(C)) {
    const int64_t tiles = (N + tile - 1) / tile;
    const int64_t want = BH >= kWholeSlices ? 1 : (kTargetItems + BH - 1) / std::max<int64_t>(BH, 1);
    chunks = std::max<int64_t>(1, std::min(tiles, want));
  }
  // Chunk s covers pixels [begin(s), begin(s + 1)): equal shares, boundaries on 16-pixel multiples.
  int64_t begin(int64_t s) const { return s >= chunks ? N : s * (N / 16) / chunks * 16; }
  // Pixels a tile may hold (for_tiles' tiles are at most this long).
  int64_t tile_capacity() const { return tile + 32; }
};

// Calls f(n0, len) for near-equal tiles covering [n0, n1), each at most tile + 32 pixels long,
// boundaries on 16-pixel multiples from n0.
template <typename F>
void for_tiles(int64_t n0, int64_t n1, int64_t tile, const F& f) {
  const int64_t len = n1 - n0;
  if (len <= 0) return;
  const int64_t nt = (len + tile - 1) / tile;
  for (int64_t i = 0; i < nt; ++i) {
    const int64_t a = n0 + i * (len / 16) / nt * 16;
    const int64_t b = i + 1 == nt ? n1 : n0 + (i + 1) * (len / 16) / nt * 16;
    f(a, b - a);
  }
}

// Sum of squares with 16 independent lanes (vectorises without -ffast-math; fixed order).
template <typename T>
T sum_squares(const T* x, int64_t n) {
  T lanes[16] = {};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) lanes[l] += x[j + l] * x[j + l];
  T s = 0;
  for (; j < n; ++j) s += x[j] * x[j];
  for (int l = 0; l < 16; ++l) s += lanes[l];
  return s;
}

// A C×len tile of a (b, h) slice as acc_t rows: the memory itself when the types agree,
// else a converted copy in `buf` (ld = len).
template <typename scalar_t>
const acc_t<scalar_t>* load_tile(const scalar_t* src, int64_t ld_src, int64_t C, int64_t n0, int64_t len,
                                 acc_t<scalar_t>* buf, int64_t& ld) {
  if constexpr (std::is_same_v<scalar_t, acc_t<scalar_t>>) {
    ld = ld_src;
    return src + n0;
  } else {
    for (int64_t r = 0; r < C; ++r) {
      const scalar_t* s = src + r * ld_src + n0;
      acc_t<scalar_t>* d = buf + r * len;
      for (int64_t j = 0; j < len; ++j) d[j] = static_cast<acc_t<scalar_t>>(s[j]);
    }
    ld = len;
    return buf;
  }
}

template <typename scalar_t>
void store_tile(const acc_t<scalar_t>* src, int64_t C, int64_t len, scalar_t* dst, int64_t ld_dst) {
  for (int64_t r = 0; r < C; ++r) {
    const acc_t<scalar_t>* s = src + r * len;
    scalar_t* d = dst + r * ld_dst;
    for (int64_t j = 0; j < len; ++j) d[j] = static_cast<scalar_t>(s[j]);
  }
}

// Runs body(item, scratch) for item in [0, items) on at::parallel_for's threads, which claim
// items one at a time from a shared counter: on a loaded machine a thread that is descheduled
// holds back one item, not a fixed share. Results do not depend on which thread runs an item.
template <typename A, typename Body>
void parallel_items(int64_t items, const Body& body) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(items, at::get_num_threads());
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    std::vector<A> scratch;
    for (int64_t item = next.fetch_add(1, std::memory_order_relaxed); item < items;
         item = next.fetch_add(1, std::memory_order_relaxed))
      body(item, scratch);
  });
}

// Reduces the chunk partials of one (b·h) in chunk order into `out` (C·C + 2·C).
template <typename A>
void reduce_chunks(const A* partial, int64_t bh, int64_t chunks, int64_t stride, A* out) {
  const A* p = partial + bh * chunks * stride;
  std::copy(p, p + stride, out);
  for (int64_t s = 1; s < chunks; ++s)
    for (int64_t i = 0; i < stride; ++i) out[i] += p[s * stride + i];
}

// Sweep 1 of either direction: per (b·h, chunk) the partial X Yᵀ (C×C) and, optionally, the
// partial squared row norms of X and Y; partial: (BH, chunks, C·C + 2·C). The thread that
// finishes the last chunk of a (b·h) reduces its partials in chunk order and calls
// finish(bh, reduced) — the epilogue — then marks the (b·h) ready. With several chunks, the
// same parallel region then runs sweep 2: items BH·chunks + bh·chunks + s call
// sweep2(bh, s, scratch) once the epilogue of bh is done (items are claimed in order, so every
// sweep-1 item is taken, and its (b·h)'s epilogue running or done, before a thread waits on it;
// no barrier between the sweeps). Nothing depends on which thread runs what.
template <typename scalar_t, typename Finish, typename Sweep2>
void sweeps(const Rows<scalar_t>& X, const Rows<scalar_t>& Y, int64_t BH, int64_t C, const Split& sp,
            bool with_norms, acc_t<scalar_t>* partial, const Finish& finish, const Sweep2& sweep2) {
  using A = acc_t<scalar_t>;
  const int64_t stride = C * C + 2 * C;
  const int64_t items1 = BH * sp.chunks;
  const int64_t items2 = sp.chunks > 1 ? items1 : 0;
  std::unique_ptr<std::atomic<int64_t>[]> remaining(new std::atomic<int64_t>[BH]);
  for (int64_t bh = 0; bh < BH; ++bh) remaining[bh].store(sp.chunks, std::memory_order_relaxed);
  std::atomic<bool> failed{false};  // a sweep-1 item threw: waiters stop waiting
  auto sweep1 = [&](int64_t item, std::vector<A>& buf) {
    if constexpr (!std::is_same_v<scalar_t, A>) buf.resize(2 * C * sp.tile_capacity());
    const int64_t bh = item / sp.chunks, s = item % sp.chunks;
    A* G = partial + item * stride;
    A* nx = G + C * C;
    A* ny = nx + C;
    std::fill(G, G + stride, A(0));
    const scalar_t* x = X.at(bh);
    const scalar_t* y = Y.at(bh);
    for_tiles(sp.begin(s), sp.begin(s + 1), sp.tile, [&](int64_t n0, int64_t len) {
      int64_t ldx, ldy;
      const A* xt = load_tile(x, X.sc, C, n0, len, buf.data(), ldx);
      const A* yt = load_tile(y, Y.sc, C, n0, len, buf.data() + (buf.empty() ? 0 : C * sp.tile_capacity()), ldy);
      gemm(false, true, C, C, len, A(1), xt, ldx, yt, ldy, A(1), G, C);
      if (with_norms)  // from the tiles the GEMM just brought into cache
        for (int64_t r = 0; r < C; ++r) {
          nx[r] += sum_squares(xt + r * ldx, len);
          ny[r] += sum_squares(yt + r * ldy, len);
        }
    });
    // acq_rel: the last finisher sees every other chunk's partial of this (b·h).
    if (remaining[bh].fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::vector<A> reduced(stride);
      reduce_chunks(partial, bh, sp.chunks, stride, reduced.data());
      finish(bh, reduced.data());
      remaining[bh].store(-1, std::memory_order_release);  // sweep 2 of bh may start
    }
  };
  parallel_items<A>(items1 + items2, [&](int64_t item, std::vector<A>& buf) {
    if (item < items1) {
      try {
        sweep1(item, buf);
      } catch (...) {
        failed.store(true, std::memory_order_release);
        throw;  // at::parallel_for rethrows it to the caller
      }
      return;
    }
    const int64_t bh = (item - items1) / sp.chunks, s = (item - items1) % sp.chunks;
    while (remaining[bh].load(std::memory_order_acquire) != -1)
      if (failed.load(std::memory_order_acquire)) return;
      else std::this_thread::yield();
    sweep2(bh, s, buf);
  });
}

template <typename scalar_t>
Fwd forward_impl(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                 const at::Tensor& temperature, const at::Tensor& weights, const std::vector<int64_t>& keep,
                 double eps) {
  using A = acc_t<scalar_t>;
  const auto acc_dtype = std::is_same_v<A, double> ? at::kDouble : at::kFloat;
  const at::Tensor q = detail::rows_unit_stride(q_in), k = detail::rows_unit_stride(k_in),
                   v = detail::rows_unit_stride(v_in);
  const int64_t B = q.size(0), H = q.size(1), C = q.size(2), N = q.size(3), BH = B * H;
  const int64_t nb = static_cast<int64_t>(keep.size());
  const auto acc_opts = q.options().dtype(acc_dtype);
  at::Tensor out = at::empty({B, H, C, N}, q.options());
  at::Tensor probs = at::empty({B, H, nb, C, C}, acc_opts);
  at::Tensor gram = at::empty({B, H, C, C}, acc_opts);
  at::Tensor norms = at::empty({B, H, 2, C}, acc_opts);
  if (BH == 0 || C == 0) return {out, probs, gram, norms};

  const at::Tensor temp = temperature.to(acc_dtype).contiguous();
  const at::Tensor w = weights.to(acc_dtype).contiguous();
  const A* temp_p = temp.data_ptr<A>();
  const A* w_p = w.data_ptr<A>();
  const Rows<scalar_t> Q(q), K(k), V(v);
  const Split sp(BH, C, N);
  const int64_t stride = C * C + 2 * C;

  std::vector<A> partial(static_cast<size_t>(BH * sp.chunks * stride));
  std::vector<A> attn(static_cast<size_t>(BH * C * C));
  A* gram_p = gram.data_ptr<A>();
  A* norms_p = norms.data_ptr<A>();
  A* probs_p = probs.data_ptr<A>();
  // Sweep 2 for one (b·h) over pixels [n0, n1): out = attn · v; one GEMM straight on the
  // caller's memory for float32/float64, per tile through float32 buffers otherwise.
  scalar_t* out_p = out.data_ptr<scalar_t>();
  auto apply = [&](int64_t bh, int64_t n0, int64_t n1, std::vector<A>& buf) {
    const A* a = attn.data() + bh * C * C;
    const scalar_t* vv = V.at(bh);
    scalar_t* o = out_p + bh * C * N;
    if constexpr (std::is_same_v<scalar_t, A>) {
      gemm(false, false, C, n1 - n0, C, A(1), a, C, vv + n0, V.sc, A(0), o + n0, N);
    } else {
      buf.resize(2 * C * sp.tile_capacity());
      for_tiles(n0, n1, sp.tile, [&](int64_t t0, int64_t len) {
        int64_t ldv;
        const A* vt = load_tile(vv, V.sc, C, t0, len, buf.data(), ldv);
        A* ot = buf.data() + C * sp.tile_capacity();
        gemm(false, false, C, len, C, A(1), a, C, vt, ldv, A(0), ot, len);
        store_tile(ot, C, len, o + t0, N);
      });
    }
  };

  sweeps(
      Q, K, BH, C, sp, /*with_norms=*/true, partial.data(),
      [&](int64_t bh, const A* reduced) {
        std::vector<A> scratch(3 * C);
        EpilogueParams<A> prm{C, temp_p[bh % H], w_p, keep.data(), nb, static_cast<A>(eps)};
        forward_epilogue(prm, reduced, reduced + C * C, reduced + C * C + C, gram_p + bh * C * C,
                         norms_p + bh * 2 * C, probs_p + bh * nb * C * C, attn.data() + bh * C * C, scratch.data());
        if (sp.chunks == 1) apply(bh, 0, N, scratch);  // whole slice on this thread
      },
      [&](int64_t bh, int64_t s, std::vector<A>& buf) { apply(bh, sp.begin(s), sp.begin(s + 1), buf); });
  return {out, probs, gram, norms};
}

// dst[r, :len] = -scale[r] · src[r, :len]  (the projection term, before the GEMM adds P·x)
template <typename A>
void fill_scaled(const A* src, int64_t ld_src, const A* scale, int64_t C, int64_t len, A* dst, int64_t ld_dst) {
  for (int64_t r = 0; r < C; ++r) {
    const A s = -scale[r];
    const A* x = src + r * ld_src;
    A* d = dst + r * ld_dst;
    for (int64_t j = 0; j < len; ++j) d[j] = s * x[j];
  }
}

template <typename scalar_t>
Bwd backward_impl(const at::Tensor& go_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                  const at::Tensor& temperature, const at::Tensor& weights, const at::Tensor& probs_in,
                  const at::Tensor& gram_in, const at::Tensor& norms_in, const std::vector<int64_t>& keep, double eps) {
  using A = acc_t<scalar_t>;
  const auto acc_dtype = std::is_same_v<A, double> ? at::kDouble : at::kFloat;
  const at::Tensor go = detail::rows_unit_stride(go_in.to(q_in.scalar_type()));
  const at::Tensor q = detail::rows_unit_stride(q_in), k = detail::rows_unit_stride(k_in),
                   v = detail::rows_unit_stride(v_in);
  const int64_t B = q.size(0), H = q.size(1), C = q.size(2), N = q.size(3), BH = B * H;
  const int64_t nb = static_cast<int64_t>(keep.size());
  at::Tensor dq = at::empty({B, H, C, N}, q.options());
  at::Tensor dk = at::empty({B, H, C, N}, q.options());
  at::Tensor dv = at::empty({B, H, C, N}, q.options());
  const auto acc_opts = q.options().dtype(acc_dtype);
  if (BH == 0 || C == 0) return {dq, dk, dv, at::zeros({H}, acc_opts), at::zeros({nb}, acc_opts)};

  const at::Tensor probs = probs_in.to(acc_dtype).contiguous(), gram = gram_in.to(acc_dtype).contiguous(),
                   norms = norms_in.to(acc_dtype).contiguous();
  const at::Tensor temp = temperature.to(acc_dtype).contiguous();
  const at::Tensor w = weights.to(acc_dtype).contiguous();
  const A* temp_p = temp.data_ptr<A>();
  const A* w_p = w.data_ptr<A>();
  const Rows<scalar_t> GO(go), Q(q), K(k), V(v);
  const Split sp(BH, C, N);
  const int64_t stride = C * C + 2 * C;

  // Sweep 1: dA = dO vᵀ.
  // Epilogue per (b·h), run by the sweep's last finisher: P, row scales, attn; d_temperature
  // and d_weights shares.
  std::vector<A> partial(static_cast<size_t>(BH * sp.chunks * stride));
  const int64_t mats = 2 * C * C + 2 * C;  // P, attn, scale_q, scale_k
  std::vector<A> work(static_cast<size_t>(BH * mats));
  std::vector<A> dtemp_share(BH), dw_share(static_cast<size_t>(BH * nb));
  const A* probs_p = probs.data_ptr<A>();
  const A* gram_p = gram.data_ptr<A>();
  const A* norms_p = norms.data_ptr<A>();
  // Sweep 2 for one (b·h) over pixels [n0, n1), tile by tile: dq = P k − s_q ⊙ q, dk = Pᵀ q − s_k ⊙ k,
  // dv = attnᵀ dO.
  scalar_t* dq_p = dq.data_ptr<scalar_t>();
  scalar_t* dk_p = dk.data_ptr<scalar_t>();
  scalar_t* dv_p = dv.data_ptr<scalar_t>();
  auto apply = [&](int64_t bh, int64_t n1st, int64_t nend, std::vector<A>& buf) {
    constexpr bool direct = std::is_same_v<scalar_t, A>;
    const int64_t cap = sp.tile_capacity();
    if constexpr (!direct) buf.resize(4 * C * cap);
    const A* wk = work.data() + bh * mats;
    const A *P = wk, *attn = wk + C * C, *sq = wk + 2 * C * C, *sk = sq + C;
    const scalar_t *qq = Q.at(bh), *kk = K.at(bh), *gg = GO.at(bh);
    const int64_t off = bh * C * N;
    for_tiles(n1st, nend, sp.tile, [&](int64_t n0, int64_t len) {
      int64_t ldq, ldk, ldg;
      A* b = buf.data();
      const A* qt = load_tile(qq, Q.sc, C, n0, len, b, ldq);
      const A* kt = load_tile(kk, K.sc, C, n0, len, direct ? b : b + C * cap, ldk);
      const A* gt = load_tile(gg, GO.sc, C, n0, len, direct ? b : b + 2 * C * cap, ldg);
      if constexpr (direct) {
        A* dqt = dq_p + off + n0;
        A* dkt = dk_p + off + n0;
        A* dvt = dv_p + off + n0;
        fill_scaled(qt, ldq, sq, C, len, dqt, N);
        gemm(false, false, C, len, C, A(1), P, C, kt, ldk, A(1), dqt, N);
        fill_scaled(kt, ldk, sk, C, len, dkt, N);
        gemm(true, false, C, len, C, A(1), P, C, qt, ldq, A(1), dkt, N);
        gemm(true, false, C, len, C, A(1), attn, C, gt, ldg, A(0), dvt, N);
      } else {
        A* ot = b + 3 * C * cap;
        fill_scaled(qt, ldq, sq, C, len, ot, len);
        gemm(false, false, C, len, C, A(1), P, C, kt, ldk, A(1), ot, len);
        store_tile(ot, C, len, dq_p + off + n0, N);
        fill_scaled(kt, ldk, sk, C, len, ot, len);
        gemm(true, false, C, len, C, A(1), P, C, qt, ldq, A(1), ot, len);
        store_tile(ot, C, len, dk_p + off + n0, N);
        gemm(true, false, C, len, C, A(1), attn, C, gt, ldg, A(0), ot, len);
        store_tile(ot, C, len, dv_p + off + n0, N);
      }
    });
  };
  sweeps(
      GO, V, BH, C, sp, /*with_norms=*/false, partial.data(),
      [&](int64_t bh, const A* reduced) {
        std::vector<A> scratch(C * C + C);
        EpilogueParams<A> prm{C, temp_p[bh % H], w_p, keep.data(), nb, static_cast<A>(eps)};
        A* wk = work.data() + bh * mats;
        backward_epilogue(prm, reduced, probs_p + bh * nb * C * C, gram_p + bh * C * C, norms_p + bh * 2 * C, wk,
                          wk + 2 * C * C, wk + 2 * C * C + C, wk + C * C, &dtemp_share[bh],
                          dw_share.data() + bh * nb, scratch.data());
        if (sp.chunks == 1) apply(bh, 0, N, scratch);  // whole slice on this thread
      },
      [&](int64_t bh, int64_t s, std::vector<A>& buf) { apply(bh, sp.begin(s), sp.begin(s + 1), buf); });
  at::Tensor d_temp = at::zeros({H}, acc_opts.device(at::kCPU));
  at::Tensor d_w = at::zeros({nb}, acc_opts.device(at::kCPU));
  A* dt_p = d_temp.data_ptr<A>();
  A* dw_p = d_w.data_ptr<A>();
  for (int64_t bh = 0; bh < BH; ++bh) {  // fixed order: deterministic
    dt_p[bh % H] += dtemp_share[bh];
    for (int64_t i = 0; i < nb; ++i) dw_p[i] += dw_share[bh * nb + i];
  }

  return {dq, dk, dv, d_temp, d_w};
}

}  // namespace
}  // namespace cpu

Fwd forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                const at::Tensor& weights, const std::vector<int64_t>& keep, double eps) {
  detail::check_forward_args(q, k, v, temperature, weights, keep, eps);
  TORCH_CHECK(q.device().is_cpu(), "ddsa cpu backend: tensors must be on the CPU, got ", q.device());
  switch (q.scalar_type()) {
    case at::kFloat: return cpu::forward_impl<float>(q, k, v, temperature, weights, keep, eps);
    case at::kDouble: return cpu::forward_impl<double>(q, k, v, temperature, weights, keep, eps);
    case at::kHalf: return cpu::forward_impl<c10::Half>(q, k, v, temperature, weights, keep, eps);
    case at::kBFloat16: return cpu::forward_impl<c10::BFloat16>(q, k, v, temperature, weights, keep, eps);
    default: TORCH_CHECK(false, "ddsa cpu backend: unsupported dtype ", q.scalar_type());
  }
}

Bwd backward_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& temperature, const at::Tensor& weights, const at::Tensor& probs,
                 const at::Tensor& gram, const at::Tensor& norms, const std::vector<int64_t>& keep, double eps) {
  detail::check_forward_args(q, k, v, temperature, weights, keep, eps);
  detail::check_backward_args(grad_out, q, probs, gram, norms, keep);
  TORCH_CHECK(q.device().is_cpu(), "ddsa cpu backend: tensors must be on the CPU, got ", q.device());
  switch (q.scalar_type()) {
    case at::kFloat:
      return cpu::backward_impl<float>(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps);
    case at::kDouble:
      return cpu::backward_impl<double>(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps);
    case at::kHalf:
      return cpu::backward_impl<c10::Half>(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps);
    case at::kBFloat16:
      return cpu::backward_impl<c10::BFloat16>(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep,
                                               eps);
    default: TORCH_CHECK(false, "ddsa cpu backend: unsupported dtype ", q.scalar_type());
  }
}

std::string cpu_gemm_provider() { return cpu::gemm_provider(); }

}  // namespace ddsa
