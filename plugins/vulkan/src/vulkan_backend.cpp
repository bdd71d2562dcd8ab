// vulkan: the compute ABI on a Vulkan device. Every submit() records its ops into one command
// buffer (a compute dispatch per op, or four for an expert, with a memory barrier after each) and
// signals a timeline semaphore with the submission's ticket, so wait(ticket) waits for exactly
// that much work. Tensors are reached through buffer device addresses passed in push constants:
// pipelines are created once per shader and no descriptor set exists. Memory placement and why:
// docs/vulkan.md.
#include "shaders.hpp"

#include <pocketmoe/cpp/plugin.hpp>

#include <vulkan/vulkan.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pmoe::vk {
namespace {

using sdk::StatusError;

void check(VkResult r, const char* what) {
  if (r == VK_SUCCESS) return;
  const pmoe_status s = r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? PMOE_ERR_OUT_OF_MEMORY
                        : r == VK_ERROR_DEVICE_LOST                                             ? PMOE_ERR_IO
                                                                                                : PMOE_ERR_INTERNAL;
  throw StatusError(s, std::string(what) + " failed (VkResult " + std::to_string(int(r)) + ")");
}
[[noreturn]] void unsupported(const std::string& why) { throw StatusError(PMOE_ERR_NOT_SUPPORTED, why); }
[[noreturn]] void invalid(const std::string& why) { throw StatusError(PMOE_ERR_INVALID_ARGUMENT, why); }

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

std::string type_name(uint32_t t) {
  const char* n = pmoe_dtype_name(t);
  return n ? n : "dtype " + std::to_string(t);
}

/// The weight types built into the plugin: those with an embedded matmul shader (CMakeLists.txt
/// lists them once).
bool is_weight_type(uint32_t t) {
  const std::string name = "matmul_" + std::to_string(t);
  for (const Shader& sh : shaders())
    if (sh.name == name) return true;
  return false;
}

struct Buffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint64_t address = 0;    // device address of byte 0 of the buffer as the host sees it
  uint8_t* host = nullptr; // mapped (or imported) bytes; nullptr: device-local only
  uint64_t size = 0;
  uint64_t pad = 0;         // bytes from the allocation's start to byte 0 (4 KiB alignment)
  uint64_t allocation = 0;  // bytes of the allocation
  bool coherent = true;
  void* owned_host = nullptr;  // host memory we allocated and imported
  Buffer* mirror = nullptr;    // device-local copy the kernels read (VRAM slots: see buffer_flush_range)
};

/// A work buffer that only grows.
struct Scratch {
  Buffer* buffer = nullptr;
  uint64_t bytes = 0;
};

struct Recording {
  VkCommandBuffer cb = VK_NULL_HANDLE;
  uint64_t ticket = 0;  // the submission that last used it
};

// Push-constant blocks, laid out as the shaders declare them.
struct MatmulArgs {
  uint64_t w, x, y, tok, sums;
  uint32_t n_in, n_out, n_tok, w_row_bytes, x_stride, y_stride, mode, rows_per_group;
};
struct GetRowsArgs {
  uint64_t table, ids, dst;
  uint32_t n, row_bytes, dst_stride, n_rows;
};
struct RmsNormArgs {
  uint64_t src, w, dst;
  uint32_t n, src_stride, dst_stride;
  float eps;
};
struct AddArgs {
  uint64_t a, b, dst;
  uint32_t ne0, ne1, a_stride, b_stride, dst_stride, mode;
};
struct RopeArgs {
  uint64_t x, pos;
  uint32_t n_rot, heads, n_tok, head_stride, tok_stride;
  float theta_scale;
};
struct AttentionArgs {
  uint64_t q, k, v, pos, dst;
  uint32_t n_head, n_head_kv, head_dim, window, n_kv, q_stride, kv_stride, dst_stride;
  float scale;
};
struct RoundActArgs {
  uint64_t x, y, tok;
  uint32_t n, x_stride, mode;
};
struct CombineArgs {
  uint64_t src, idx, w, dst;
  uint32_t n, k, n_tok, src_stride, dst_stride, idx_stride, w_stride;
};

/// How ggml rounds a matmul's activations for weights of type `t` (round_act.comp's modes): 0
/// none (float weights), 1 Q8_0 blocks, 2 Q8_K blocks, 3 bf16, 4 Q8_1 blocks (with their sums).
uint32_t act_rounding(uint32_t t) {
  switch (t) {
    case PMOE_DTYPE_F32: case PMOE_DTYPE_F16: return 0;
    case PMOE_DTYPE_BF16: return 3;
    case PMOE_DTYPE_Q4_0: case PMOE_DTYPE_Q5_0: case PMOE_DTYPE_Q8_0: case PMOE_DTYPE_IQ4_NL: return 1;
    case PMOE_DTYPE_Q4_1: case PMOE_DTYPE_Q5_1: return 4;
    default: return 2;  // the K-quants and IQ4_XS
  }
}

constexpr uint32_t kMatmulTile = 8;      // tokens per matmul workgroup (matmul.comp TILE)
constexpr uint32_t kMatmulThreads = 64;  // matmul.comp local_size_x
constexpr uint32_t kMaxGroupsX = 65535;  // maxComputeWorkGroupCount[0] is at least this
constexpr uint32_t kMaxHeadDim = 256;    // attention.comp MAX_HEAD_DIM
constexpr size_t kRecordings = 16;       // command buffers in the ring
constexpr uint32_t kHostSide = 1u << 31;  // buffer_alloc: the host side of a VRAM slot buffer

