/*
 * no_uring ERRNO PROGRAM [ARGS...]: runs PROGRAM under a seccomp filter that makes
 * io_uring_setup(2) fail with ERRNO (EPERM, ENOSYS, ...), the way Docker's default profile
 * or an old kernel would. Used to test that `ringcas serve` names the cause and the fix.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int errno_by_name(const char *name)
{
    if (strcmp(name, "EPERM") == 0) return EPERM;
    if (strcmp(name, "ENOSYS") == 0) return ENOSYS;
    if (strcmp(name, "EINVAL") == 0) return EINVAL;
    if (strcmp(name, "ENOMEM") == 0) return ENOMEM;
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: no_uring ERRNO PROGRAM [ARGS...]\n");
        return 2;
    }
    int err = errno_by_name(argv[1]);
    if (err < 0) {
        fprintf(stderr, "no_uring: unknown errno %s\n", argv[1]);
        return 2;
    }
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("no_uring: seccomp");
        return 2;
    }
    execv(argv[2], argv + 2);
    perror("no_uring: exec");
    return 2;
}
