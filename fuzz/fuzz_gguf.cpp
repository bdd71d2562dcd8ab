// libFuzzer target: the GGUF reader and the model loader on arbitrary bytes. Any input must end
// in a loaded model or a pmoe::Error; never a crash, a hang, an allocation driven by a count the
// bytes cannot back, or undefined behaviour (built with ASan + UBSan).
#include "common/error.hpp"
#include "gguf/gguf.hpp"
#include "model/model.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = pmoe::GgufFile::from_memory(data, size, "fuzz.gguf");
    for (const std::string& k : f->keys()) (void)f->type_of(k);
  } catch (const pmoe::Error&) {
    return 0;
  }
  // the model loader reads a path: the same bytes through a memory file
  const int fd = memfd_create("fuzz.gguf", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, data, size) == ssize_t(size)) {
    try {
      const auto m = pmoe::Model::load("/proc/self/fd/" + std::to_string(fd));
      (void)m->total_expert_bytes();
    } catch (const pmoe::Error&) {
    }
  }
  close(fd);
  return 0;
}
