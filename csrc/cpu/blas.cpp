#include "blas.h"

#include <ATen/ATen.h>

#include <climits>
#include <cmath>

// Weak references: resolved from libtorch_cpu (which links MKL or OpenBLAS and exports the
// Fortran BLAS) when present, null otherwise. LP64 interface, no hidden string lengths needed
// for single-character arguments.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace ddsa::cpu {
namespace {

template <typename T>
void fortran_gemm(char ta, char tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
                  T* c, int ldc) {
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
  } else {
    dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
  }
}

template <typename T>
void naive_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
                T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T s = 0;
      for (int64_t p = 0; p < k; ++p) s += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * ldc + j] = s;
    }
}

// Calls the Fortran BLAS on a small row-major problem with all transpose combinations and
// compares with a naive loop: guards against an ILP64 or otherwise incompatible BLAS.
template <typename T>
bool blas_self_test() {
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_ == nullptr) return false;
  } else {
    if (dgemm_ == nullptr) return false;
  }
  const int64_t m = 3, n = 5, k = 4;
  T a[3 * 7], b[5 * 7], c[3 * 6], ref[3 * 6];
  for (int i = 0; i < 21; ++i) a[i] = T(0.25) * T((i * 7) % 11) - T(1);
  for (int i = 0; i < 35; ++i) b[i] = T(0.5) * T((i * 5) % 13) - T(2);
  for (int mode = 0; mode < 4; ++mode) {
    const bool ta = mode & 1, tb = mode & 2;
    const int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 1;
    for (auto& x : c) x = T(7);
    // row-major C = op(A) op(B)  <=>  column-major Cᵀ = op(B)ᵀ op(A)ᵀ
    fortran_gemm<T>(tb ? 'T' : 'N', ta ? 'T' : 'N', int(n), int(m), int(k), T(1), b, int(ldb), a, int(lda), T(0), c,
                    int(ldc));
    naive_gemm<T>(ta, tb, m, n, k, a, lda, b, ldb, ref, ldc);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (std::abs(c[i * ldc + j] - ref[i * ldc + j]) > T(1e-4)) return false;
  }
  return true;
}

template <typename T>
bool use_blas() {
  static const bool ok = blas_self_test<T>();
  return ok;
}

template <typename T>
at::Tensor view(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  auto dtype = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, at::TensorOptions().dtype(dtype));
}

template <typename T>
void gemm_impl(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  const bool fits_int = std::max({m, n, k, lda, ldb, ldc}) <= INT_MAX;
  if (fits_int && use_blas<T>()) {
    fortran_gemm<T>(tb ? 'T' : 'N', ta ? 'T' : 'N', int(n), int(m), int(k), alpha, b, int(ldb), a, int(lda), beta, c,
                    int(ldc));
    return;
  }
  at::Tensor op_a = ta ? view(a, k, m, lda).t() : view(a, m, k, lda);
  at::Tensor op_b = tb ? view(b, n, k, ldb).t() : view(b, k, n, ldb);
  view(c, m, n, ldc).addmm_(op_a, op_b, beta, alpha);
}

}  // namespace

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_impl<float>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  gemm_impl<double>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

std::string gemm_provider() {
  return use_blas<float>() ? "Fortran BLAS (sgemm_/dgemm_) exported by libtorch_cpu"
                           : "ATen addmm_ fallback (no usable sgemm_ in libtorch_cpu)";
}

}  // namespace ddsa::cpu
