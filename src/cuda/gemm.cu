// The CUDA GEMM entry point: picks a kernel by dtype, shape and the device, and caches device properties.
//
//   m <= 8 and B K-contiguous (small-batch forward)  -> skinny kernel, one warp per output column, any dtype
//   float16, bfloat16 (sm_80+ for bfloat16)          -> tensor-core kernel, 128 x 128 tiles (split along K when
//                                                        they are too few and K is long)
//   float32                                           -> CUDA-core 128 x 128 tiles when they fill the GPU, else 64 x 64
//                                                        (split along K when even those are too few and K is long)
//   float64, and bfloat16 before sm_80                -> CUDA-core 64 x 64 tiles
#include <mutex>
#include <unordered_map>

#include "gemm_kernels.cuh"

namespace linneuron {
namespace cuda {

DeviceInfo current_device_info(const char* op) {
  int device = 0;
  check_call(cudaGetDevice(&device), op, "cudaGetDevice");
  static std::mutex mutex;
  static std::unordered_map<int, DeviceInfo> cache;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const auto found = cache.find(device);
    if (found != cache.end()) return found->second;
  }
  DeviceInfo info{};
  check_call(cudaDeviceGetAttribute(&info.sm_count, cudaDevAttrMultiProcessorCount, device), op,
             "cudaDeviceGetAttribute(multiprocessor count)");
  check_call(cudaDeviceGetAttribute(&info.cc_major, cudaDevAttrComputeCapabilityMajor, device), op,
             "cudaDeviceGetAttribute(compute capability)");
  check_call(cudaDeviceGetAttribute(&info.threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device), op,
             "cudaDeviceGetAttribute(threads per multiprocessor)");
  std::lock_guard<std::mutex> lock(mutex);
  cache[device] = info;
  return info;
}

namespace {

template <typename T>
void gemm_typed(const GemmCall& call, cudaStream_t stream) {
  const GemmParams<T> p = typed<T>(call);
  const DeviceInfo dev = current_device_info("gemm");
  if (p.m <= kSkinnyMaxM && p.b_rs == 1) {
    launch_skinny<T>(p, stream, dev);
  } else if constexpr (std::is_same<T, float>::value) {
    const int64_t large_tiles = ceil_div(p.m, 128) * ceil_div(p.n, 128);
    if (large_tiles >= dev.sm_count)
      launch_simt_large<T>(p, stream);
    else
      launch_simt_small<T>(p, stream, dev);
  } else if constexpr (std::is_same<T, double>::value) {
    launch_simt_small<T>(p, stream, dev);
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    if (dev.cc_major >= 8)
      launch_wmma<T>(p, stream, dev);
    else
      launch_simt_small<T>(p, stream, dev);
  } else {
    launch_wmma<T>(p, stream, dev);
  }
}

}  // namespace

void gemm(int dtype, const GemmCall& g, void* stream) {
  if (g.m <= 0 || g.n <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32:
      gemm_typed<float>(g, s);
      break;
    case kFloat64:
      gemm_typed<double>(g, s);
      break;
    case kFloat16:
      gemm_typed<__half>(g, s);
      break;
    case kBFloat16:
      gemm_typed<__nv_bfloat16>(g, s);
      break;
    default:
      throw std::invalid_argument("linneuron._cuda.gemm: unknown dtype code " + std::to_string(dtype));
  }
}

}  // namespace cuda
}  // namespace linneuron
