/*
 * pocketmoe SDK: the plugin ABI core.
 *
 * A pocketmoe plugin is a shared library that exports exactly one symbol, `pmoe_plugin_entry`
 * (see PMOE_DECLARE_ENTRY below). The host calls it with its ABI version and a table of host
 * services; the plugin answers with a descriptor that lists one or more implementations, each of
 * one kind (compute backend, storage backend, cache policy) and each with a function table.
 *
 * Rules (docs/plugin-abi.md has the long form):
 *  - Pure C: fixed-width integers, opaque handles, function tables. Nothing C++ crosses.
 *  - Who allocates frees. Strings passed in are borrowed for the duration of the call; strings a
 *    plugin returns in its descriptor must live as long as the library is loaded.
 *  - Every table starts with `uint32_t struct_size`. Tables only grow at the end. The host reads a
 *    member only if it lies inside `struct_size` and is not NULL; a missing member means
 *    "not supported". A plugin built against an older minor version therefore keeps working.
 *  - An incompatible change bumps PMOE_ABI_MAJOR; the host refuses a plugin of another major and
 *    says both versions.
 *  - Errors are a pmoe_status plus a message written into a caller-owned pmoe_error. Nothing is
 *    thrown across the boundary (the C++ layer in cpp/ converts exceptions).
 */
#ifndef POCKETMOE_ABI_H
#define POCKETMOE_ABI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI version of these headers. Minor grows with compatible additions, major on a break. */
#define PMOE_ABI_MAJOR 1
#define PMOE_ABI_MINOR 3

/** Name of the single symbol every plugin library exports. */
#define PMOE_ENTRY_SYMBOL "pmoe_plugin_entry"

/** Result of every fallible call. Values are stable; new codes are only ever added. */
typedef enum pmoe_status {
  PMOE_OK = 0,
  PMOE_ERR_INVALID_ARGUMENT = 1, /**< caller passed something malformed; do not retry */
  PMOE_ERR_NOT_SUPPORTED = 2,    /**< optional feature absent; the host falls back or reports */
  PMOE_ERR_OUT_OF_MEMORY = 3,
  PMOE_ERR_IO = 4,               /**< I/O failure (EIO and friends); a retry may help */
  PMOE_ERR_NOT_FOUND = 5,        /**< file or object does not exist */
  PMOE_ERR_PERMISSION = 6,       /**< access refused */
  PMOE_ERR_OUT_OF_RANGE = 7,     /**< e.g. a read past the end of a file */
  PMOE_ERR_TIMEOUT = 8,
  PMOE_ERR_ABI = 9,              /**< version or table mismatch between host and plugin */
  PMOE_ERR_INTERNAL = 10,        /**< a bug or an unexpected exception inside the plugin */
  PMOE_ERR_AGAIN = 11            /**< transient: queue full or busy; retrying later is right */
} pmoe_status;

/** Readable name of a status ("io", "not_found", ...). */
static inline const char* pmoe_status_name(pmoe_status s) {
  switch (s) {
    case PMOE_OK: return "ok";
    case PMOE_ERR_INVALID_ARGUMENT: return "invalid_argument";
    case PMOE_ERR_NOT_SUPPORTED: return "not_supported";
    case PMOE_ERR_OUT_OF_MEMORY: return "out_of_memory";
    case PMOE_ERR_IO: return "io";
    case PMOE_ERR_NOT_FOUND: return "not_found";
    case PMOE_ERR_PERMISSION: return "permission";
    case PMOE_ERR_OUT_OF_RANGE: return "out_of_range";
    case PMOE_ERR_TIMEOUT: return "timeout";
    case PMOE_ERR_ABI: return "abi";
    case PMOE_ERR_INTERNAL: return "internal";
    case PMOE_ERR_AGAIN: return "again";
  }
  return "unknown";
}

/** Whether retrying the same operation can succeed (RocksDB's IOStatus idea). */
static inline int pmoe_status_retryable(pmoe_status s) {
  return s == PMOE_ERR_IO || s == PMOE_ERR_TIMEOUT || s == PMOE_ERR_AGAIN;
}

/**
 * Caller-owned error record. Every fallible call takes a `pmoe_error*` (which may be NULL when the
 * caller does not want the message). On failure the callee sets `code`, `sys_errno` (0 if none)
 * and a NUL-terminated `message` that says what failed and where (path, offset, option name).
 */
typedef struct pmoe_error {
  pmoe_status code;
  int32_t sys_errno;
  char message[512];
} pmoe_error;

/** Fill `err` (if not NULL) printf-style and return `code`, so a plugin can write
 *  `return pmoe_error_set(err, PMOE_ERR_IO, 0, "read %s failed", path);`. */
