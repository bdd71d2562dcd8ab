// pocketmoe SDK: header-only helpers for storage backends that read POSIX file descriptors.
//
// What every backend that reads files by descriptor (pread, io_uring, ...) has to get right, in
// one place, with the errors and messages docs/storage.md §1 and §2 prescribe:
//
//   strf, fail             printf-style message, throw a StatusError
//   open_status            errno of open/fstat  -> pmoe_status
//   read_status            errno of a read       -> pmoe_status
//   File, open_file        open read-only, size, O_DIRECT with its fallback, block size
//   direct_alignment_of    the O_DIRECT block size of a descriptor
//   check_request          one request of a submit batch (all the §1 checks and messages)
//   split_read, ReadPiece  a read on an O_DIRECT file as reads O_DIRECT accepts (bounce buffers)
//   log_read_past_end      the log line for a read that met end of file (the file shrank)
//
// Sketch of a backend (storage-posix and storage-uring are complete ones):
//
//   struct MyFile : pmoe::sdk::posix::File { /* the backend's own state */ };
//
//   void* open(const char* path, uint32_t flags, uint64_t& size) override {
//     auto f = std::make_unique<MyFile>();
//     pmoe::sdk::posix::open_file(*f, path, direct_io_ || (flags & PMOE_OPEN_DIRECT),
//                                 fallback_, host_, "my-storage");
//     size = f->size;
//     return f.release();               // close(): delete static_cast<MyFile*>(file)
//   }
//   void submit(std::span<const pmoe_read_req> reqs) override {
//     std::lock_guard lk(mu_);
//     for (size_t i = 0; i < reqs.size(); ++i) {  // all or nothing: check every one first
//       auto* f = reinterpret_cast<MyFile*>(reqs[i].file);
//       pmoe::sdk::posix::check_request(reqs[i], i, open_files_.count(f) ? f : nullptr);
//     }
//     ...  // queue them; a reader on a direct file plans its reads with split_read()
//   }
//
// Linux only (O_DIRECT, statx, BLKSSZGET). Everything here is inline; nothing is exported.
#pragma once

#include <pocketmoe/cpp/plugin.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace pmoe::sdk::posix {

// ---------------------------------------------------------------------------------------------
// Messages and errors

/// printf into a std::string. The result is cut at 767 characters (plenty for a message that
/// names a path and a few numbers; pmoe_error::message keeps 511 anyway).
__attribute__((format(printf, 1, 2))) inline std::string strf(const char* fmt, ...) {
  char buf[768];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

/// Throws StatusError(code, msg, sys_errno): the calling C entry point returns `code`, and the
/// host's pmoe_error gets `msg` and `sys_errno` (0: no errno).
[[noreturn]] inline void fail(pmoe_status code, int sys_errno, const std::string& msg) {
  throw StatusError(code, msg, sys_errno);
}

/// The status for an errno of open(2) or fstat(2), as docs/storage.md §1 tables it:
/// ENOENT, ENOTDIR -> PMOE_ERR_NOT_FOUND; EACCES, EPERM -> PMOE_ERR_PERMISSION;
/// ENOMEM -> PMOE_ERR_OUT_OF_MEMORY; anything else -> PMOE_ERR_IO.
inline pmoe_status open_status(int e) {
  switch (e) {
    case ENOENT:
    case ENOTDIR:
      return PMOE_ERR_NOT_FOUND;
    case EACCES:
    case EPERM:
      return PMOE_ERR_PERMISSION;
    case ENOMEM:
      return PMOE_ERR_OUT_OF_MEMORY;
    default:
      return PMOE_ERR_IO;
  }
}

/// The status of a completion whose read failed with errno `e` (pass `e` on as sys_errno):
/// EFAULT, EINVAL -> PMOE_ERR_INVALID_ARGUMENT (a bad dest, or memory O_DIRECT cannot use);
/// ENOMEM -> PMOE_ERR_OUT_OF_MEMORY; anything else -> PMOE_ERR_IO (retryable).
inline pmoe_status read_status(int e) {
  switch (e) {
    case EFAULT:
    case EINVAL:
      return PMOE_ERR_INVALID_ARGUMENT;
    case ENOMEM:
      return PMOE_ERR_OUT_OF_MEMORY;
    default:
      return PMOE_ERR_IO;
  }
}

/// Throws the error of a failed open(2), fstat(2) or fcntl(2) on `path`: open_status(e), errno
/// `e`, message `cannot open '<path>': <strerror(e)>`.
[[noreturn]] inline void fail_open(const char* path, int e) {
  fail(open_status(e), e, strf("cannot open '%s': %s", path, std::strerror(e)));
}

// ---------------------------------------------------------------------------------------------
// Opening files

/// The block size O_DIRECT needs on `fd` (offsets, lengths and memory addresses must all be
/// multiples of it), or 0 when the filesystem reports that it cannot do direct I/O on this file.
/// `st` is fstat(fd). In order: statx(STATX_DIOALIGN) where the kernel has it (Linux 6.1+; the
/// larger of the offset and memory alignment; an offset alignment of 0 means "no direct I/O"),
/// else ioctl(BLKSSZGET) for a block device, else one 4096-byte pread at offset 0 that says 0 if
/// it fails with EINVAL and 4096 otherwise (a multiple of every logical block size in use). `fd`
/// should have O_DIRECT set. Throws std::bad_alloc if the probe's buffer cannot be allocated.
inline uint32_t direct_alignment_of(int fd, const struct stat& st) {
#ifdef STATX_DIOALIGN
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN))
    return sx.stx_dio_offset_align == 0 ? 0
                                        : std::max(sx.stx_dio_offset_align, sx.stx_dio_mem_align);
