/*
 * pocketmoe SDK: storage backends.
 *
 * A storage backend reads byte ranges of files into caller memory, asynchronously and in batches.
 * The runtime uses it to stream expert weights from the GGUF file into cache slots. The shape maps
 * directly onto io_uring (a submission queue of reads, a completion queue) and onto a thread pool
 * of pread() workers.
 *
 * Life cycle: create -> open files -> [set_callback] -> submit batches -> poll or callbacks ->
 * close files -> destroy. An instance is used from several host threads: submit, poll and
 * set_callback must be thread-safe. destroy is called only after every submitted read completed.
 *
 * Direct I/O: a file opened with PMOE_OPEN_DIRECT bypasses the page cache where the filesystem
 * allows it. The backend handles alignment for the caller: a request whose offset, length or
 * destination is not a multiple of `direct_alignment` is still served (through an aligned bounce
 * buffer), while aligned requests land in the caller's memory without a copy. Where the filesystem
 * refuses O_DIRECT, `open` either falls back to buffered reads (and says so through the host log)
 * or fails with PMOE_ERR_NOT_SUPPORTED, as the backend's `direct_io_fallback` option says.
 */
#ifndef POCKETMOE_STORAGE_H
#define POCKETMOE_STORAGE_H

#include "abi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pmoe_storage pmoe_storage; /**< opaque backend instance */
typedef struct pmoe_file pmoe_file;       /**< opaque open file */

/** open() flags. */
#define PMOE_OPEN_DIRECT 0x1u /**< bypass the page cache (O_DIRECT) */

/** One read: `length` bytes at `offset` of `file` into `dest`. */
typedef struct pmoe_read_req {
  pmoe_file* file;
  uint64_t offset;
  uint64_t length;
  void* dest;          /**< caller memory, valid and untouched until the completion arrives */
  uint64_t user_data;  /**< returned unchanged in the completion */
  uint32_t priority;   /**< 0 = demand read (a computation waits for it); larger = speculative.
                            Backends serve lower values first and never delay 0 behind others. */
  uint32_t reserved;   /**< must be 0 */
} pmoe_read_req;

/** Completion of one read. */
typedef struct pmoe_read_done {
  uint64_t user_data;
  pmoe_status status;  /**< PMOE_OK, or why it failed (PMOE_ERR_OUT_OF_RANGE past end of file) */
  int32_t sys_errno;   /**< errno of the failing system call, 0 if none */
  uint64_t bytes;      /**< bytes placed in dest; equals length on success (short reads are
                            retried inside the backend, EINTR too) */
} pmoe_read_done;

/** Completion callback. Called from a backend thread, possibly concurrently; must not block. */
typedef void (*pmoe_read_callback)(void* ctx, const pmoe_read_done* done);

typedef struct pmoe_storage_vtable {
  uint32_t struct_size; /**< sizeof(pmoe_storage_vtable) the plugin was built with */
  uint32_t reserved;

  /** Make an instance with the options of the config's `storage:` section. */
  pmoe_status (*create)(const pmoe_host* host, const pmoe_options* options, pmoe_storage** out,
                        pmoe_error* err);
  /** Free an instance. Every submitted read has completed and every file is closed. */
  void (*destroy)(pmoe_storage* s);

  /** Open `path` for reading with PMOE_OPEN_* `flags`; `*size` receives the file size.
   *  Errors name the path: PMOE_ERR_NOT_FOUND, PMOE_ERR_PERMISSION, PMOE_ERR_NOT_SUPPORTED. */
  pmoe_status (*open)(pmoe_storage* s, const char* path, uint32_t flags, pmoe_file** out,
                      uint64_t* size, pmoe_error* err);
  /** Close a file with no read in flight. */
  void (*close)(pmoe_storage* s, pmoe_file* f);

  /** Deliver completions through `cb` from now on instead of queueing them for poll.
   *  NULL cb returns to polling. Call it before submitting. */
  pmoe_status (*set_callback)(pmoe_storage* s, pmoe_read_callback cb, void* ctx, pmoe_error* err);

  /** Queue `n` reads. Either all are accepted (PMOE_OK) or none (an error naming the bad
   *  request; PMOE_ERR_AGAIN when the queue is full). Each accepted read completes exactly once. */
  pmoe_status (*submit)(pmoe_storage* s, const pmoe_read_req* reqs, size_t n, pmoe_error* err);

  /** Take up to `max` completions into `out`, waiting until at least `min_done` are there or
   *  `timeout_ns` passed (0: do not wait; negative: no limit). Returns how many were written. */
  size_t (*poll)(pmoe_storage* s, pmoe_read_done* out, size_t max, size_t min_done,
                 int64_t timeout_ns);

  /** Alignment (bytes) that makes a read on `f` zero-copy: offset, length and dest multiples of
   *  it. 1 when any read is zero-copy (buffered files). */
  uint32_t (*direct_alignment)(pmoe_storage* s, pmoe_file* f);
} pmoe_storage_vtable;

#ifdef __cplusplus
}
#endif
#endif /* POCKETMOE_STORAGE_H */