static inline pmoe_status pmoe_error_set(pmoe_error* err, pmoe_status code, int32_t sys_errno,
                                         const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static inline pmoe_status pmoe_error_set(pmoe_error* err, pmoe_status code, int32_t sys_errno,
                                         const char* fmt, ...) {
  if (err) {
    va_list ap;
    err->code = code;
    err->sys_errno = sys_errno;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

/** Reset an error record before a call. */
static inline void pmoe_error_clear(pmoe_error* err) {
  if (err) {
    err->code = PMOE_OK;
    err->sys_errno = 0;
    err->message[0] = '\0';
  }
}

/**
 * Options of one implementation, as written in the YAML config. The host has already checked each
 * key against the plugin manifest's option schema (unknown keys and wrong types never reach the
 * plugin) and normalised the values to strings: booleans "true"/"false", integers in decimal, sizes
 * in bytes ("1GiB" arrives as "1073741824"). Keys absent from the config are absent here, and the
 * plugin applies its own defaults.
 */
typedef struct pmoe_option {
  const char* key;
  const char* value;
} pmoe_option;

typedef struct pmoe_options {
  const pmoe_option* items;
  size_t count;
} pmoe_options;

/** Value of `key`, or NULL if absent. */
static inline const char* pmoe_options_get(const pmoe_options* o, const char* key) {
  size_t i;
  if (!o) return NULL;
  for (i = 0; i < o->count; ++i)
    if (o->items[i].key && strcmp(o->items[i].key, key) == 0) return o->items[i].value;
  return NULL;
}

typedef enum pmoe_log_level {
  PMOE_LOG_DEBUG = 0,
  PMOE_LOG_INFO = 1,
  PMOE_LOG_WARN = 2,
  PMOE_LOG_ERROR = 3
} pmoe_log_level;

/**
 * Services the host offers to plugins. Passed to the entry function and to every `create`; valid
 * until the library is unloaded. Members beyond `struct_size` (from an older host) are absent.
 */
typedef struct pmoe_host {
  uint32_t struct_size;
  uint16_t abi_major; /**< ABI version the host was built with */
  uint16_t abi_minor;
  void* ctx;          /**< opaque, passed back to every service */
  /** Log a line; thread-safe. `source` names the plugin or implementation. */
  void (*log)(void* ctx, pmoe_log_level level, const char* source, const char* message);
} pmoe_host;

/** Kinds of implementation a plugin can offer. New kinds are only added. */
typedef enum pmoe_kind {
  PMOE_KIND_COMPUTE = 1,      /**< table: pmoe_compute_vtable (compute.h) */
  PMOE_KIND_STORAGE = 2,      /**< table: pmoe_storage_vtable (storage.h) */
  PMOE_KIND_CACHE_POLICY = 3  /**< table: pmoe_cache_policy_vtable (cache_policy.h) */
} pmoe_kind;

static inline const char* pmoe_kind_name(uint32_t k) {
  switch (k) {
    case PMOE_KIND_COMPUTE: return "compute";
    case PMOE_KIND_STORAGE: return "storage";
    case PMOE_KIND_CACHE_POLICY: return "cache_policy";
    default: return NULL;
  }
}

/** One implementation offered by a library. */
typedef struct pmoe_impl {
  uint32_t kind;           /**< a pmoe_kind */
  uint32_t reserved;
  const char* name;        /**< unique among all loaded plugins, e.g. "storage-posix", "lru" */
  const char* description; /**< one line for `pocketmoe plugins` */
  const void* vtable;      /**< the kind's table; it starts with uint32_t struct_size */
} pmoe_impl;

/** What the entry function returns. Static storage in the plugin; never freed by the host. */
typedef struct pmoe_plugin_desc {
  uint32_t struct_size;
  uint16_t abi_major; /**< ABI version the plugin was built against (PMOE_ABI_MAJOR/MINOR) */
  uint16_t abi_minor;
  const char* name;    /**< library name, e.g. "storage-posix" */
  const char* version; /**< the plugin's own version, e.g. "0.1.0" */
  size_t n_impls;
  const pmoe_impl* impls;
} pmoe_plugin_desc;

/**
 * The entry point. The host passes its services and ABI version; the plugin refuses a host whose
 * major differs (PMOE_ERR_ABI, message naming both versions) and otherwise sets `*out`.
 * Called once per load, before anything else; must not block or start threads.
 */
typedef pmoe_status (*pmoe_plugin_entry_fn)(const pmoe_host* host, const pmoe_plugin_desc** out,
                                            pmoe_error* err);

#if defined(_WIN32)
#define PMOE_EXPORT __declspec(dllexport)
#else
#define PMOE_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
#define PMOE_EXTERN_C extern "C"
#else
#define PMOE_EXTERN_C
#endif

/** Declares the entry symbol with the right linkage and visibility:
 *  `PMOE_DECLARE_ENTRY(host, out, err) { ... }`. */
#define PMOE_DECLARE_ENTRY(host, out, err)                                                   \
  PMOE_EXTERN_C PMOE_EXPORT pmoe_status pmoe_plugin_entry(                                   \
      const pmoe_host* host, const pmoe_plugin_desc** out, pmoe_error* err)

/** True if `member` of table `T` pointed to by `t` lies within the table's struct_size and is
 *  set. Use before calling any member added after the first release of a table. */
#define PMOE_HAS_MEMBER(T, t, member)                                                     \
  ((t) != NULL && (t)->struct_size >= offsetof(T, member) + sizeof((t)->member) &&       \
   (t)->member != NULL)

#ifdef __cplusplus
}
#endif
#endif /* POCKETMOE_ABI_H */
