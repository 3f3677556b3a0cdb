// Bandwidth-bound CUDA kernels: the unit step, its surrogate backward, and the bias gradient (column sums of dY).
// The scalar maths comes from src/cpp/neuron_math.h, shared with the CPU kernels; 16-bit types compute in float.
#include "common.cuh"

namespace linneuron {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T step_of(T v) {
  using Acc = typename AccOf<T>::type;
  return from_acc<T, Acc>(unit_step(to_acc<Acc>(v)));
}

template <typename T>
__device__ __forceinline__ T surrogate_grad_of(T z, T gy, Surrogate kind, typename AccOf<T>::type alpha) {
  using Acc = typename AccOf<T>::type;
  return from_acc<T, Acc>(to_acc<Acc>(gy) * surrogate_derivative(kind, to_acc<Acc>(z), alpha));
}

template <typename T>
union Vec16 {
  uint4 v;
  T e[16 / sizeof(T)];
};

// out[e] = H(in[e]) for e < count, both contiguous. With vec (both 16-byte aligned), whole 16-byte vectors go
// through the grid-stride loop and the last count % VEC elements are done one by one.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    step_flat_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t count, bool vec) {
  constexpr int VEC = 16 / static_cast<int>(sizeof(T));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t vectors = count / VEC;
    const uint4* src = reinterpret_cast<const uint4*>(in);
    uint4* dst = reinterpret_cast<uint4*>(out);
    for (int64_t v = first; v < vectors; v += stride) {
      Vec16<T> x;
      x.v = __ldg(src + v);
#pragma unroll
      for (int q = 0; q < VEC; ++q) x.e[q] = step_of(x.e[q]);
      dst[v] = x.v;
    }
    done = vectors * VEC;
  }
  for (int64_t e = done + first; e < count; e += stride) out[e] = step_of(in[e]);
}

// The general case: a rows x cols grid with any element strides, walked by flat index.
template <typename T>
__global__ void __launch_bounds__(kThreads) step_strided_kernel(int64_t rows, int64_t cols, const T* in, int64_t in_rs,
                                                                int64_t in_cs, T* out, int64_t out_rs, int64_t out_cs) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * cols; e += stride) {
    const int64_t r = e / cols, c = e - r * cols;
    out[r * out_rs + c * out_cs] = step_of(in[r * in_rs + c * in_cs]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    step_backward_flat_kernel(const T* __restrict__ z, const T* __restrict__ gy, T* __restrict__ gz, int64_t count,
                              bool vec, Surrogate kind, typename AccOf<T>::type alpha) {
  constexpr int VEC = 16 / static_cast<int>(sizeof(T));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t vectors = count / VEC;
    for (int64_t v = first; v < vectors; v += stride) {
      Vec16<T> zv, gv, out;
      zv.v = __ldg(reinterpret_cast<const uint4*>(z) + v);
      gv.v = __ldg(reinterpret_cast<const uint4*>(gy) + v);
#pragma unroll
      for (int q = 0; q < VEC; ++q) out.e[q] = surrogate_grad_of(zv.e[q], gv.e[q], kind, alpha);
      reinterpret_cast<uint4*>(gz)[v] = out.v;
    }
    done = vectors * VEC;
  }
  for (int64_t e = done + first; e < count; e += stride) gz[e] = surrogate_grad_of(z[e], gy[e], kind, alpha);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    step_backward_strided_kernel(int64_t rows, int64_t cols, const T* z, int64_t z_rs, int64_t z_cs, const T* gy,
                                 int64_t gy_rs, int64_t gy_cs, T* gz, int64_t gz_rs, int64_t gz_cs, Surrogate kind,
                                 typename AccOf<T>::type alpha) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * cols; e += stride) {
    const int64_t r = e / cols, c = e - r * cols;
    gz[r * gz_rs + c * gz_cs] = surrogate_grad_of(z[r * z_rs + c * z_cs], gy[r * gy_rs + c * gy_cs], kind, alpha);
  }
}

// db(j) = [db(j) +] sum_i dY(i, j). Block (32, kRowLanes): threadIdx.x picks the column (coalesced when dY's
// columns are contiguous), threadIdx.y strides over the block's rows; the kRowLanes partial sums are then added in
// a fixed order. With few columns and many rows, blockIdx.y splits the rows into chunks of rows_per_chunk that
// write their sums to partial[chunk][n], and bias_grad_reduce_kernel adds the chunks in order. Either way the
// summation order depends on the shape only (deterministic, no atomics).
constexpr int kRowLanes = 16;

