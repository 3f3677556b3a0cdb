// The C structs of the DLPack standard (major version 1) that the fast path reads: a tensor description and the
// exchange table a framework publishes as `__dlpack_c_exchange_api__` (a PyCapsule named "dlpack_exchange_api").
//
// Written from the DLPack specification (dmlc/dlpack, include/dlpack/dlpack.h, v1.3), not from any framework's
// headers: the layout is the standard's ABI, fixed within a major version, so one build reads every torch that
// publishes the table. Only the fields and entries fastpath.cpp uses are given names; the others keep their
// place in the layout.
#pragma once

#include <cstdint>

namespace linneuron {
namespace dlpack {

constexpr uint32_t kMajorVersion = 1;
constexpr int32_t kDeviceCpu = 1;  // DLDeviceType kDLCPU
constexpr uint8_t kFloat = 2;      // DLDataTypeCode kDLFloat
constexpr uint8_t kBfloat = 4;     // DLDataTypeCode kDLBfloat

struct Version {
  uint32_t major;
  uint32_t minor;
};

struct Device {
  int32_t device_type;
  int32_t device_id;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; null means compact row-major
  uint64_t byte_offset;
};

struct ExchangeApiHeader {
  Version version;
  ExchangeApiHeader* prev_api;
};

// DLPackExchangeAPI: the producer's function table. Returns 0 on success, -1 with a Python error set.
struct ExchangeApi {
  ExchangeApiHeader header;
  void* managed_tensor_allocator;
  void* managed_tensor_from_py_object_no_sync;
  void* managed_tensor_to_py_object_no_sync;
  // Fills *out for a tensor of the producer's type, without taking a reference: valid while the object lives and
  // is not resized. The GIL must be held.
  int (*dltensor_from_py_object_no_sync)(void* py_object, Tensor* out);
  void* current_work_stream;
};

}  // namespace dlpack
}  // namespace linneuron
