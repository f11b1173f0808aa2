// Entry points of the compiled extension ddsa_kernels._C (see ddsa_kernels/backends.py for
// the backend interface these implement).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace ddsa {

using Fwd = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Bwd = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// (out, probs, gram, norms) from q, k, v (B, H, C, N), temperature (H,), weights (nb,).
Fwd forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                const at::Tensor& weights, const std::vector<int64_t>& keep, double eps);
// (dq, dk, dv, d_temperature (H,), d_weights (nb,)).
Bwd backward_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& temperature, const at::Tensor& weights, const at::Tensor& probs,
                 const at::Tensor& gram, const at::Tensor& norms, const std::vector<int64_t>& keep, double eps);
std::string cpu_gemm_provider();

#ifdef DDSA_WITH_CUDA
Fwd forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                 const at::Tensor& weights, const std::vector<int64_t>& keep, double eps);
Bwd backward_cuda(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& temperature, const at::Tensor& weights, const at::Tensor& probs,
                  const at::Tensor& gram, const at::Tensor& norms, const std::vector<int64_t>& keep, double eps);
#endif

namespace detail {
// Shared argument checks of both devices; names the offending argument.
void check_forward_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                        const at::Tensor& weights, const std::vector<int64_t>& keep, double eps);
void check_backward_args(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& probs,
                         const at::Tensor& gram, const at::Tensor& norms, const std::vector<int64_t>& keep);
// A view whose last dimension has stride 1 and whose rows do not overlap (copies otherwise).
at::Tensor rows_unit_stride(const at::Tensor& x);
}  // namespace detail

}  // namespace ddsa