template <typename T>
__global__ void __launch_bounds__(32 * kRowLanes)
    bias_grad_kernel(int64_t m, int64_t n, const T* __restrict__ dy, int64_t dy_rs, int64_t dy_cs, T* db,
                     int64_t db_stride, bool accumulate, int64_t rows_per_chunk,
                     typename AccOf<T>::type* __restrict__ partial) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc lanes[kRowLanes][33];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t row_end = (m - row_begin) < rows_per_chunk ? m : row_begin + rows_per_chunk;
  Acc sum = Acc(0);
  if (j < n) {
    const T* col = dy + j * dy_cs;
#pragma unroll 4
    for (int64_t i = row_begin + threadIdx.y; i < row_end; i += kRowLanes) sum += to_acc<Acc>(col[i * dy_rs]);
  }
  lanes[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && j < n) {
    Acc total = Acc(0);
#pragma unroll
    for (int r = 0; r < kRowLanes; ++r) total += lanes[r][threadIdx.x];
    if (partial != nullptr) {
      partial[static_cast<int64_t>(blockIdx.y) * n + j] = total;
    } else {
      T* dst = db + j * db_stride;
      if (accumulate) total += to_acc<Acc>(*dst);
      *dst = from_acc<T, Acc>(total);
    }
  }
}

// db(j) = [db(j) +] sum over chunks c, in order, of partial[c][j].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    bias_grad_reduce_kernel(int64_t n, const typename AccOf<T>::type* __restrict__ partial, int64_t chunks, T* db,
                            int64_t db_stride, bool accumulate) {
  using Acc = typename AccOf<T>::type;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += stride) {
    Acc total = partial[j];
    for (int64_t c = 1; c < chunks; ++c) total += partial[c * n + j];
    T* dst = db + j * db_stride;
    if (accumulate) total += to_acc<Acc>(*dst);
    *dst = from_acc<T, Acc>(total);
  }
}

bool contiguous_rows(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  return cs == 1 && (rows == 1 || rs == cols);
}

template <typename T>
void step_forward_typed(int64_t rows, int64_t cols, const T* in, int64_t in_rs, int64_t in_cs, T* out, int64_t out_rs,
                        int64_t out_cs, cudaStream_t stream) {
  const DeviceInfo dev = current_device_info("step_forward");
  const int64_t count = rows * cols;
  if (contiguous_rows(rows, cols, in_rs, in_cs) && contiguous_rows(rows, cols, out_rs, out_cs)) {
    constexpr int VEC = 16 / static_cast<int>(sizeof(T));
    const bool vec = aligned_to(in, 16) && aligned_to(out, 16);
    const unsigned int blocks = grid_stride_blocks(vec ? ceil_div(count, VEC) : count, kThreads, dev);
    step_flat_kernel<T><<<blocks, kThreads, 0, stream>>>(in, out, count, vec);
  } else {
    const unsigned int blocks = grid_stride_blocks(count, kThreads, dev);
    step_strided_kernel<T><<<blocks, kThreads, 0, stream>>>(rows, cols, in, in_rs, in_cs, out, out_rs, out_cs);
  }
  check_launch("step_forward");
}

template <typename T>
void step_backward_typed(int64_t rows, int64_t cols, const T* z, int64_t z_rs, int64_t z_cs, const T* gy, int64_t gy_rs,
                         int64_t gy_cs, T* gz, int64_t gz_rs, int64_t gz_cs, Surrogate kind, double alpha,
                         cudaStream_t stream) {
  using Acc = typename AccOf<T>::type;
  const DeviceInfo dev = current_device_info("step_backward");
  const int64_t count = rows * cols;
  if (contiguous_rows(rows, cols, z_rs, z_cs) && contiguous_rows(rows, cols, gy_rs, gy_cs) &&
      contiguous_rows(rows, cols, gz_rs, gz_cs)) {
    constexpr int VEC = 16 / static_cast<int>(sizeof(T));
    const bool vec = aligned_to(z, 16) && aligned_to(gy, 16) && aligned_to(gz, 16);
    const unsigned int blocks = grid_stride_blocks(vec ? ceil_div(count, VEC) : count, kThreads, dev);
    step_backward_flat_kernel<T><<<blocks, kThreads, 0, stream>>>(z, gy, gz, count, vec, kind, static_cast<Acc>(alpha));
  } else {
    const unsigned int blocks = grid_stride_blocks(count, kThreads, dev);
    step_backward_strided_kernel<T><<<blocks, kThreads, 0, stream>>>(rows, cols, z, z_rs, z_cs, gy, gy_rs, gy_cs, gz,
                                                                     gz_rs, gz_cs, kind, static_cast<Acc>(alpha));
  }
  check_launch("step_backward");
}

// Rows per chunk below which the row split is not worth its second pass.
constexpr int64_t kMinRowsPerChunk = 1024;

