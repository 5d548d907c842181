/*
 * The CPU limit of the process's cgroups (ring/cpus.h), read from folders laid out like
 * /proc and /sys/fs/cgroup on a Kubernetes node, in a Docker container (v1 and v2) and on a
 * machine without limits; and the default core count it gives.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "ring/cpus.h"

/* The folder standing for "/" (each test makes its own: Criterion's .init is not in every
 * runner this suite uses). */
static char root[64];

static void setup(void)
{
    (void)snprintf(root, sizeof(root), "/tmp/ringcas-cpus-XXXXXX");
    cr_assert(ne(ptr, mkdtemp(root), NULL));
}

static void teardown(void)
{
    char cmd[128];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    cr_assert(eq(int, system(cmd), 0));
}

/* Writes <text> to <root><path>, creating the folders on the way. */
static void put(const char *path, const char *text)
{
    char full[512];
    (void)snprintf(full, sizeof(full), "%s%s", root, path);
    for (char *p = full + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        cr_assert(mkdir(full, 0755) == 0 || errno == EEXIST, "mkdir %s", full);
        *p = '/';
    }
    FILE *f = fopen(full, "w");
    cr_assert(ne(ptr, f, NULL), "open %s", full);
    cr_assert(eq(int, fputs(text, f) >= 0, 1));
    cr_assert(eq(int, fclose(f), 0));
}

#define MOUNT_V2      "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw\n"
#define MOUNT_V2_HYBR "35 31 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
#define MOUNT_OTHER   "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"

Test(ring_cpus, v2_takes_the_smallest_limit_up_to_the_mount)
{
    setup();
    put("/proc/self/cgroup", "0::/kubepods/pod1/c1\n");
    put("/proc/self/mountinfo", MOUNT_OTHER MOUNT_V2);
    put("/sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n");
    put("/sys/fs/cgroup/kubepods/pod1/cpu.max", "250000 100000\n");
    put("/sys/fs/cgroup/kubepods/cpu.max", "800000 100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 2500));
    /* The container's own limit below its pod's counts too. */
    put("/sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "150000 100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 1500));
    teardown();
}

Test(ring_cpus, v2_in_a_cgroup_namespace_reads_the_mount_point)
{
    setup();
    put("/proc/self/cgroup", "0::/\n");
    put("/proc/self/mountinfo", MOUNT_V2);
    put("/sys/fs/cgroup/cpu.max", "50000 100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 500));
    /* A path outside the namespace's root ("/.." of a process moved after it started). */
    put("/proc/self/cgroup", "0::/../other\n");
    put("/proc/self/mountinfo", "30 23 0:26 /ctr /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 500));
    teardown();
}

Test(ring_cpus, v1_docker_mount_shows_the_containers_folder)
{
    setup();
    /* Hybrid: a v2 mount without the cpu controller, then v1's cpu,cpuacct whose root is the
     * container's cgroup. */
    put("/proc/self/cgroup", "5:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/docker/abc\n");
    put("/proc/self/mountinfo", MOUNT_OTHER MOUNT_V2_HYBR
        "40 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "41 31 0:31 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n");
    put("/sys/fs/cgroup/unified/docker/abc/cgroup.procs", "1\n");
    put("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "300000\n");
    put("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 3000));
    put("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0));
    teardown();
}

Test(ring_cpus, v1_walks_up_from_a_nested_cgroup)
{
    setup();
    put("/proc/self/cgroup", "1:cpu:/batch/job\n");
    put("/proc/self/mountinfo",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n");
    put("/sys/fs/cgroup/cpu/batch/job/cpu.cfs_quota_us", "-1\n");
    put("/sys/fs/cgroup/cpu/batch/job/cpu.cfs_period_us", "100000\n");
    put("/sys/fs/cgroup/cpu/batch/cpu.cfs_quota_us", "12345\n");
    put("/sys/fs/cgroup/cpu/batch/cpu.cfs_period_us", "100000\n");
    put("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
    put("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 124)); /* rounded up, never to 0 */
    teardown();
}

Test(ring_cpus, an_escaped_mount_point_is_found)
{
    setup();
    put("/proc/self/cgroup", "0::/a\n");
    put("/proc/self/mountinfo", "30 23 0:26 / /cg\\040root rw - cgroup2 cgroup2 rw\n");
    put("/cg root/a/cpu.max", "200000 50000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 4000));
    teardown();
}

Test(ring_cpus, no_limit_or_unreadable_files_mean_none)
{
    setup();
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0)); /* no /proc at all */
    put("/proc/self/cgroup", "0::/a\n");
    put("/proc/self/mountinfo", MOUNT_V2);
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0)); /* no cpu.max: the root cgroup */
    put("/sys/fs/cgroup/a/cpu.max", "max 100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0));
    put("/sys/fs/cgroup/a/cpu.max", "lots\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0));
    put("/sys/fs/cgroup/a/cpu.max", "100000 0\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0));
    put("/sys/fs/cgroup/a/cpu.max", "-5 100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0));
    put("/proc/self/mountinfo", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2\n"); /* cut short */
    put("/sys/fs/cgroup/a/cpu.max", "100000 100000\n");
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 0));
    put("/proc/self/mountinfo", MOUNT_V2);
    cr_assert(eq(u64, ring_cpus_limit_milli(root), 1000));
    teardown();
}

Test(ring_cpus, default_cores_follow_the_limit)
{
    cr_assert(eq(u32, ring_cpus_default_cores(8, 0), 8));
    cr_assert(eq(u32, ring_cpus_default_cores(8, 1500), 2));
    cr_assert(eq(u32, ring_cpus_default_cores(8, 1000), 1));
    cr_assert(eq(u32, ring_cpus_default_cores(8, 1), 1));
    cr_assert(eq(u32, ring_cpus_default_cores(2, 5000), 2));
    cr_assert(eq(u32, ring_cpus_default_cores(0, 0), 1));
}

Test(ring_cpus, this_process_reads_without_error)
{
    /* Whatever this machine's limit is, it is one the kernel could enforce. */
    uint64_t l = ring_cpus_limit_milli("");
    cr_assert(le(u64, l, 1024ULL * 1000 * 1000));
    cr_assert(ge(u32, ring_cpus_allowed(), 1));
}