class VulkanBackend final : public sdk::Compute {
 public:
  VulkanBackend(const pmoe_host* host, const sdk::Options& o) : host_(host) {
    create_instance();
    pick_device(o.get_string("device", "auto"));
    const std::string fp16 = o.get_string("fp16", "off"), vram = o.get_string("vram_slots", "off");
    if (vram != "auto" && vram != "on" && vram != "off") invalid("vram_slots: '" + vram + "' is not auto, on or off");
    if (fp16 != "off" && fp16 != "on" && fp16 != "auto") invalid("fp16: '" + fp16 + "' is not off, on or auto");
    create_device(fp16);
    vram_slots_ = vram == "on" || (vram == "auto" && props_.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU);
    sdk::log(host_, PMOE_LOG_INFO, "vulkan", std::string("device: ") + props_.deviceName +
                                                 (host_import_ ? " (host memory import)" : ""));
  }
  ~VulkanBackend() override {
    if (device_) {
      vkDeviceWaitIdle(device_);
      for (auto& [name, p] : pipelines_) vkDestroyPipeline(device_, p, nullptr);
      if (layout_) vkDestroyPipelineLayout(device_, layout_, nullptr);
      for (Scratch* s : {&scratch_, &act_scratch_})
        if (s->buffer) buffer_free(s->buffer);
      if (pool_) vkDestroyCommandPool(device_, pool_, nullptr);
      if (timeline_) vkDestroySemaphore(device_, timeline_, nullptr);
      vkDestroyDevice(device_, nullptr);
    }
    if (instance_) vkDestroyInstance(instance_, nullptr);
  }

  // ---- buffers ------------------------------------------------------------------------------