#endif
  int bs = 0;
  if (S_ISBLK(st.st_mode) && ::ioctl(fd, BLKSSZGET, &bs) == 0 && bs > 0)
    return static_cast<uint32_t>(bs);
  // Unknown: probe one block. 4096 is a multiple of every logical block size we meet.
  void* probe = std::aligned_alloc(4096, 4096);
  if (!probe) throw std::bad_alloc();
  const bool refused = ::pread(fd, probe, 4096, 0) < 0 && errno == EINVAL;
  std::free(probe);
  return refused ? 0 : 4096;
}

/// A file opened for reading by open_file(). A backend derives its file type from it, adding what
/// it needs (a count of reads in flight, a registered-file slot, ...). Owns `fd`: the destructor
/// closes it, so deleting the file (or an exception that unwinds a std::unique_ptr to it) closes
/// the descriptor. Not copyable.
struct File {
  int fd = -1;          ///< read only, close-on-exec; O_DIRECT set exactly when align > 1
  std::string path;     ///< as given to open_file(); messages name it
  uint64_t size = 0;    ///< bytes at open: st_size, or BLKGETSIZE64 for a block device
  uint32_t align = 1;   ///< 1: buffered; > 1: O_DIRECT, and its block size (direct_alignment)

  File() = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd >= 0) ::close(fd);
  }
};

