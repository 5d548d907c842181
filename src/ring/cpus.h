/*
 * How much CPU the process may use. Two things bound it: the affinity mask (the CPUs it may
 * run on: a cpuset, taskset, a Kubernetes pod with exclusive CPUs) and the CPU limit of its
 * cgroups (a container's `--cpus` or `resources.limits.cpu`: cgroup v2 `cpu.max`, v1
 * `cpu.cfs_quota_us`), which the kernel enforces by throttling the whole process for the rest
 * of each period once its threads used the quota. A server that starts one busy thread per
 * allowed CPU under a smaller limit gets throttled in bursts of up to a period (100 ms), so the
 * default core count takes both into account.
 */
#ifndef RINGCAS_RING_CPUS_H
#define RINGCAS_RING_CPUS_H

#include <stdint.h>

/* The number of CPUs this process may run on (sched_getaffinity), at least 1. */
uint32_t ring_cpus_allowed(void);

/*
 * The tightest CPU limit of this process's cgroup and of its ancestors, in thousandths of a
 * CPU (1500: one and a half CPUs); 0 when there is none or it cannot be read. Reads
 * /proc/self/cgroup and /proc/self/mountinfo to find the cgroup's folder, v2 first, then v1's
 * cpu controller. <root> is prefixed to every path read: "" for this process, a folder laid out
 * the same way in tests.
 */
uint64_t ring_cpus_limit_milli(const char *root);

/*
 * The threads a server starts when not told: the allowed CPUs, or fewer when the CPU limit
 * is lower (rounded up, at least 1). <allowed> and <limit_milli> as above.
 */
uint32_t ring_cpus_default_cores(uint32_t allowed, uint64_t limit_milli);

/* The same for this process (its affinity mask and cgroups), logged when the limit lowers it. */
uint32_t ring_cpus_cores(void);

#endif /* RINGCAS_RING_CPUS_H */