  void* buffer_alloc(uint64_t size, uint32_t flags) override {
    size = std::max<uint64_t>(size, 4);
    if ((flags & PMOE_BUFFER_HOST_VISIBLE) && vram_slots_) {
      // VRAM slots: the host writes the host-visible buffer, the kernels read a device-local
      // mirror that buffer_flush_range uploads to (one copy per storage read)
      auto* b = static_cast<Buffer*>(buffer_alloc(size, (flags & ~uint32_t(PMOE_BUFFER_HOST_VISIBLE)) | kHostSide));
      b->mirror = allocate(size, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
      b->mirror->size = size;
      b->address = b->mirror->address;
      return b;
    }
    if (flags & (PMOE_BUFFER_HOST_VISIBLE | kHostSide)) {
      // Storage reads land here with O_DIRECT: the host pointer must be 4 KiB aligned.
      if (host_import_) {
        const uint64_t bytes = align_up(size, std::max<uint64_t>(4096, import_alignment_));
        void* p = std::aligned_alloc(std::max<size_t>(4096, import_alignment_), bytes);
        if (!p) throw StatusError(PMOE_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(size) + " host bytes");
        auto* b = import_host(p, bytes);
        if (b) {
          b->owned_host = p;
          b->size = size;
          return b;
        }
        std::free(p);
      }
      // host-visible device memory, over-allocated so the host pointer can be 4 KiB aligned
      auto* b = allocate(size + 4096, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                         VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
      const uint64_t pad = (4096 - reinterpret_cast<uintptr_t>(b->host) % 4096) % 4096;
      b->host += pad;
      b->address += pad;
      b->pad = pad;
      b->size = size;
      return b;
    }
    // activations, KV cache, uploaded weights: device-local (mapped too where that is the same memory)
    auto* b = allocate(size, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
    b->size = size;
    return b;
  }

  void* buffer_wrap(void* ptr, uint64_t size, uint32_t) override {
    // Adopt the read-only GGUF mapping where the driver imports host memory; otherwise (and with
    // VRAM slots: a discrete GPU would read host memory over the bus at every use) the host
    // uploads the dense tensors only.
    if (!host_import_ || vram_slots_ || reinterpret_cast<uintptr_t>(ptr) % import_alignment_ != 0) return nullptr;
    const uint64_t bytes = align_up(size, import_alignment_);
    if (bytes - size >= 4096 && import_alignment_ > 4096) return nullptr;  // would run past the mapping
    try {
      auto* b = import_host(ptr, bytes);
      if (b) b->size = size;
      return b;
    } catch (const StatusError&) {
      return nullptr;  // e.g. a driver that refuses file-backed pages
    }
  }

  void buffer_free(void* p) noexcept override {
    auto* b = static_cast<Buffer*>(p);
    if (!b) return;
    try {
      wait(ticket_, UINT64_MAX);  // submitted work (an upload, a kernel) may still use it
    } catch (const StatusError&) {
      vkDeviceWaitIdle(device_);
    }
    buffer_free(b->mirror);
    vkDestroyBuffer(device_, b->buffer, nullptr);
    vkFreeMemory(device_, b->memory, nullptr);
    std::free(b->owned_host);
    delete b;
  }
  void* buffer_host_ptr(void* p) noexcept override { return static_cast<Buffer*>(p)->host; }

  void buffer_write(void* p, uint64_t off, const void* src, uint64_t size) override {
    auto* b = static_cast<Buffer*>(p);
    if (off > b->size || size > b->size - off) invalid("buffer_write out of bounds");
    wait(ticket_, UINT64_MAX);  // ordered with earlier submissions, which may still read it
    if (b->host) {
      std::memcpy(b->host + off, src, size);
      if (!b->coherent || b->mirror) buffer_flush_range(p, off, size);
      return;
    }
    staged_copy(b, off, const_cast<void*>(src), size, true);
  }
  void buffer_read(void* p, uint64_t off, void* dst, uint64_t size) override {
    auto* b = static_cast<Buffer*>(p);
    if (off > b->size || size > b->size - off) invalid("buffer_read out of bounds");
    if (b->mirror) return buffer_read(b->mirror, off, dst, size);  // what the kernels see
    wait(ticket_, UINT64_MAX);
    if (b->host) {
      if (!b->coherent) {
        const VkMappedMemoryRange r = atom_range(b, off, size);
        check(vkInvalidateMappedMemoryRanges(device_, 1, &r), "vkInvalidateMappedMemoryRanges");
      }
      std::memcpy(dst, b->host + off, size);
      return;
    }
    staged_copy(b, off, dst, size, false);
  }
  void buffer_flush_range(void* p, uint64_t off, uint64_t size) override {
    auto* b = static_cast<Buffer*>(p);
    if (off > b->size || size > b->size - off) invalid("buffer_flush_range out of bounds");
    if (!b->coherent) {
      const VkMappedMemoryRange r = atom_range(b, off, size);
      check(vkFlushMappedMemoryRanges(device_, 1, &r), "vkFlushMappedMemoryRanges");
    }
    if (b->mirror) upload(b, off, size);
  }

  // ---- properties and capabilities ----------------------------------------------------------

  void get_props(pmoe_compute_props& p) override {
    p.device_type = props_.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ? PMOE_DEVICE_INTEGRATED_GPU
                    : props_.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ? PMOE_DEVICE_DISCRETE_GPU
                    : props_.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU          ? PMOE_DEVICE_CPU
                                                                                : PMOE_DEVICE_OTHER;
    p.unified_memory = p.device_type != PMOE_DEVICE_DISCRETE_GPU;
    std::snprintf(p.name, sizeof p.name, "%.100s (Vulkan %u.%u%s)", props_.deviceName, VK_API_VERSION_MAJOR(props_.apiVersion),
                  VK_API_VERSION_MINOR(props_.apiVersion), fp16_ ? ", fp16" : "");
    for (uint32_t i = 0; i < mem_.memoryHeapCount; ++i)
      if (mem_.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) p.device_memory += mem_.memoryHeaps[i].size;
    for (uint32_t i = 0; i < mem_.memoryTypeCount; ++i)
      if (mem_.memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
        p.host_visible_memory = std::max(p.host_visible_memory, mem_.memoryHeaps[mem_.memoryTypes[i].heapIndex].size);
    p.max_buffer_size = max_allocation_;
    p.alignment = 4;
  }

  void check_op(const pmoe_op& op) override {
    auto f32 = [&](const pmoe_tensor& t, const char* role) {
      if (t.dtype != PMOE_DTYPE_F32) unsupported(std::string(role) + " must be f32, not " + type_name(t.dtype));
    };
    auto weight = [&](const pmoe_tensor& t) {
      if (!is_weight_type(t.dtype)) unsupported("no shader for weights of type " + type_name(t.dtype));
      if (pmoe_dtype_block_elems(t.dtype) > 1 && t.ne[0] % pmoe_dtype_block_elems(t.dtype) != 0)
        invalid("weight rows of " + std::to_string(t.ne[0]) + " are not whole blocks");
    };
    switch (op.kind) {
      case PMOE_OP_MATMUL: weight(op.src[0]), f32(op.src[1], "matmul input"), f32(op.dst, "matmul output"); return;
      case PMOE_OP_GET_ROWS: weight(op.src[0]), f32(op.dst, "get_rows output"); return;
      case PMOE_OP_MOE_EXPERT:
        for (int i = 0; i < 3; ++i) weight(op.src[i]);
        f32(op.src[3], "expert input");
        if (pmoe_moe_down_neuron_rows(&op))
          unsupported("a down matrix stored one row per neuron (PowerInfer's --transpose-down); cpu-onednn runs it");
        return;
      case PMOE_OP_ATTENTION:
        if (op.i[2] > kMaxHeadDim) unsupported("head_dim " + std::to_string(op.i[2]) + " > " + std::to_string(kMaxHeadDim));
        if (op.i[1] <= 0 || op.i[0] % op.i[1] != 0) invalid("n_head must be a multiple of n_head_kv");
        return;
      case PMOE_OP_RMS_NORM: case PMOE_OP_ADD: case PMOE_OP_ROPE_NEOX: case PMOE_OP_MOE_COMBINE: case PMOE_OP_COPY:
        return;
      default: unsupported("unknown op kind " + std::to_string(op.kind));
    }
  }

  // ---- execution ----------------------------------------------------------------------------

  /// A GPU does not fault on a stray address the way a CPU does: refuse views outside their buffer.
  static void check_bounds(const pmoe_op& op) {
    auto within = [](const pmoe_tensor& t, const std::string& role) {
      if (!t.buffer) invalid(role + " has no buffer");
      const auto* b = reinterpret_cast<const Buffer*>(t.buffer);
      if (t.offset > b->size || pmoe_tensor_extent(&t) > b->size - t.offset)
        invalid(role + " (" + std::to_string(pmoe_tensor_extent(&t)) + " bytes at offset " + std::to_string(t.offset) +
                ") runs past its buffer of " + std::to_string(b->size) + " bytes");
    };
    within(op.dst, "dst");
    for (uint32_t i = 0; i < op.n_src && i < PMOE_OP_MAX_SRC; ++i) within(op.src[i], "src" + std::to_string(i));
  }

  void execute(std::span<const pmoe_op> ops) override { submit(ops); }
  void sync() override { wait(ticket_, UINT64_MAX); }

  uint64_t submit(std::span<const pmoe_op> ops) override {
    for (size_t i = 0; i < ops.size(); ++i) {
      try {
        check_op(ops[i]);
        check_bounds(ops[i]);
      } catch (const StatusError& e) {
        throw StatusError(e.code(), "op " + std::to_string(i) + " (" + pmoe_op_name(ops[i].kind) + "): " + e.what());
      }
    }
    reserve_scratch(ops);
    Recording& rec = ring_[ticket_ % kRecordings];
    wait(rec.ticket, UINT64_MAX);  // its previous submission must be done before we re-record it
    check(vkResetCommandBuffer(rec.cb, 0), "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    check(vkBeginCommandBuffer(rec.cb, &bi), "vkBeginCommandBuffer");
    barrier(rec.cb);  // after earlier submissions' writes
    for (const pmoe_op& op : ops) record(rec.cb, op);
    VkMemoryBarrier to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    to_host.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
    to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vkCmdPipelineBarrier(rec.cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &to_host, 0,
                         nullptr, 0, nullptr);
    check(vkEndCommandBuffer(rec.cb), "vkEndCommandBuffer");
    return queue_submit(rec);
  }

  bool wait(uint64_t ticket, uint64_t timeout_ns) override {
    if (ticket == 0 || ticket <= completed_) return true;
    if (ticket > ticket_) invalid("ticket " + std::to_string(ticket) + " was never submitted");
    VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
    wi.semaphoreCount = 1;
    wi.pSemaphores = &timeline_;
    wi.pValues = &ticket;
    for (;;) {
      const VkResult r = vkWaitSemaphores(device_, &wi, timeout_ns);
      if (r == VK_TIMEOUT) return false;
      check(r, "vkWaitSemaphores");
      // trust the counter, not the return: a wait that returned before the value was reached
      // would let the host read results still being written
      uint64_t value = 0;
      check(vkGetSemaphoreCounterValue(device_, timeline_, &value), "vkGetSemaphoreCounterValue");
      if (value >= ticket) break;
      if (!early_wait_logged_)
        sdk::log(host_, PMOE_LOG_WARN, "vulkan", "vkWaitSemaphores returned before the timeline reached its value; waiting again");
      early_wait_logged_ = true;
    }
    completed_ = std::max(completed_, ticket);
    return true;
  }

 private:
  // ---- set-up -------------------------------------------------------------------------------

  void create_instance() {
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "pocketmoe";
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.pApplicationInfo = &app;
    const VkResult r = vkCreateInstance(&ci, nullptr, &instance_);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED)
      throw StatusError(PMOE_ERR_NOT_FOUND, "no Vulkan 1.2 driver (install one, e.g. mesa-vulkan-drivers)");
    check(r, "vkCreateInstance");
  }

  void pick_device(const std::string& want) {
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(instance_, &n, nullptr);
    std::vector<VkPhysicalDevice> all(n);
    vkEnumeratePhysicalDevices(instance_, &n, all.data());
    if (all.empty()) throw StatusError(PMOE_ERR_NOT_FOUND, "no Vulkan device (install a driver, e.g. mesa-vulkan-drivers)");
    std::string names;
    auto props = [](VkPhysicalDevice d) {
      VkPhysicalDeviceProperties p;
      vkGetPhysicalDeviceProperties(d, &p);
      return p;
    };
    for (uint32_t i = 0; i < n; ++i) names += (i ? ", " : "") + std::to_string(i) + ": " + props(all[i]).deviceName;
    if (want == "auto") {
      auto rank = [](VkPhysicalDeviceType t) {
        switch (t) {
          case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 0;
          case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 1;
          case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
          case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
          default: return 4;
        }
      };
      physical_ = *std::min_element(all.begin(), all.end(), [&](VkPhysicalDevice a, VkPhysicalDevice b) {
        return rank(props(a).deviceType) < rank(props(b).deviceType);
      });
    } else if (!want.empty() && want.find_first_not_of("0123456789") == std::string::npos) {
      const size_t i = std::stoul(want);
      if (i >= all.size()) invalid("device: " + want + " is not a device index (devices: " + names + ")");
      physical_ = all[i];
    } else {
      for (VkPhysicalDevice d : all)
        if (std::string(props(d).deviceName).find(want) != std::string::npos) {
          physical_ = d;
          break;
        }
      if (!physical_) invalid("device: no Vulkan device name contains '" + want + "' (devices: " + names + ")");
    }
    props_ = props(physical_);
    vkGetPhysicalDeviceMemoryProperties(physical_, &mem_);
  }

  void create_device(const std::string& fp16) {
    VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f12};
    vkGetPhysicalDeviceFeatures2(physical_, &f2);
    const std::string dev = props_.deviceName;
    if (VK_API_VERSION_MINOR(props_.apiVersion) < 2 && VK_API_VERSION_MAJOR(props_.apiVersion) == 1)
      unsupported(dev + " has Vulkan " + std::to_string(VK_API_VERSION_MINOR(props_.apiVersion)) + ", 1.2 is needed");
    if (!f12.bufferDeviceAddress || !f12.timelineSemaphore || !f2.features.shaderInt64)
      unsupported(dev + " lacks bufferDeviceAddress, timelineSemaphore or shaderInt64");
    if (fp16 == "on" && !f12.shaderFloat16) unsupported("fp16: on, but " + dev + " has no shaderFloat16 (use auto or off)");
    fp16_ = fp16 != "off" && f12.shaderFloat16;

    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, nullptr);
    std::vector<VkQueueFamilyProperties> qf(nq);
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, qf.data());
    uint32_t family = UINT32_MAX;
    for (uint32_t i = 0; i < nq; ++i)
      if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
        family = i;
        break;
      }
    if (family == UINT32_MAX) unsupported(dev + " has no compute queue");

    uint32_t ne = 0;
    vkEnumerateDeviceExtensionProperties(physical_, nullptr, &ne, nullptr);
    std::vector<VkExtensionProperties> exts(ne);
    vkEnumerateDeviceExtensionProperties(physical_, nullptr, &ne, exts.data());
    std::vector<const char*> enable;
    for (const auto& e : exts)
      if (std::strcmp(e.extensionName, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME) == 0) host_import_ = true;
    if (host_import_) {
      enable.push_back(VK_KHR_EXTERNAL_MEMORY_EXTENSION_NAME);
      enable.push_back(VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
      VkPhysicalDeviceExternalMemoryHostPropertiesEXT hp{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
      VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &hp};
      vkGetPhysicalDeviceProperties2(physical_, &p2);
      import_alignment_ = std::max<uint64_t>(hp.minImportedHostPointerAlignment, 1);
    }
    VkPhysicalDeviceSubgroupProperties sg{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceMaintenance3Properties m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, &sg};
    VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &m3};
    vkGetPhysicalDeviceProperties2(physical_, &p2);
    max_allocation_ = m3.maxMemoryAllocationSize;
    if (!(sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) || !(sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT))
      unsupported(dev + " has no subgroup arithmetic in compute shaders");
    subgroup_size_ = std::max<uint32_t>(sg.subgroupSize, 1);

    const float priority = 1.0f;
    VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueFamilyIndex = family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &priority;
    VkPhysicalDeviceVulkan12Features on12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    on12.bufferDeviceAddress = VK_TRUE;
    on12.timelineSemaphore = VK_TRUE;
    on12.shaderFloat16 = fp16_ ? VK_TRUE : VK_FALSE;
    VkPhysicalDeviceFeatures2 on{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &on12};
    on.features.shaderInt64 = VK_TRUE;
    VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, &on};
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    di.enabledExtensionCount = uint32_t(enable.size());
    di.ppEnabledExtensionNames = enable.data();
    check(vkCreateDevice(physical_, &di, nullptr, &device_), "vkCreateDevice");
    vkGetDeviceQueue(device_, family, 0, &queue_);
    if (host_import_)
      host_pointer_props_ = reinterpret_cast<PFN_vkGetMemoryHostPointerPropertiesEXT>(
          vkGetDeviceProcAddr(device_, "vkGetMemoryHostPointerPropertiesEXT"));
    host_import_ = host_import_ && host_pointer_props_;

    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = family;
    check(vkCreateCommandPool(device_, &pi, nullptr, &pool_), "vkCreateCommandPool");
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = pool_;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = kRecordings;
    std::vector<VkCommandBuffer> cbs(kRecordings);
    check(vkAllocateCommandBuffers(device_, &ai, cbs.data()), "vkAllocateCommandBuffers");
    ring_.resize(kRecordings);
    for (size_t i = 0; i < kRecordings; ++i) ring_[i].cb = cbs[i];

