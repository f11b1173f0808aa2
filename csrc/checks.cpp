#include "ddsa.h"

#include <c10/util/Exception.h>

#include <string>

namespace ddsa::detail {

void check_forward_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                        const at::Tensor& weights, const std::vector<int64_t>& keep, double eps) {
  TORCH_CHECK(q.dim() == 4, "ddsa: q must have shape (B, H, C, N), got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes(), "ddsa: k has shape ", k.sizes(), " but q has shape ", q.sizes());
  TORCH_CHECK(v.sizes() == q.sizes(), "ddsa: v has shape ", v.sizes(), " but q has shape ", q.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "ddsa: q, k, v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
              v.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device() && temperature.device() == q.device() &&
                  weights.device() == q.device(),
              "ddsa: q, k, v, temperature and weights must be on one device");
  const auto st = q.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "ddsa: unsupported dtype ", st, " (expected float32, float64, float16 or bfloat16)");
  const int64_t C = q.size(2);
  TORCH_CHECK(temperature.numel() == q.size(1), "ddsa: temperature must hold one value per head (H=", q.size(1),
              "), got ", temperature.numel());
  TORCH_CHECK(!keep.empty(), "ddsa: at least one branch is needed");
  TORCH_CHECK(weights.numel() == static_cast<int64_t>(keep.size()), "ddsa: weights has ", weights.numel(),
              " values for ", keep.size(), " branches");
  for (size_t i = 0; i < keep.size(); ++i)
    TORCH_CHECK(keep[i] >= 0 && keep[i] <= C, "ddsa: keep[", i, "]=", keep[i], " is outside 0..C (C=", C, ")");
  TORCH_CHECK(eps > 0, "ddsa: eps must be positive, got ", eps);
}

void check_backward_args(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& probs,
                         const at::Tensor& gram, const at::Tensor& norms, const std::vector<int64_t>& keep) {
  TORCH_CHECK(grad_out.sizes() == q.sizes(), "ddsa: grad_out has shape ", grad_out.sizes(), " but q has shape ",
              q.sizes());
  const int64_t B = q.size(0), H = q.size(1), C = q.size(2), nb = static_cast<int64_t>(keep.size());
  TORCH_CHECK(probs.dim() == 5 && probs.size(0) == B && probs.size(1) == H && probs.size(2) == nb &&
                  probs.size(3) == C && probs.size(4) == C,
              "ddsa: probs must have shape (B, H, n_branches, C, C), got ", probs.sizes());
  TORCH_CHECK(gram.dim() == 4 && gram.size(0) == B && gram.size(1) == H && gram.size(2) == C && gram.size(3) == C,
              "ddsa: gram must have shape (B, H, C, C), got ", gram.sizes());
  TORCH_CHECK(norms.dim() == 4 && norms.size(0) == B && norms.size(1) == H && norms.size(2) == 2 && norms.size(3) == C,
              "ddsa: norms must have shape (B, H, 2, C), got ", norms.sizes());
  for (const auto* t : {&probs, &gram, &norms})
    TORCH_CHECK(t->device() == q.device(), "ddsa: saved statistics must be on q's device");
}

void check_channel_norm_args(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             double eps, bool subtract_mean) {
  TORCH_CHECK(x.dim() == 4, "ddsa channel_norm: x must have shape (B, C, H, W), got ", x.sizes());
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "ddsa channel_norm: unsupported dtype ", st, " of x (expected float32, float64, float16 or bfloat16)");
  const int64_t C = x.size(1);
  TORCH_CHECK(C >= 1, "ddsa channel_norm: x needs at least one channel");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == C, "ddsa channel_norm: weight must have shape (C,) with C=", C,
              ", got ", weight.sizes());
  TORCH_CHECK(weight.device() == x.device(), "ddsa channel_norm: weight is on ", weight.device(), " but x is on ",
              x.device());
  if (bias.has_value()) {
    TORCH_CHECK(subtract_mean, "ddsa channel_norm: bias must be None when subtract_mean=False");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C, "ddsa channel_norm: bias must have shape (C,) with C=", C,
                ", got ", bias->sizes());
    TORCH_CHECK(bias->device() == x.device(), "ddsa channel_norm: bias is on ", bias->device(), " but x is on ",
                x.device());
  }
  TORCH_CHECK(eps > 0, "ddsa channel_norm: eps must be positive, got ", eps);
}

void check_channel_norm_backward_args(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean,
                                      const at::Tensor& rstd) {
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "ddsa channel_norm: grad_y has shape ", grad_y.sizes(),
              " but x has shape ", x.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type(), "ddsa channel_norm: grad_y has dtype ", grad_y.scalar_type(),
              " but x has dtype ", x.scalar_type());
  for (const auto* t : {&mean, &rstd}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == x.size(0) && t->size(1) == x.size(2) && t->size(2) == x.size(3),
                "ddsa channel_norm: mean and rstd must have shape (B, H, W), got ", t->sizes());
    TORCH_CHECK(t->device() == x.device(), "ddsa channel_norm: saved statistics must be on x's device");
  }
  TORCH_CHECK(grad_y.device() == x.device(), "ddsa channel_norm: grad_y is on ", grad_y.device(), " but x is on ",
              x.device());
}

void check_cpu_operand(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                       int64_t numel) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && (numel < 0 || (t.dim() == 1 && t.numel() == numel)),
              "ddsa ", op, ": ", name, " must be a CPU tensor of x's dtype ", dtype,
              numel < 0 ? "" : " and shape (" + std::to_string(numel) + ",)", ", got ", t.sizes(), " ",
              t.scalar_type(), " on ", t.device());
}

at::Tensor rows_unit_stride(const at::Tensor& x) {
  const int64_t C = x.size(2), N = x.size(3);
  const bool unit = N <= 1 || x.stride(3) == 1;
  const bool rows_ok = C <= 1 || x.stride(2) >= N;
  return unit && rows_ok ? x : x.contiguous();
}

}  // namespace ddsa::detail
