// Host emulation shim: __half as IEEE binary16 storage, converted through _Float16.
#pragma once
#include "cuda_runtime.h"
struct __half {
  unsigned short x;
};
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.x, 2);
  return (float)f;
}
inline __half __float2half_rn(float v) {
  _Float16 f = (_Float16)v;
  __half h;
  std::memcpy(&h.x, &f, 2);
  return h;
}
