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

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Raw bits of one element and back (register-only: no address of a register array is taken).
__device__ __forceinline__ unsigned bits_of(float x) { return __float_as_uint(x); }
__device__ __forceinline__ unsigned bits_of(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ unsigned bits_of(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }

template <typename T>
__device__ __forceinline__ float float_of_bits(unsigned b);
template <>
__device__ __forceinline__ float float_of_bits<float>(unsigned b) { return __uint_as_float(b); }
template <>
__device__ __forceinline__ float float_of_bits<__half>(unsigned b) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(b)));
}
template <>
__device__ __forceinline__ float float_of_bits<__nv_bfloat16>(unsigned b) { return __uint_as_float(b << 16); }

// 16 bytes of one row (pixels n .. n + 16/sizeof(T) − 1) as raw bits, zero past N. One 16-byte
// load when `vector_loads` (caller: p is 16-byte aligned) and the group is whole; else element
// by element. Held in registers between the global load and the shared-memory store, so that
// the next tile is in flight while the current one is computed.
template <typename T>
__device__ __forceinline__ uint4 fetch16(const T* p, int64_t n, int64_t N, bool vector_loads) {
  constexpr int VEC = 16 / sizeof(T);
  if (vector_loads && n + VEC <= N) return __ldg(reinterpret_cast<const uint4*>(p));
  unsigned w[4] = {0u, 0u, 0u, 0u};
  constexpr int PER_WORD = VEC / 4;  // elements per 32-bit word: 1 (fp32) or 2
  constexpr int SHIFT = 32 / PER_WORD;
#pragma unroll
  for (int i = 0; i < VEC; ++i)
    if (n + i < N) w[i / PER_WORD] |= bits_of(p[i]) << (SHIFT * (i % PER_WORD) % 32);
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// The VEC = 16/sizeof(T) elements of a fetch16 group as float.
template <typename T>
__device__ __forceinline__ void unpack16(const uint4& raw, float (&out)[16 / sizeof(T)]) {
  const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = float_of_bits<T>(w[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = float_of_bits<T>(w[i] & 0xffffu);
      out[2 * i + 1] = float_of_bits<T>(w[i] >> 16);
    }
  }
}

// dst[0..K) = src[0..K) from shared memory with the widest aligned vector loads
// (caller: src is 16-byte aligned when K % 4 == 0, 8-byte aligned when K % 2 == 0).
template <int K>
__device__ __forceinline__ void load_row(float (&dst)[K], const float* src) {
  if constexpr (K % 4 == 0) {
#pragma unroll
    for (int i = 0; i < K; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      dst[i] = v.x, dst[i + 1] = v.y, dst[i + 2] = v.z, dst[i + 3] = v.w;
    }
  } else if constexpr (K % 2 == 0) {
#pragma unroll
    for (int i = 0; i < K; i += 2) {
      const float2 v = *reinterpret_cast<const float2*>(src + i);
      dst[i] = v.x, dst[i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < K; ++i) dst[i] = src[i];
  }
}

// acc += a bᵀ with a = a_src[0..RM) and b = b_src[0..RN) from shared memory (aligned as load_row needs):
// one rank-1 update of a register tile, each element one fmaf.
template <int RM, int RN>
__device__ __forceinline__ void rank1_update(float (&acc)[RM][RN], const float* a_src, const float* b_src) {
  float a[RM], b[RN];
  load_row<RM>(a, a_src);
  load_row<RN>(b, b_src);
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int j = 0; j < RN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
}

// Streaming multiprocessors of the current device (cached per device).
inline int multiprocessor_count() {
  static int cached[64] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 80;
  if (cached[device] == 0) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 80;
    cached[device] = sms;
  }
  return cached[device];
}

// Resident blocks per SM of `kernel` with `threads` threads and `smem` bytes of dynamic shared
// memory (raising the kernel's dynamic shared-memory limit first when smem > 48 KiB).
template <typename K>
int blocks_per_sm(K kernel, int threads, size_t smem) {
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) != cudaSuccess)
    throw std::runtime_error("ddsa cuda: cannot reserve " + std::to_string(smem) + " bytes of shared memory");
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem) != cudaSuccess || n < 1) n = 1;
  return n;
}

}  // namespace ddsa::cuda
