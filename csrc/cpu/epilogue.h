// The C×C epilogues of the fused op for one (batch, head), in the accumulation type T.
// Same semantics as ddsa_kernels/epilogue.py: F.normalize's eps rule, every score ≥ the
// k-th largest of its row is kept (ties included), keep-count 0 or C = dense softmax.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace ddsa::cpu {

// Scalars of one (batch, head) that both epilogues need.
template <typename T>
struct EpilogueParams {
  int64_t C;
  T temperature;
  const T* weights;          // (nb,)
  const int64_t* keep;       // (nb,), 0 = dense
  int64_t nb;
  T eps;
};

// The k-th largest value of row[0..C) (k in 1..C), counted with multiplicity (what
// std::nth_element with std::greater puts at position k − 1). `scratch` holds C values.
// For C ≤ 64 it is found as the row value x with #(> x) < k ≤ #(≥ x), by counting in
// branch-free loops that vectorise (O(C²) compares, stopping at the first such x): faster there
// than std::nth_element's branchy partitioning, which larger rows and rows with NaNs (no such x)
// use. Either way the same value: the choice does not change results.
template <typename T>
T kth_largest(const T* row, int64_t C, int64_t k, T* scratch) {
  for (int64_t i = 0; C <= 64 && i < C; ++i) {
    const T x = row[i];
    int32_t gt = 0, ge = 0;
    for (int64_t c = 0; c < C; ++c) {
      gt += row[c] > x;
      ge += row[c] >= x;
    }
    if (gt < k && k <= ge) return x;
  }
  std::copy(row, row + C, scratch);
  std::nth_element(scratch, scratch + (k - 1), scratch + C, std::greater<T>());
  return scratch[k - 1];
}

// Forward: raw q kᵀ (C×C) and squared row norms → gram = q̂k̂ᵀ, norms (‖q‖, ‖k‖), probs
// (nb×C×C) and attn = Σ_i w_i probs_i. `scratch` holds 3·C values.
template <typename T>
void forward_epilogue(const EpilogueParams<T>& p, const T* qk, const T* sq_q, const T* sq_k, T* gram, T* norms,
                      T* probs, T* attn, T* scratch) {
  const int64_t C = p.C;
  T* norm_q = norms;
  T* norm_k = norms + C;
  for (int64_t r = 0; r < C; ++r) {
    norm_q[r] = std::sqrt(sq_q[r]);
    norm_k[r] = std::sqrt(sq_k[r]);
  }
  T* scores = scratch;
  T* expo = scratch + C;    // exp(score − row max): the same for every branch (the max is always kept)
  T* tmp = scratch + 2 * C;
  for (int64_t r = 0; r < C; ++r) {
    const T dq = std::max(norm_q[r], p.eps);
    for (int64_t c = 0; c < C; ++c) gram[r * C + c] = qk[r * C + c] / (dq * std::max(norm_k[c], p.eps));
  }
  std::fill(attn, attn + C * C, T(0));
  for (int64_t r = 0; r < C; ++r) {
    const T* g = gram + r * C;
    T row_max = -std::numeric_limits<T>::infinity();
    for (int64_t c = 0; c < C; ++c) {
      scores[c] = g[c] * p.temperature;
      row_max = std::max(row_max, scores[c]);
    }
    for (int64_t c = 0; c < C; ++c) expo[c] = std::exp(scores[c] - row_max);
    for (int64_t i = 0; i < p.nb; ++i) {
      const int64_t kc = p.keep[i];
      const bool dense = kc == 0 || kc >= C;
      const T threshold = dense ? -std::numeric_limits<T>::infinity() : kth_largest(scores, C, kc, tmp);
      T* pr = probs + (i * C + r) * C;
      T sum = 0;
      for (int64_t c = 0; c < C; ++c) {
        const T e = scores[c] >= threshold ? expo[c] : T(0);
        pr[c] = e;
        sum += e;
      }
      const T inv = T(1) / sum;
      const T w = p.weights[i];
      T* a = attn + r * C;
      for (int64_t c = 0; c < C; ++c) {
        pr[c] *= inv;
        a[c] += w * pr[c];
      }
    }
  }
}

// Backward: dA = dO vᵀ (C×C) → P, row scales (dq = P k − scale_q ⊙ q, dk = Pᵀ q − scale_k ⊙ k),
// attn (for dv = attnᵀ dO) and this (batch, head)'s share of d_temperature and d_weights (nb,).
// `scratch` holds C·C + C values.
template <typename T>
void backward_epilogue(const EpilogueParams<T>& p, const T* dA, const T* probs, const T* gram, const T* norms, T* P,
                       T* scale_q, T* scale_k, T* attn, T* d_temperature, T* d_weights, T* scratch) {
  const int64_t C = p.C;
  T* dS = scratch;
  T* col = scratch + C * C;
  std::fill(dS, dS + C * C, T(0));
  std::fill(attn, attn + C * C, T(0));
  for (int64_t i = 0; i < p.nb; ++i) {
    const T w = p.weights[i];
    const T* pr = probs + i * C * C;
    T dw = 0;
    for (int64_t r = 0; r < C; ++r) {
      const T* a = pr + r * C;
      const T* d = dA + r * C;
      T dot = 0;
      for (int64_t c = 0; c < C; ++c) dot += d[c] * a[c];
      dw += dot;
      T* s = dS + r * C;
      T* at = attn + r * C;
      for (int64_t c = 0; c < C; ++c) {
        s[c] += w * a[c] * (d[c] - dot);
        at[c] += w * a[c];
      }
    }
    d_weights[i] = dw;
  }
  const T* norm_q = norms;
  const T* norm_k = norms + C;
  T dtemp = 0;
  std::fill(col, col + C, T(0));
  for (int64_t r = 0; r < C; ++r) {
    const T nq = std::max(norm_q[r], p.eps);
    T row = 0;
    for (int64_t c = 0; c < C; ++c) {
      const T g = gram[r * C + c];
      const T ds = dS[r * C + c];
      dtemp += ds * g;
      const T dg = p.temperature * ds;
      row += dg * g;
      col[c] += dg * g;
      P[r * C + c] = dg / (nq * std::max(norm_k[c], p.eps));
    }
    // F.normalize divides by max(‖x‖, eps): rows below eps get no projection term.
    scale_q[r] = norm_q[r] >= p.eps ? row / (nq * nq) : T(0);
  }
  for (int64_t c = 0; c < C; ++c) {
    const T nk = std::max(norm_k[c], p.eps);
    scale_k[c] = norm_k[c] >= p.eps ? col[c] / (nk * nk) : T(0);
  }
  *d_temperature = dtemp;
}

}  // namespace ddsa::cpu