template <typename T>
void bias_grad_typed(int64_t m, int64_t n, const T* dy, int64_t dy_rs, int64_t dy_cs, T* db, int64_t db_stride,
                     bool accumulate, cudaStream_t stream) {
  using Acc = typename AccOf<T>::type;
  const int64_t col_blocks = ceil_div(n, 32);
  if (col_blocks > 0x7fffffff) throw std::runtime_error("linneuron._cuda.bias_grad: too many columns for one launch");
  const dim3 block(32, kRowLanes);
  // Too few column strips to fill the GPU (narrow layers, large batches): split the rows as well, aiming at two
  // blocks per multiprocessor, through a stream-ordered workspace (valid under graph capture). Without one, or when
  // the rows are few, one block per column strip walks all rows.
  const DeviceInfo dev = current_device_info("bias_grad");
  int64_t chunks = 1;
  if (col_blocks < dev.sm_count && m >= 2 * kMinRowsPerChunk) {
    chunks = ceil_div(2 * static_cast<int64_t>(dev.sm_count), col_blocks);
    chunks = chunks < m / kMinRowsPerChunk ? chunks : m / kMinRowsPerChunk;
    chunks = chunks < 65535 ? chunks : 65535;
  }
  if (chunks > 1) {
    const int64_t rows_per_chunk = ceil_div(m, chunks);
    chunks = ceil_div(m, rows_per_chunk);
    void* workspace = nullptr;
    if (cudaMallocAsync(&workspace, static_cast<size_t>(chunks * n) * sizeof(Acc), stream) == cudaSuccess) {
      Acc* partial = static_cast<Acc*>(workspace);
      bias_grad_kernel<T>
          <<<dim3(static_cast<unsigned int>(col_blocks), static_cast<unsigned int>(chunks)), block, 0, stream>>>(
              m, n, dy, dy_rs, dy_cs, db, db_stride, accumulate, rows_per_chunk, partial);
      check_launch("bias_grad");
      bias_grad_reduce_kernel<T><<<grid_stride_blocks(n, kThreads, dev), kThreads, 0, stream>>>(n, partial, chunks, db,
                                                                                                db_stride, accumulate);
      check_launch("bias_grad");
      check_call(cudaFreeAsync(workspace, stream), "bias_grad", "cudaFreeAsync");
      return;
    }
    cudaGetLastError();  // no stream-ordered allocation: clear the error and walk all rows per strip
  }
  bias_grad_kernel<T><<<static_cast<unsigned int>(col_blocks), block, 0, stream>>>(
      m, n, dy, dy_rs, dy_cs, db, db_stride, accumulate, m > 0 ? m : 1, nullptr);
  check_launch("bias_grad");
}

template <typename F>
void by_dtype(int dtype, const char* op, F&& f) {
  switch (dtype) {
    case kFloat32:
      f(float{});
      break;
    case kFloat64:
      f(double{});
      break;
    case kFloat16:
      f(__half{});
      break;
    case kBFloat16:
      f(__nv_bfloat16{});
      break;
    default:
      throw std::invalid_argument(std::string("linneuron._cuda.") + op + ": unknown dtype code " +
                                  std::to_string(dtype));
  }
}

}  // namespace

void step_forward(int dtype, int64_t rows, int64_t cols, const void* in, int64_t in_rs, int64_t in_cs, void* out,
                  int64_t out_rs, int64_t out_cs, void* stream) {
  if (rows <= 0 || cols <= 0) return;
  by_dtype(dtype, "step_forward", [&](auto tag) {
    using T = decltype(tag);
    step_forward_typed<T>(rows, cols, static_cast<const T*>(in), in_rs, in_cs, static_cast<T*>(out), out_rs, out_cs,
                          static_cast<cudaStream_t>(stream));
  });
}

void step_backward(int dtype, int64_t rows, int64_t cols, const void* z, int64_t z_rs, int64_t z_cs, const void* grad_y,
                   int64_t gy_rs, int64_t gy_cs, void* grad_z, int64_t gz_rs, int64_t gz_cs, int surrogate,
                   double alpha, void* stream) {
  if (rows <= 0 || cols <= 0) return;
  if (surrogate < 0 || surrogate > 3)
    throw std::invalid_argument("linneuron._cuda.step_backward: unknown surrogate code " + std::to_string(surrogate));
  by_dtype(dtype, "step_backward", [&](auto tag) {
    using T = decltype(tag);
    step_backward_typed<T>(rows, cols, static_cast<const T*>(z), z_rs, z_cs, static_cast<const T*>(grad_y), gy_rs,
                           gy_cs, static_cast<T*>(grad_z), gz_rs, gz_cs, static_cast<Surrogate>(surrogate), alpha,
                           static_cast<cudaStream_t>(stream));
  });
}

void bias_grad(int dtype, int64_t m, int64_t n, const void* dy, int64_t dy_rs, int64_t dy_cs, void* db,
               int64_t db_stride, bool accumulate, void* stream) {
  if (n <= 0) return;
  by_dtype(dtype, "bias_grad", [&](auto tag) {
    using T = decltype(tag);
    bias_grad_typed<T>(m < 0 ? 0 : m, n, static_cast<const T*>(dy), dy_rs, dy_cs, static_cast<T*>(db), db_stride,
                       accumulate, static_cast<cudaStream_t>(stream));
  });
}

}  // namespace cuda
}  // namespace linneuron
