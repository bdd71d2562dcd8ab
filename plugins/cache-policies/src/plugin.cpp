// The cache-policies plugin: one library, several replacement policies (see docs/cache-policies.md
// for when to pick which).
#include <pocketmoe/cpp/plugin.hpp>

#include "arc_policy.hpp"
#include "lfu_policy.hpp"
#include "router_policy.hpp"
#include "s3fifo_policy.hpp"

PMOE_PLUGIN("cache-policies", "0.1.0",
            pmoe::sdk::cache_policy_impl<pmoe::LfuPolicy>(
                "lfu", "least frequently used expert first; counts halve every aging period"),
            pmoe::sdk::cache_policy_impl<pmoe::S3FifoPolicy>(
                "s3fifo", "S3-FIFO: small FIFO filters one-time experts, main FIFO keeps reused"),
            pmoe::sdk::cache_policy_impl<pmoe::ArcPolicy>(
                "arc", "ARC: adaptive split between recently and frequently used experts"),
            pmoe::sdk::cache_policy_impl<pmoe::RouterPolicy>(
                "router",
                "router-aware: lowest expected use (averages of gating probability and use)"))
