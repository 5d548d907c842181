/*
 * One-line explanations of io_uring setup failures, naming the cause and the fix. ringcas
 * cannot run without io_uring, so `ringcas serve` prints this line and exits non-zero.
 *
 * The causes seen in the field: a seccomp filter (Docker >= 25's default profile) makes
 * io_uring_setup fail with EPERM or ENOSYS; the sysctl kernel.io_uring_disabled (1 or 2) gives
 * EPERM; a kernel older than 6.1 rejects DEFER_TASKRUN with EINVAL; a low RLIMIT_MEMLOCK makes
 * the rings or the buffer ring fail with ENOMEM.
 */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>

#include "base/err.h"
#include "base/parse.h"
#include "ring/internal.h"

/* Reads kernel.io_uring_disabled; -1 when the file does not exist (kernels before 6.6). */
static int read_io_uring_disabled(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
    if (!f) return -1;
    char line[32] = "";
    char *got = fgets(line, sizeof(line), f);
    (void)fclose(f);
    if (!got) return -1;
    line[strcspn(line, "\n")] = '\0';
    uint64_t v;
    if (base_parse_u64(line, &v) < 0 || v > 2) return -1;
    return (int)v;
}

static void explain_eperm(char *why, size_t why_size, const char *step)
{
    int disabled = read_io_uring_disabled();
    if (disabled > 0) {
        (void)snprintf(
            why, why_size,
            "io_uring is disabled on this host (%s: EPERM, sysctl kernel.io_uring_disabled=%d)"
            "; fix: run `sysctl -w kernel.io_uring_disabled=0` (or add ringcas's group to "
            "kernel.io_uring_group when it is 1)",
            step, disabled);
        return;
    }
    (void)snprintf(
        why, why_size,
        "io_uring is blocked for this process (%s: EPERM), most likely by a seccomp filter "
        "such as Docker's default profile; fix: allow io_uring_setup, io_uring_enter and "
        "io_uring_register in the seccomp profile (e.g. `--security-opt seccomp=...`)",
        step);
}

static void explain_enomem(char *why, size_t why_size, const char *step)
{
    struct rlimit rl;
    char limit[64] = "unknown";
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY) {
            (void)snprintf(limit, sizeof(limit), "unlimited");
        } else {
            (void)snprintf(limit, sizeof(limit), "%llu KiB",
                           (unsigned long long)rl.rlim_cur / 1024);
        }
    }
    (void)snprintf(
        why, why_size,
        "io_uring could not lock the memory it needs (%s: ENOMEM, RLIMIT_MEMLOCK %s); fix: "
        "raise the locked-memory limit (`ulimit -l unlimited`, systemd LimitMEMLOCK=infinity, "
        "or the container's memlock ulimit), or lower --recv-buffers",
        step, limit);
}

void ring_setup_explain(int err, const char *step, char *why, size_t why_size)
{
    if (!why || why_size == 0) return;
    struct utsname u;
    const char *release = uname(&u) == 0 ? u.release : "unknown";
    switch (err) {
    case -EPERM:
    case -EACCES:
        explain_eperm(why, why_size, step);
        break;
    case -ENOSYS:
        (void)snprintf(
            why, why_size,
            "io_uring is not available (%s: ENOSYS on kernel %s): the kernel lacks it or a "
            "seccomp filter hides it; fix: run on Linux 6.1 or newer with CONFIG_IO_URING=y "
            "and allow the io_uring syscalls in the seccomp profile",
            step, release);
        break;
    case -EINVAL:
        (void)snprintf(
            why, why_size,
            "the kernel rejected the io_uring setup (%s: EINVAL on kernel %s): ringcas needs "
            "Linux 6.1 or newer (SINGLE_ISSUER, DEFER_TASKRUN, provided-buffer rings); "
            "fix: upgrade the kernel",
            step, release);
        break;
    case -ENOMEM:
        explain_enomem(why, why_size, step);
        break;
    case -EMFILE:
    case -ENFILE:
        (void)snprintf(
            why, why_size,
            "out of file descriptors while creating io_uring (%s: %s); fix: raise the open "
            "files limit (`ulimit -n`, systemd LimitNOFILE)",
            step, base_err_name(err));
        break;
    default:
        (void)snprintf(why, why_size, "io_uring setup failed (%s: %s, %s on kernel %s)", step,
                       base_err_name(err), base_err_str(err), release);
        break;
    }
}
