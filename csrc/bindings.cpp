// Python bindings of ddsa_kernels._C. Each op's ddsa_kernels/ops/<op>/extension.py wraps these as
// that op's "cpu" and "cuda" backends.
// torch/csrc/utils/pybind.h (tensor type casters) instead of torch/extension.h: the latter pulls
// in the whole C++ frontend and doubles this file's compile time.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include "ddsa.h"

namespace py = pybind11;

namespace {

bool has_cuda() {
#ifdef DDSA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Compiled CPU (and, when built with CUDA, GPU) kernels of ddsa_kernels.dual_attention, channel_norm, depthwise_conv and depthwise_chain";
  m.def("forward_cpu", &ddsa::forward_cpu, "(out, probs, gram, norms) of the fused op on CPU", py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("temperature"), py::arg("weights"), py::arg("keep"), py::arg("eps"));
  m.def("backward_cpu", &ddsa::backward_cpu, "(dq, dk, dv, d_temperature, d_weights) of the fused op on CPU",
        py::arg("grad_out"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("temperature"), py::arg("weights"),
        py::arg("probs"), py::arg("gram"), py::arg("norms"), py::arg("keep"), py::arg("eps"));
  m.def("channel_norm_forward_cpu", &ddsa::channel_norm_forward_cpu,
        "(y, mean, rstd) of the channel LayerNorm of x (B, C, H, W) on CPU", py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("eps"), py::arg("subtract_mean"));
  m.def("channel_norm_backward_cpu", &ddsa::channel_norm_backward_cpu, "(dx, dw, db) of the channel LayerNorm on CPU",
        py::arg("grad_y"), py::arg("x"), py::arg("weight"), py::arg("mean"), py::arg("rstd"),
        py::arg("subtract_mean"));
  m.def("depthwise_conv_forward_cpu", &ddsa::depthwise_conv_forward_cpu,
        "y of the depth-wise K×K convolution (stride 1, zero padding dilation·(K/2)) of x (B, C, H, W) on CPU",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("dilation") = 1);
  m.def("depthwise_conv_backward_cpu", &ddsa::depthwise_conv_backward_cpu,
        "(dx, dweight, dbias) of the depth-wise convolution on CPU", py::arg("grad_y"), py::arg("x"),
        py::arg("weight"), py::arg("dilation") = 1);
  m.def("depthwise_chain_forward_cpu", &ddsa::depthwise_chain_forward_cpu,
        "y of the depth-wise ReLU chain y_i = relu(k * (y_{i-1} + x_i)) over the channel groups of x on CPU",
        py::arg("x"), py::arg("weight"), py::arg("bias"));
  m.def("depthwise_chain_backward_cpu", &ddsa::depthwise_chain_backward_cpu,
        "(dx, dweight, dbias) of the depth-wise ReLU chain on CPU", py::arg("grad_y"), py::arg("x"), py::arg("y"),
        py::arg("weight"));
  m.def("depthwise_chain_mlp_forward_cpu", &ddsa::depthwise_chain_mlp_forward_cpu,
        "z = W_out · chain(W_in · x + b_in) + b_out on CPU, in bands of rows (inference only)", py::arg("x"),
        py::arg("w_in"), py::arg("b_in"), py::arg("w_dw"), py::arg("b_dw"), py::arg("w_out"), py::arg("b_out"),
        py::arg("band"));
  m.def("mixed_scale_ffn_mid_forward_cpu", &ddsa::mixed_scale_ffn_mid_forward_cpu,
        "m = [p, q] of DRSformer's mixed-scale feed-forward from its projection u on CPU", py::arg("u"),
        py::arg("w3"), py::arg("b3"), py::arg("w5"), py::arg("b5"), py::arg("w3_1"), py::arg("b3_1"), py::arg("w5_1"),
        py::arg("b5_1"));
  m.def("mixed_scale_ffn_mid_backward_cpu", &ddsa::mixed_scale_ffn_mid_backward_cpu,
        "[du, dw3, db3, dw5, db5, dw3_1, db3_1, dw5_1, db5_1] of the mixed-scale middle on CPU", py::arg("grad_m"),
        py::arg("u"), py::arg("m"), py::arg("w3"), py::arg("b3"), py::arg("w5"), py::arg("b5"), py::arg("w3_1"),
        py::arg("b3_1"), py::arg("w5_1"), py::arg("b5_1"));
  m.def("mixed_scale_ffn_forward_cpu", &ddsa::mixed_scale_ffn_forward_cpu,
        "z of DRSformer's mixed-scale feed-forward on CPU, in bands of rows (inference only)", py::arg("x"),
        py::arg("w_in"), py::arg("b_in"), py::arg("w3"), py::arg("b3"), py::arg("w5"), py::arg("b5"), py::arg("w3_1"),
        py::arg("b3_1"), py::arg("w5_1"), py::arg("b5_1"), py::arg("w_out"), py::arg("b_out"), py::arg("band"));
  m.def("gated_ffn_forward_cpu", &ddsa::gated_ffn_forward_cpu,
        "z = W_out · (gelu(d_a) · d_g) + b_out, d = dwconv(W_in · x + b_in), on CPU in bands of rows (inference only)",
        py::arg("x"), py::arg("w_in"), py::arg("b_in"), py::arg("w_dw"), py::arg("b_dw"), py::arg("w_out"),
        py::arg("b_out"), py::arg("band"));
  m.def("gated_depthwise_forward_cpu", &ddsa::gated_depthwise_forward_cpu,
        "y = gelu(d[:, :h]) · d[:, h:] with d the depth-wise convolution of u (B, 2h, H, W) on CPU", py::arg("u"),
        py::arg("w_dw"), py::arg("b_dw"));
  m.def("gated_depthwise_backward_cpu", &ddsa::gated_depthwise_backward_cpu,
        "(du, dw_dw, db_dw) of the gated depth-wise convolution on CPU (recomputes d from u)", py::arg("grad_y"),
        py::arg("u"), py::arg("w_dw"), py::arg("b_dw"));
  m.def("cpu_gemm_provider", &ddsa::cpu_gemm_provider, "Which GEMM the CPU kernels call");
  m.def("has_cuda", &has_cuda, "True when the extension was compiled with its CUDA kernels");
#ifdef DDSA_WITH_CUDA
  m.def("forward_cuda", &ddsa::forward_cuda, "(out, probs, gram, norms) of the fused op on CUDA", py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("temperature"), py::arg("weights"), py::arg("keep"), py::arg("eps"));
  m.def("backward_cuda", &ddsa::backward_cuda, "(dq, dk, dv, d_temperature, d_weights) of the fused op on CUDA",
        py::arg("grad_out"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("temperature"), py::arg("weights"),
        py::arg("probs"), py::arg("gram"), py::arg("norms"), py::arg("keep"), py::arg("eps"));
  m.def("channel_norm_forward_cuda", &ddsa::channel_norm_forward_cuda,
        "(y, mean, rstd) of the channel LayerNorm of x (B, C, H, W) on CUDA", py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("eps"), py::arg("subtract_mean"));
  m.def("channel_norm_backward_cuda", &ddsa::channel_norm_backward_cuda,
        "(dx, dw, db) of the channel LayerNorm on CUDA", py::arg("grad_y"), py::arg("x"), py::arg("weight"),
        py::arg("mean"), py::arg("rstd"), py::arg("subtract_mean"));
#endif
}
