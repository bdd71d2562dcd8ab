/*
 * pocketmoe SDK: everything a plugin needs, in one include.
 *
 *   abi.h           versions, status codes, errors, options, host services, the entry point
 *   dtype.h         tensor element and block types (GGML ids)
 *   compute.h       compute backends: buffers and batched operations
 *   storage.h       storage backends: asynchronous batched reads
 *   cache_policy.h  expert-cache replacement policies
 *
 * C++ plugin authors can use the header-only layer in pocketmoe/cpp/plugin.hpp instead of filling
 * tables by hand.
 */
#ifndef POCKETMOE_POCKETMOE_H
#define POCKETMOE_POCKETMOE_H

#include "abi.h"
#include "cache_policy.h"
#include "compute.h"
#include "dtype.h"
#include "storage.h"

#endif /* POCKETMOE_POCKETMOE_H */
