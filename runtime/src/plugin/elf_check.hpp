#pragma once
// A plugin library is checked before dlopen: a truncated or corrupt .so would otherwise be
// mapped and crash the process with SIGBUS the first time a page past the file's end is touched.
#include <string>

namespace pmoe {

/// Empty when `path` is a 64-bit little-endian x86-64 ELF shared object whose program headers and
/// loadable segments all lie within the file; otherwise what is wrong, with byte offsets.
std::string elf_problem(const std::string& path);

}  // namespace pmoe
