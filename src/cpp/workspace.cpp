// Per-thread packing workspace with global accounting (reported by linneuron.info()).
#include "workspace.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "runtime.h"

namespace linneuron {
namespace {

std::atomic<std::size_t> g_held{0};
std::atomic<std::size_t> g_peak{0};

struct Buffer {
  void* data = nullptr;
  std::size_t size = 0;
  ~Buffer() {
    std::free(data);
    g_held.fetch_sub(size);
  }
};

thread_local Buffer t_buffers[kWorkspaceSlots];

}  // namespace

void* thread_workspace(std::size_t bytes, int slot) {
  Buffer& buf = t_buffers[slot];
  if (bytes <= buf.size) return buf.data;
  // Grow geometrically so a sequence of slightly larger shapes does not reallocate every call.
  const std::size_t want = (std::max(bytes, buf.size + buf.size / 2) + 63) / 64 * 64;
  void* fresh = std::aligned_alloc(64, want);
  if (!fresh) return nullptr;
  std::free(buf.data);
  g_held.fetch_add(want);
  g_held.fetch_sub(buf.size);
  buf.data = fresh;
  buf.size = want;
  std::size_t held = g_held.load(), peak = g_peak.load();
  while (held > peak && !g_peak.compare_exchange_weak(peak, held)) {
  }
  return fresh;
}

std::size_t workspace_bytes() { return g_held.load(); }
std::size_t workspace_peak_bytes() { return g_peak.load(); }

}  // namespace linneuron