/// Opens `path` read-only into `f` (a default-constructed File: fd -1) and sets its fd, path, size
/// and align, the way
/// docs/storage.md §1 and §2 prescribe:
/// - `direct` (PMOE_OPEN_DIRECT or a backend option asked for it): open with O_DIRECT and set
///   `align` to direct_alignment_of(). Where the filesystem refuses O_DIRECT (open fails with
///   EINVAL, or the alignment is 0; the flag is then cleared again with fcntl) the file is read
///   buffered (`align` 1) if `fallback`, and a warning `filesystem of '<path>' does not support
///   direct I/O (O_DIRECT); reading it through the page cache` is logged through `host` with
///   `source` (the plugin's name); if not `fallback`, open fails with PMOE_ERR_NOT_SUPPORTED,
///   errno EINVAL, `filesystem of '<path>' does not support direct I/O (O_DIRECT); set
///   direct_io_fallback: true to read it buffered`.
/// - Errors (StatusError): NULL path: PMOE_ERR_INVALID_ARGUMENT `open: NULL path`; open, fstat or
///   fcntl failing: see fail_open(); neither a regular file nor a block device whose size
///   BLKGETSIZE64 gives: PMOE_ERR_INVALID_ARGUMENT `cannot read '<path>': not a regular file or
///   block device`; std::bad_alloc (the probe of direct_alignment_of). A descriptor opened before
///   the error stays in `f.fd`, and ~File closes it when `f` is destroyed (allocate `f` in a
///   std::unique_ptr and let it unwind, as storage-posix does).
inline void open_file(File& f, const char* path, bool direct, bool fallback, const pmoe_host* host,
                      const char* source) {
  if (!path) fail(PMOE_ERR_INVALID_ARGUMENT, 0, "open: NULL path");
  f.path = path;
  if (direct) f.fd = ::open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (direct && f.fd < 0 && errno != EINVAL) fail_open(path, errno);
  bool refused = direct && f.fd < 0;
  if (f.fd < 0) f.fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) fail_open(path, errno);

  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail_open(path, errno);
  if (S_ISREG(st.st_mode)) {
    f.size = static_cast<uint64_t>(st.st_size);
  } else if (!S_ISBLK(st.st_mode) || ::ioctl(f.fd, BLKGETSIZE64, &f.size) != 0) {
    fail(PMOE_ERR_INVALID_ARGUMENT, 0,
         strf("cannot read '%s': not a regular file or block device", path));
  }
  if (direct && !refused) {
    f.align = direct_alignment_of(f.fd, st);
    if (f.align == 0) {  // opened, but the filesystem reports no direct I/O for it
      refused = true;
      f.align = 1;
      if (::fcntl(f.fd, F_SETFL, 0) != 0) fail_open(path, errno);  // clear O_DIRECT
    }
  }
  if (refused) {
    std::string why = strf("filesystem of '%s' does not support direct I/O (O_DIRECT)", path);
    if (!fallback)
      fail(PMOE_ERR_NOT_SUPPORTED, EINVAL,
           why + "; set direct_io_fallback: true to read it buffered");
    pmoe::sdk::log(host, PMOE_LOG_WARN, source, why + "; reading it through the page cache");
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Checks request `index` of a submit batch, as docs/storage.md §1 requires; throws StatusError
/// for the first problem found, in this order, with these messages:
///   r.file NULL                     INVALID_ARGUMENT  `request <i>: NULL file`
///   `file` is nullptr               INVALID_ARGUMENT  `request <i>: file is not open`
///   r.dest NULL, r.length > 0       INVALID_ARGUMENT  `request <i>: NULL dest for <length> bytes`
///   r.reserved != 0                 INVALID_ARGUMENT  `request <i>: reserved field must be 0`
///   offset + length > 2^64 - 1      INVALID_ARGUMENT  `request <i>: offset <o> + length <n>
///                                                      overflows`
///   offset + length > file->size    OUT_OF_RANGE      `request <i>: read past end of file
///                                   '<path>': offset <o> length <n> file size <size>`
/// `file` is the file r.file names if it is open in this backend instance, else nullptr (the
/// backend knows its files; a pointer it never returned, or one closed already, is not open).
/// Submit is all or nothing: check every request of the batch before queueing any. Length 0 is a
/// valid read (dest may be NULL), still range-checked.
inline void check_request(const pmoe_read_req& r, size_t index, const File* file) {
  const auto off = static_cast<unsigned long long>(r.offset);
  const auto len = static_cast<unsigned long long>(r.length);
  const size_t i = index;
  if (!r.file) fail(PMOE_ERR_INVALID_ARGUMENT, 0, strf("request %zu: NULL file", i));
  if (!file) fail(PMOE_ERR_INVALID_ARGUMENT, 0, strf("request %zu: file is not open", i));
  if (!r.dest && r.length)
    fail(PMOE_ERR_INVALID_ARGUMENT, 0, strf("request %zu: NULL dest for %llu bytes", i, len));
  if (r.reserved)
    fail(PMOE_ERR_INVALID_ARGUMENT, 0, strf("request %zu: reserved field must be 0", i));
  if (r.offset + r.length < r.offset)
    fail(PMOE_ERR_INVALID_ARGUMENT, 0,
         strf("request %zu: offset %llu + length %llu overflows", i, off, len));
  if (r.offset + r.length > file->size)
    fail(PMOE_ERR_OUT_OF_RANGE, 0,
         strf("request %zu: read past end of file '%s': offset %llu length %llu file size %llu",
              i, file->path.c_str(), off, len, static_cast<unsigned long long>(file->size)));
}

/// One read of the plan split_read() makes: read `len` bytes at file offset `off`; the wanted
/// bytes [copy_off, copy_off + copy_len) of the file belong at `dst`. A straight piece reads
/// straight into `dst` (copy_off == off, copy_len == len). A bounced piece reads into an aligned
/// buffer, where the wanted bytes sit at buffer + (copy_off - off), and copies what arrived of
/// them (the read may end short at end of file) to `dst`.
struct ReadPiece {
  uint64_t off = 0;       ///< file offset to read at
  uint64_t len = 0;       ///< bytes to read there
  char* dst = nullptr;    ///< where the wanted bytes go (the caller's memory)
  bool bounce = false;    ///< false: straight; true: bounced
  uint64_t copy_off = 0;  ///< file offset of the first wanted byte; `off` for a straight piece
  uint64_t copy_len = 0;  ///< wanted bytes; `len` for a straight piece
};

/// Splits a read of [off, off + len) into `dst` from a file with block size `align` (File::align:
/// 1 for buffered files) into reads that O_DIRECT accepts, and calls `piece(const ReadPiece&)`
/// for each in file order; `piece` returns true to go on, false to stop (an error or a short
/// read: the bytes after a gap are of no use). Returns false if `piece` stopped it.
/// - `dst` as misaligned as `off` (`dst % align == off % align`; always so when align is 1): the
///   whole blocks in the middle are one straight piece, read into `dst` with no copy; only the
///   partial first and last block, if any, are bounced.
/// - otherwise everything is bounced.
/// A bounced range is rounded out to whole blocks and read in chunks of at most `chunk` bytes,
/// so the bounce buffer needs `chunk` bytes aligned to `align`. `chunk` must be a positive
/// multiple of `align` (storage-posix and storage-uring use max(1 MiB, align)). The last chunk
/// may reach past end of file: its read then returns short, which is fine as long as the wanted
/// bytes arrived. A straight piece may be larger than one read call takes (Linux caps one near
/// 2 GiB): split it further as needed. len 0 gives no pieces.
template <class F>
bool split_read(uint64_t align, uint64_t off, uint64_t len, char* dst, uint64_t chunk,
                F&& piece) {
  const uint64_t a = align;
  auto bounce = [&](uint64_t o, uint64_t n, char* d) {
    const uint64_t end = o + n;
    for (uint64_t pos = o; pos < end;) {
      const uint64_t lo = pos / a * a, hi = std::min((end + a - 1) / a * a, lo + chunk);
      const uint64_t stop = std::min(end, hi);
      const ReadPiece p{.off = lo,
                        .len = hi - lo,
                        .dst = d + (pos - o),
                        .bounce = true,
                        .copy_off = pos,
                        .copy_len = stop - pos};
      if (!piece(p)) return false;
      pos = stop;
    }
    return true;
  };
  if (reinterpret_cast<uintptr_t>(dst) % a != off % a) return bounce(off, len, dst);
  // dst and off are equally misaligned: the whole blocks in the middle go straight into dst.
  const uint64_t head = std::min(len, (a - off % a) % a);
  const uint64_t body = (len - head) / a * a;
  if (!bounce(off, head, dst)) return false;
  if (body > 0) {
    const ReadPiece p{.off = off + head,
                      .len = body,
                      .dst = dst + head,
                      .copy_off = off + head,
                      .copy_len = body};
    if (!piece(p)) return false;
  }
  return bounce(off + head + body, len - head - body, dst + head + body);
}

/// Logs, at PMOE_LOG_ERROR through `host` with `source`, that a read of `length` bytes at
/// `offset` in `f` met end of file although submit had checked it against the size at open (the
/// file shrank since): `read past end of file '<path>': offset <o> length <n> file size <now>`,
/// where <now> is fstat's size now (-1 if fstat fails). The read then completes with
/// PMOE_ERR_OUT_OF_RANGE and the bytes that did arrive.
inline void log_read_past_end(const pmoe_host* host, const char* source, const File& f,
                              uint64_t offset, uint64_t length) {
  struct stat st {};
  const long long now = ::fstat(f.fd, &st) == 0 ? static_cast<long long>(st.st_size) : -1;
  pmoe::sdk::log(host, PMOE_LOG_ERROR, source,
                 strf("read past end of file '%s': offset %llu length %llu file size %lld",
                      f.path.c_str(), static_cast<unsigned long long>(offset),
                      static_cast<unsigned long long>(length), now));
}

}  // namespace pmoe::sdk::posix
