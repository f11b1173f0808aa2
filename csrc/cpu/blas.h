// Row-major GEMM on raw pointers for the CPU sweeps (float and double).
//
// Uses the Fortran BLAS that libtorch_cpu exports (MKL / OpenBLAS `sgemm_`, `dgemm_`) when it
// resolves at load time and passes a self-test; otherwise falls back to ATen's addmm_ on
// from_blob views. Either way no copy of the operands is made.
#pragma once

#include <cstdint>
#include <string>

namespace ddsa::cpu {

// C (m×n, row stride ldc) = alpha · op(A) · op(B) + beta · C, all row-major.
// op(A) is m×k: A is m×k (lda ≥ k) or, with trans_a, k×m (lda ≥ m). Likewise op(B) is k×n.
// beta == 0 ignores C's previous contents (NaNs included).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

// Which GEMM the CPU kernels use ("BLAS sgemm_/dgemm_ from libtorch" or the ATen fallback).
std::string gemm_provider();

}  // namespace ddsa::cpu