    VkSemaphoreTypeCreateInfo st{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
    st.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
    VkSemaphoreCreateInfo sci{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, &st};
    check(vkCreateSemaphore(device_, &sci, nullptr, &timeline_), "vkCreateSemaphore");

    VkPushConstantRange pc{VK_SHADER_STAGE_COMPUTE_BIT, 0, 128};
    VkPipelineLayoutCreateInfo li{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    li.pushConstantRangeCount = 1;
    li.pPushConstantRanges = &pc;
    check(vkCreatePipelineLayout(device_, &li, nullptr, &layout_), "vkCreatePipelineLayout");
  }

  // ---- memory -------------------------------------------------------------------------------

  int32_t memory_type(uint32_t bits, VkMemoryPropertyFlags need, VkMemoryPropertyFlags prefer) const {
    int32_t best = -1;
    for (uint32_t i = 0; i < mem_.memoryTypeCount; ++i) {
      const VkMemoryPropertyFlags f = mem_.memoryTypes[i].propertyFlags;
      if (!(bits & (1u << i)) || (f & need) != need) continue;
      if (best < 0 || ((f & prefer) == prefer && (mem_.memoryTypes[best].propertyFlags & prefer) != prefer)) best = int32_t(i);
    }
    return best;
  }

  VkBuffer make_buffer(uint64_t size, bool external) {
    VkExternalMemoryBufferCreateInfo ext{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
    ext.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
    VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, external ? &ext : nullptr};
    bi.size = size;
    bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT |
               VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    VkBuffer b = VK_NULL_HANDLE;
    check(vkCreateBuffer(device_, &bi, nullptr, &b), "vkCreateBuffer");
    return b;
  }

  Buffer* finish(Buffer* b, VkMemoryAllocateInfo& ai) {
    b->allocation = ai.allocationSize;
    VkMemoryAllocateFlagsInfo fl{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO, ai.pNext};
    fl.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    ai.pNext = &fl;
    const VkResult r = vkAllocateMemory(device_, &ai, nullptr, &b->memory);
    if (r != VK_SUCCESS) {
      vkDestroyBuffer(device_, b->buffer, nullptr);
      delete b;
      check(r, "vkAllocateMemory");
    }
    check(vkBindBufferMemory(device_, b->buffer, b->memory, 0), "vkBindBufferMemory");
    VkBufferDeviceAddressInfo ai2{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    ai2.buffer = b->buffer;
    b->address = vkGetBufferDeviceAddress(device_, &ai2);
    return b;
  }

  Buffer* allocate(uint64_t size, VkMemoryPropertyFlags need, VkMemoryPropertyFlags prefer) {
    if (max_allocation_ && size > max_allocation_)
      throw StatusError(PMOE_ERR_OUT_OF_MEMORY, "a buffer of " + std::to_string(size) + " bytes exceeds the device's " +
                                                    std::to_string(max_allocation_) + "-byte allocation limit");
    auto* b = new Buffer;
    b->buffer = make_buffer(size, false);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device_, b->buffer, &req);
    int32_t type = memory_type(req.memoryTypeBits, need, prefer);
    if (type < 0) type = memory_type(req.memoryTypeBits, 0, need);
    VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = uint32_t(type);
    finish(b, ai);
    const VkMemoryPropertyFlags f = mem_.memoryTypes[type].propertyFlags;
    if (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
      void* p = nullptr;
      check(vkMapMemory(device_, b->memory, 0, VK_WHOLE_SIZE, 0, &p), "vkMapMemory");
      b->host = static_cast<uint8_t*>(p);
      b->coherent = f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    } else if (need & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
      buffer_free(b);
      throw StatusError(PMOE_ERR_NOT_SUPPORTED, "no host-visible memory type");
    }
    return b;
  }

  /// Import `bytes` of host memory at `p` (VK_EXT_external_memory_host); nullptr if refused.
  Buffer* import_host(void* p, uint64_t bytes) {
    VkMemoryHostPointerPropertiesEXT hp{VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
    if (host_pointer_props_(device_, VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT, p, &hp) != VK_SUCCESS)
      return nullptr;
    auto* b = new Buffer;
    b->buffer = make_buffer(bytes, true);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device_, b->buffer, &req);
    const int32_t type = memory_type(req.memoryTypeBits & hp.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                                     VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    if (type < 0) {
      vkDestroyBuffer(device_, b->buffer, nullptr);
      delete b;
      return nullptr;
    }
    VkImportMemoryHostPointerInfoEXT imp{VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT};
    imp.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
    imp.pHostPointer = p;
    VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &imp};
    ai.allocationSize = bytes;
    ai.memoryTypeIndex = uint32_t(type);
    finish(b, ai);
    b->host = static_cast<uint8_t*>(p);
    b->coherent = mem_.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    return b;
  }

  VkMappedMemoryRange atom_range(const Buffer* b, uint64_t off, uint64_t size) const {
    // ranges of non-coherent memory are whole atoms, counted from the allocation's start
    const uint64_t atom = std::max<uint64_t>(props_.limits.nonCoherentAtomSize, 1);
    VkMappedMemoryRange r{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
    r.memory = b->memory;
    r.offset = (b->pad + off) / atom * atom;
    const uint64_t end = align_up(b->pad + off + size, atom);
    r.size = end >= b->allocation ? VK_WHOLE_SIZE : end - r.offset;
    return r;
  }

  /// Submit a recorded command buffer; it signals the next ticket.
  uint64_t queue_submit(Recording& rec) {
    const uint64_t ticket = ticket_ + 1;
    VkTimelineSemaphoreSubmitInfo ti{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
    ti.signalSemaphoreValueCount = 1;
    ti.pSignalSemaphoreValues = &ticket;
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO, &ti};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &rec.cb;
    si.signalSemaphoreCount = 1;
    si.pSignalSemaphores = &timeline_;
    check(vkQueueSubmit(queue_, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit");
    rec.ticket = ticket_ = ticket;
    return ticket;
  }

  /// Copies [off, off + size) of a VRAM-slot buffer to its mirror, after everything submitted so
  /// far, and waits for it: the host may reuse the slot's host side as soon as this returns (a
  /// queued copy raced with that once under load, in CI: streamed != resident on lavapipe).
  void upload(Buffer* b, uint64_t off, uint64_t size) {
    Recording& rec = ring_[ticket_ % kRecordings];
    wait(rec.ticket, UINT64_MAX);
    check(vkResetCommandBuffer(rec.cb, 0), "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    check(vkBeginCommandBuffer(rec.cb, &bi), "vkBeginCommandBuffer");
    barrier(rec.cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);  // after earlier kernels read the mirror
    const VkBufferCopy region{b->pad + off, off, size};
    vkCmdCopyBuffer(rec.cb, b->buffer, b->mirror->buffer, 1, &region);
    check(vkEndCommandBuffer(rec.cb), "vkEndCommandBuffer");
    wait(queue_submit(rec), UINT64_MAX);
  }

  /// Copy between host memory and a buffer the host cannot map, through a staging buffer.
  void staged_copy(Buffer* b, uint64_t off, void* host, uint64_t size, bool to_device) {
    Buffer* st = allocate(size, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    if (to_device) std::memcpy(st->host, host, size);
    if (to_device && !st->coherent) buffer_flush_range(st, 0, size);
    Recording& rec = ring_[ticket_ % kRecordings];
    wait(rec.ticket, UINT64_MAX);
    check(vkResetCommandBuffer(rec.cb, 0), "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    check(vkBeginCommandBuffer(rec.cb, &bi), "vkBeginCommandBuffer");
    VkBufferCopy region{to_device ? 0 : off, to_device ? off : 0, size};
    vkCmdCopyBuffer(rec.cb, to_device ? st->buffer : b->buffer, to_device ? b->buffer : st->buffer, 1, &region);
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT;
    vkCmdPipelineBarrier(rec.cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, nullptr, 0,
                         nullptr);
    check(vkEndCommandBuffer(rec.cb), "vkEndCommandBuffer");
    wait(queue_submit(rec), UINT64_MAX);
    if (!to_device) {
      if (!st->coherent) {
        const VkMappedMemoryRange r = atom_range(st, 0, size);
        vkInvalidateMappedMemoryRanges(device_, 1, &r);
      }
      std::memcpy(host, st->host, size);
    }
    buffer_free(st);
  }

  /// Scratch of the ops about to be recorded, grown (never shrunk) before recording: the expert
  /// op's gate/up results, and every matmul's rounded activations.
  void reserve_scratch(std::span<const pmoe_op> ops) {
    uint64_t hidden = 0, act = 0;
    for (const pmoe_op& op : ops) {
      if (op.kind == PMOE_OP_MATMUL) act = std::max<uint64_t>(act, uint64_t(op.src[1].ne[0]) * uint64_t(op.src[1].ne[1]));
      if (op.kind != PMOE_OP_MOE_EXPERT) continue;
      const uint64_t routes = uint64_t(op.src[4].ne[0]), ff = uint64_t(op.src[0].ne[1]);
      hidden = std::max(hidden, ff * routes);
      act = std::max(act, std::max<uint64_t>(ff, uint64_t(op.src[3].ne[0])) * routes);
    }
    grow(scratch_, hidden * 4);
    grow(act_scratch_, (act + act / 32) * 4);  // values, and Q8_1's block sums
  }
  void grow(Scratch& s, uint64_t need) {
    if (need <= s.bytes) return;
    if (s.buffer) {
      wait(ticket_, UINT64_MAX);  // submitted work may still use the old one
      buffer_free(s.buffer);
    }
    s.bytes = align_up(need, 1 << 20);
    s.buffer = static_cast<Buffer*>(buffer_alloc(s.bytes, 0));
  }

  // ---- recording ----------------------------------------------------------------------------

  VkPipeline pipeline(const std::string& name) {
    auto it = pipelines_.find(name);
    if (it != pipelines_.end()) return it->second;
    const Shader* sh = nullptr;
    for (const Shader& s : shaders())
      if (s.name == name) sh = &s;
    if (!sh) throw StatusError(PMOE_ERR_INTERNAL, "shader " + name + " is not embedded");
    VkShaderModuleCreateInfo mi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    mi.codeSize = sh->bytes;
    mi.pCode = reinterpret_cast<const uint32_t*>(sh->code);
    VkShaderModule mod;
    check(vkCreateShaderModule(device_, &mi, nullptr, &mod), "vkCreateShaderModule");
    VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = mod;
    ci.stage.pName = "main";
    ci.layout = layout_;
    VkPipeline p;
    const VkResult r = vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &ci, nullptr, &p);
    vkDestroyShaderModule(device_, mod, nullptr);
    check(r, "vkCreateComputePipelines");
    return pipelines_[name] = p;
  }

  /// Orders what follows in `cb` (by default compute reads and writes) after all earlier work.
  void barrier(VkCommandBuffer cb, VkPipelineStageFlags dst_stage = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
               VkAccessFlags dst_access = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT) {
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                       VK_ACCESS_HOST_WRITE_BIT;
    mb.dstAccessMask = dst_access;
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_HOST_BIT,
                         dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
  }

  template <class Args>
  void dispatch(VkCommandBuffer cb, const std::string& shader, const Args& args, uint32_t gx, uint32_t gy, uint32_t gz = 1) {
    static_assert(sizeof(Args) <= 128);
    vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline(shader));
    vkCmdPushConstants(cb, layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(Args), &args);
    if (gx && gy && gz) vkCmdDispatch(cb, gx, gy, gz);
    barrier(cb);
  }

  static uint64_t addr(const pmoe_tensor& t) {
    if (!t.buffer) invalid("a tensor has no buffer");
    return reinterpret_cast<const Buffer*>(t.buffer)->address + t.offset;
  }
  static uint32_t stride(const pmoe_tensor& t) { return uint32_t(t.nb[1] / 4); }  // floats between rows

  /// A matmul input (n values per column, column t at x's column tok[t] or t) as the matmul for
  /// weights of `type` reads it: rounded into the activation scratch as ggml rounds it, or as it is.
  struct Input {
    uint64_t x, tok;
    uint32_t stride;
    uint64_t sums = 0;  // Q8_1's block sums (round_act.comp), for Q4_1/Q5_1
  };
  Input rounded(VkCommandBuffer cb, uint32_t type, Input in, uint32_t n, uint32_t n_tok) {
    const uint32_t mode = act_rounding(type);
    if (mode == 0) return in;
    const uint32_t per = mode == 2 ? 256 : mode == 3 ? 1 : 32, blocks = (n + per - 1) / per;
    const uint64_t y = act_scratch_.buffer->address;
    dispatch(cb, "round_act", RoundActArgs{in.x, y, in.tok, n, in.stride, mode}, (blocks + 63) / 64, n_tok);
    return {y, 0, n, mode == 4 ? y + uint64_t(n) * n_tok * 4 : 0};
  }

  void matmul(VkCommandBuffer cb, const pmoe_tensor& w, Input in, uint64_t y, uint32_t y_stride, uint32_t n_tok,
              uint32_t mode) {
    const uint32_t out = uint32_t(w.ne[1]);
    const uint32_t rows = std::max<uint32_t>(1, kMatmulThreads / subgroup_size_);  // one subgroup per row
    const uint32_t groups = (out + rows - 1) / rows, gx = std::min(groups, kMaxGroupsX);
    MatmulArgs a{addr(w), in.x, y, in.tok, in.sums, uint32_t(w.ne[0]), out, n_tok, uint32_t(w.nb[1]), in.stride, y_stride, mode, rows};
    dispatch(cb, (fp16_ && w.dtype != PMOE_DTYPE_F32 ? "matmul_fp16_" : "matmul_") + std::to_string(w.dtype), a, gx, (n_tok + kMatmulTile - 1) / kMatmulTile,
             (groups + gx - 1) / gx);
  }

  void record(VkCommandBuffer cb, const pmoe_op& op) {
    const pmoe_tensor& d = op.dst;
    switch (op.kind) {
      case PMOE_OP_MATMUL: {
        const pmoe_tensor& x = op.src[1];
        const pmoe_tensor& w = op.src[0];
        const uint32_t n_tok = uint32_t(x.ne[1]);
        const Input in = rounded(cb, w.dtype, {addr(x), 0, stride(x)}, uint32_t(x.ne[0]), n_tok);
        matmul(cb, w, in, addr(d), stride(d), n_tok, op.i[0] == 1 ? 1 : 0);
        return;
      }
      case PMOE_OP_MOE_EXPERT: {
        // h = relu(gate x) * (up x) into scratch, then dst = down h
        const pmoe_tensor &g = op.src[0], &u = op.src[1], &dn = op.src[2], &x = op.src[3], &tok = op.src[4];
        const uint32_t routes = uint32_t(tok.ne[0]), ff = uint32_t(g.ne[1]);
        const uint64_t h = scratch_.buffer->address;
        const Input in{addr(x), addr(tok), stride(x)}, gx = rounded(cb, g.dtype, in, uint32_t(x.ne[0]), routes);
        matmul(cb, g, gx, h, ff, routes, 0);
        const bool same = act_rounding(u.dtype) == act_rounding(g.dtype);
        matmul(cb, u, same ? gx : rounded(cb, u.dtype, in, uint32_t(x.ne[0]), routes), h, ff, routes, 2);
        matmul(cb, dn, rounded(cb, dn.dtype, {h, 0, ff}, ff, routes), addr(d), stride(d), routes, 0);
        return;
      }
      case PMOE_OP_GET_ROWS: {
        const pmoe_tensor& t = op.src[0];
        const uint32_t n = uint32_t(t.ne[0]), rows = uint32_t(op.src[1].ne[0]);
        GetRowsArgs a{addr(t), addr(op.src[1]), addr(d), n, uint32_t(t.nb[1]), stride(d), rows};
        dispatch(cb, "get_rows_" + std::to_string(t.dtype), a, ((n + 31) / 32 + 63) / 64, rows);
        return;
      }
      case PMOE_OP_RMS_NORM: {
        const pmoe_tensor& x = op.src[0];
        RmsNormArgs a{addr(x), addr(op.src[1]), addr(d), uint32_t(x.ne[0]), stride(x), stride(d), op.f[0]};
        dispatch(cb, "rms_norm", a, uint32_t(x.ne[1] * x.ne[2] * x.ne[3]), 1);
        return;
      }
      case PMOE_OP_ADD:
      case PMOE_OP_COPY: {
        const bool add = op.kind == PMOE_OP_ADD;
        const pmoe_tensor& a0 = op.src[0];
        // a copy moves ne elements of contiguous rows: flatten both sides to one row
        const bool flat = !add;
        const uint32_t ne0 = flat ? uint32_t(a0.ne[0] * a0.ne[1] * a0.ne[2] * a0.ne[3]) : uint32_t(d.ne[0]);
        const uint32_t ne1 = flat ? 1 : uint32_t(d.ne[1] * d.ne[2] * d.ne[3]);
        AddArgs a{addr(a0), add ? addr(op.src[1]) : 0, addr(d), ne0, ne1, stride(a0), add ? stride(op.src[1]) : 0,
                  stride(d), add ? 0u : 1u};
        dispatch(cb, "add", a, (ne0 + 63) / 64, ne1);
        return;
      }
      case PMOE_OP_ROPE_NEOX: {
        const uint32_t n_rot = uint32_t(op.i[0]);
        RopeArgs a{addr(d), addr(op.src[0]), n_rot, uint32_t(d.ne[1]), uint32_t(d.ne[2]), uint32_t(d.nb[1] / 4),
                   uint32_t(d.nb[2] / 4), std::pow(op.f[0], -2.0f / float(n_rot))};
        dispatch(cb, "rope", a, (n_rot / 2 + 63) / 64, uint32_t(d.ne[1]), uint32_t(d.ne[2]));
        return;
      }
      case PMOE_OP_ATTENTION: {
        const pmoe_tensor &q = op.src[0], &k = op.src[1];
        AttentionArgs a{addr(q), addr(k), addr(op.src[2]), addr(op.src[3]), addr(d), uint32_t(op.i[0]), uint32_t(op.i[1]),
                        uint32_t(op.i[2]), uint32_t(op.i[3]), uint32_t(k.ne[1]), stride(q), stride(k), stride(d), op.f[0]};
        dispatch(cb, "attention", a, uint32_t(op.i[0]), uint32_t(q.ne[1]));
        return;
      }
      case PMOE_OP_MOE_COMBINE: {
        const pmoe_tensor &src = op.src[0], &idx = op.src[1], &w = op.src[2];
        CombineArgs a{addr(src), addr(idx), addr(w), addr(d), uint32_t(d.ne[0]), uint32_t(idx.ne[0]), uint32_t(d.ne[1]),
                      stride(src), stride(d), uint32_t(idx.nb[1] / 4), stride(w)};
        dispatch(cb, "combine", a, (uint32_t(d.ne[0]) + 63) / 64, uint32_t(d.ne[1]));
        return;
      }
    }
  }

  const pmoe_host* host_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkPhysicalDeviceProperties props_{};
  VkPhysicalDeviceMemoryProperties mem_{};
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkSemaphore timeline_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  std::map<std::string, VkPipeline> pipelines_;
  std::vector<Recording> ring_;
  uint64_t ticket_ = 0, completed_ = 0;
  bool host_import_ = false;
  uint64_t import_alignment_ = 4096;
  uint64_t max_allocation_ = 0;
  uint32_t subgroup_size_ = 1;
  bool fp16_ = false;        // the fp16 option, granted
  bool vram_slots_ = false;
  bool early_wait_logged_ = false;  // the vram_slots option: host-visible buffers get device-local mirrors
  PFN_vkGetMemoryHostPointerPropertiesEXT host_pointer_props_ = nullptr;
  Scratch scratch_, act_scratch_;
};

}  // namespace
}  // namespace pmoe::vk

PMOE_PLUGIN("vulkan", PMOE_PLUGIN_VERSION,
            pmoe::sdk::compute_impl<pmoe::vk::VulkanBackend>("vulkan", "Vulkan compute: every op and GGUF weight type"))
