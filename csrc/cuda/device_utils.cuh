// Device helpers shared by the CUDA kernels: dtype conversion, tile loads into shared memory,
// warp reductions, launch-error checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels.cuh"

namespace ddsa::cuda {

inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("ddsa cuda: launching ") + what + " failed: " + cudaGetErrorString(err));
}

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Loads rows [0, rows) × pixels [n0, n0 + TILE) of one (b, h) slice into smem[r * ld + j] as
// float, zero outside [0, C) × [0, N). With vector_loads the caller guarantees 16-byte aligned
// row starts (pointer and row stride), so full 16-byte groups are read with one instruction.
template <typename T, int TILE>
__device__ __forceinline__ void load_tile(float* smem, int ld, const T* src, int64_t row_stride, int C, int rows,
                                          int64_t n0, int64_t N, bool vector_loads) {
  constexpr int VEC = 16 / sizeof(T);
  static_assert(TILE % VEC == 0, "tile must hold whole 16-byte groups");
  constexpr int GROUPS = TILE / VEC;
  for (int idx = threadIdx.x + threadIdx.y * blockDim.x; idx < rows * GROUPS;
       idx += blockDim.x * blockDim.y) {
    const int r = idx / GROUPS;
    const int j0 = (idx % GROUPS) * VEC;
    float* dst = smem + r * ld + j0;
    const int64_t n = n0 + j0;
    if (r >= C) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) dst[e] = 0.f;
      continue;
    }
    const T* p = src + r * row_stride + n;
    if (vector_loads && n + VEC <= N) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < VEC; ++i) dst[i] = to_float<T>(e[i]);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) dst[i] = n + i < N ? to_float<T>(p[i]) : 0.f;
    }
  }
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace ddsa::cuda
