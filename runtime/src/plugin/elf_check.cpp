#include "plugin/elf_check.hpp"

#include <elf.h>

#include <cstring>
#include <fstream>
#include <vector>

namespace pmoe {

std::string elf_problem(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return "cannot open it";
  const uint64_t size = uint64_t(f.tellg());
  f.seekg(0);
  Elf64_Ehdr eh{};
  if (size < sizeof eh || !f.read(reinterpret_cast<char*>(&eh), sizeof eh))
    return "not an ELF shared object (" + std::to_string(size) + " bytes, shorter than an ELF header)";
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return "not an ELF file (no ELF magic at byte 0)";
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
    return "not a 64-bit little-endian x86-64 ELF file";
  if (eh.e_type != ET_DYN) return "not a shared object (ELF type " + std::to_string(eh.e_type) + ")";
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0)
    return "corrupt ELF header: program header entries of " + std::to_string(eh.e_phentsize) + " bytes, " +
           std::to_string(eh.e_phnum) + " of them";
  const uint64_t ph_end = eh.e_phoff + uint64_t(eh.e_phnum) * sizeof(Elf64_Phdr);
  if (eh.e_phoff > size || ph_end > size)
    return "truncated: the program headers end at byte " + std::to_string(ph_end) + ", the file at byte " +
           std::to_string(size);
  if (eh.e_shoff && eh.e_shoff + uint64_t(eh.e_shnum) * eh.e_shentsize > size)
    return "truncated: the section headers end at byte " +
           std::to_string(eh.e_shoff + uint64_t(eh.e_shnum) * eh.e_shentsize) + ", the file at byte " +
           std::to_string(size);
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  f.seekg(std::streamoff(eh.e_phoff));
  if (!f.read(reinterpret_cast<char*>(ph.data()), std::streamsize(ph.size() * sizeof(Elf64_Phdr))))
    return "cannot read the program headers";
  for (size_t i = 0; i < ph.size(); ++i)
    if (ph[i].p_type == PT_LOAD && (ph[i].p_offset > size || ph[i].p_filesz > size - ph[i].p_offset))
      return "truncated: loadable segment " + std::to_string(i) + " ends at byte " +
             std::to_string(ph[i].p_offset + ph[i].p_filesz) + ", the file at byte " + std::to_string(size);
  return {};
}

}  // namespace pmoe
