// Entry points of the compiled extension ddsa_kernels._C (see ddsa_kernels/_registry.py for
// the backend interface these implement).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
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

// Channel LayerNorm of x (B, C, H, W), any strides, over C per pixel; weight, bias (C,).
using NormFwd = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using NormBwd = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
// (y (B, C, H, W) contiguous, mean (B, H, W), rstd (B, H, W)); statistics in float32 (float64 for float64).
NormFwd channel_norm_forward_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 double eps, bool subtract_mean);
// (dx (B, C, H, W) contiguous, dw (C,), db (C,)) with dw, db in the statistics' dtype.
NormBwd channel_norm_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& mean, const at::Tensor& rstd, bool subtract_mean);

// Depth-wise convolution of x (B, C, H, W) with weight (C, 1, K, K), K odd, stride 1, dilation ≥ 1, zero
// padding dilation·(K/2); float32 or float64. Forward → y (B, C, H, W); backward → (dx, dweight, dbias (C,)).
at::Tensor depthwise_conv_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias, int64_t dilation);
std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv_backward_cpu(const at::Tensor& grad_y,
                                                                           const at::Tensor& x,
                                                                           const at::Tensor& weight,
                                                                           int64_t dilation);
at::Tensor depthwise_chain_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_chain_backward_cpu(const at::Tensor& grad_y,
                                                                            const at::Tensor& x, const at::Tensor& y,
                                                                            const at::Tensor& weight);
// Inference of z = W_out · chain(W_in · x + b_in) + b_out (1×1 convolutions around the depth-wise ReLU
// chain), walked in bands of `band` rows; x (B, C, H, W), w_in (n·C_h, C, 1, 1), w_dw (C_h, 1, K, K),
// w_out (C_out, n·C_h, 1, 1); float32 or float64. No backward: training uses the unfused ops.
at::Tensor depthwise_chain_mlp_forward_cpu(const at::Tensor& x, const at::Tensor& w_in,
                                           const std::optional<at::Tensor>& b_in, const at::Tensor& w_dw,
                                           const std::optional<at::Tensor>& b_dw, const at::Tensor& w_out,
                                           const std::optional<at::Tensor>& b_out, int64_t band);
// Restormer's gated feed-forward (GDFN): z = W_out · (gelu(d_a) · d_g) + b_out with d = k ⊛ (W_in · x + b_in) + b_dw
// split into halves d_a, d_g; x (B, C, H, W), w_in (2h, C, 1, 1), w_dw (2h, 1, K, K), w_out (C_out, h, 1, 1);
// float32 or float64. Inference in bands of `band` rows; no backward.
at::Tensor gated_ffn_forward_cpu(const at::Tensor& x, const at::Tensor& w_in, const std::optional<at::Tensor>& b_in,
                                 const at::Tensor& w_dw, const std::optional<at::Tensor>& b_dw, const at::Tensor& w_out,
                                 const std::optional<at::Tensor>& b_out, int64_t band);
// Its middle, y = gelu(d_a) · d_g from u (B, 2h, H, W) → (B, h, H, W); the backward recomputes d from u and
// returns (du, dw_dw, db_dw (2h,)).
at::Tensor gated_depthwise_forward_cpu(const at::Tensor& u, const at::Tensor& w_dw,
                                       const std::optional<at::Tensor>& b_dw);
std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_depthwise_backward_cpu(const at::Tensor& grad_y,
                                                                            const at::Tensor& u,
                                                                            const at::Tensor& w_dw,
                                                                            const std::optional<at::Tensor>& b_dw);
// DRSformer's mixed-scale feed-forward: u (B, 2h, H, W) → m (B, 2h, H, W) through the two depth-wise stages
// (w3, w5 (2h, 1, K, K); w3_1, w5_1 (h, 2, K, K); K odd ≤ 7; biases or none), and its backward from the
// saved u and m → [du, dw3, db3, dw5, db5, dw3_1, db3_1, dw5_1, db5_1]; float32 or float64.
at::Tensor mixed_scale_ffn_mid_forward_cpu(const at::Tensor& u, const at::Tensor& w3,
                                           const std::optional<at::Tensor>& b3, const at::Tensor& w5,
                                           const std::optional<at::Tensor>& b5, const at::Tensor& w3_1,
                                           const std::optional<at::Tensor>& b3_1, const at::Tensor& w5_1,
                                           const std::optional<at::Tensor>& b5_1);
std::vector<at::Tensor> mixed_scale_ffn_mid_backward_cpu(const at::Tensor& grad_m, const at::Tensor& u,
                                                         const at::Tensor& m, const at::Tensor& w3,
                                                         const std::optional<at::Tensor>& b3, const at::Tensor& w5,
                                                         const std::optional<at::Tensor>& b5, const at::Tensor& w3_1,
                                                         const std::optional<at::Tensor>& b3_1,
                                                         const at::Tensor& w5_1,
                                                         const std::optional<at::Tensor>& b5_1);
// Inference of the whole block z = W_out · m(W_in · x + b_in) + b_out in bands of `band` rows (no backward).
at::Tensor mixed_scale_ffn_forward_cpu(const at::Tensor& x, const at::Tensor& w_in,
                                       const std::optional<at::Tensor>& b_in, const at::Tensor& w3,
                                       const std::optional<at::Tensor>& b3, const at::Tensor& w5,
                                       const std::optional<at::Tensor>& b5, const at::Tensor& w3_1,
                                       const std::optional<at::Tensor>& b3_1, const at::Tensor& w5_1,
                                       const std::optional<at::Tensor>& b5_1, const at::Tensor& w_out,
                                       const std::optional<at::Tensor>& b_out, int64_t band);

#ifdef DDSA_WITH_CUDA
Fwd forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                 const at::Tensor& weights, const std::vector<int64_t>& keep, double eps);
Bwd backward_cuda(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& temperature, const at::Tensor& weights, const at::Tensor& probs,
                  const at::Tensor& gram, const at::Tensor& norms, const std::vector<int64_t>& keep, double eps);
NormFwd channel_norm_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, double eps, bool subtract_mean);
NormBwd channel_norm_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& mean, const at::Tensor& rstd, bool subtract_mean);
#endif

namespace detail {
// Shared argument checks of both devices; names the offending argument.
void check_forward_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                        const at::Tensor& weights, const std::vector<int64_t>& keep, double eps);
void check_backward_args(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& probs,
                         const at::Tensor& gram, const at::Tensor& norms, const std::vector<int64_t>& keep);
// Channel norm checks shared by both devices; name the offending argument.
void check_channel_norm_args(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             double eps, bool subtract_mean);
void check_channel_norm_backward_args(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean,
                                      const at::Tensor& rstd);
// The CPU kernels' operand check: t must be a CPU tensor of `dtype` and, for numel ≥ 0, of shape (numel,);
// the message names the op and the argument.
void check_cpu_operand(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                       int64_t numel = -1);
// The same for an optional bias of shape (numel,), when given.
inline void check_cpu_operand(const std::optional<at::Tensor>& t, const char* op, const char* name,
                              at::ScalarType dtype, int64_t numel) {
  if (t.has_value()) check_cpu_operand(*t, op, name, dtype, numel);
}
// A view whose last dimension has stride 1 and whose rows do not overlap (copies otherwise).
at::Tensor rows_unit_stride(const at::Tensor& x);
}  // namespace detail

}  // namespace ddsa
