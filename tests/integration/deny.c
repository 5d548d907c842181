/*
 * deny WHAT ERRNO PROGRAM [ARGS...]: runs PROGRAM under a seccomp filter that makes one kind of
 * system call fail with ERRNO, to test the paths real systems take:
 *   io_uring  io_uring_setup(2), the way Docker's default profile (EPERM) or an old kernel
 *             (ENOSYS, EINVAL) would: `ringcas serve` must name the cause and the fix;
 *   tmpfile   open(2)/openat(2) with O_TMPFILE, the way a file system without it answers
 *             (EOPNOTSUPP): `ringcas put -` must fall back to a named temporary file.
 */
#include <errno.h>
#include <fcntl.h>
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
    if (strcmp(name, "EOPNOTSUPP") == 0) return EOPNOTSUPP;
    if (strcmp(name, "EISDIR") == 0) return EISDIR;
    return -1;
}

#define LOAD(field) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, field))
#define ALLOW       BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
/* The low 32 bits of a 64-bit argument (x86-64 is little-endian). */
#define LOAD_ARG(i) LOAD(args[i])

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: deny io_uring|tmpfile ERRNO PROGRAM [ARGS...]\n");
        return 2;
    }
    int err = errno_by_name(argv[2]);
    if (err < 0) {
        fprintf(stderr, "deny: unknown errno %s\n", argv[2]);
        return 2;
    }
    const struct sock_filter deny =
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA));
    struct sock_filter uring[] = {
        LOAD(arch), BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),   ALLOW,
        LOAD(nr),   BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1), deny,
        ALLOW,
    };
    /* __O_TMPFILE is the bit O_TMPFILE adds to O_DIRECTORY. */
    struct sock_filter tmpfile[] = {
        LOAD(arch),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        ALLOW,
        LOAD(nr),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 4, 0),
        ALLOW,
        LOAD_ARG(2), /* openat's flags */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_TMPFILE & ~O_DIRECTORY, 4, 0),
        ALLOW,
        LOAD_ARG(1), /* open's flags */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_TMPFILE & ~O_DIRECTORY, 1, 0),
        ALLOW,
        deny,
    };
    struct sock_fprog prog;
    if (strcmp(argv[1], "io_uring") == 0) {
        prog = (struct sock_fprog){ .len = sizeof(uring) / sizeof(uring[0]), .filter = uring };
    } else if (strcmp(argv[1], "tmpfile") == 0) {
        prog =
            (struct sock_fprog){ .len = sizeof(tmpfile) / sizeof(tmpfile[0]), .filter = tmpfile };
    } else {
        fprintf(stderr, "deny: unknown call %s\n", argv[1]);
        return 2;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("deny: seccomp");
        return 2;
    }
    execv(argv[3], argv + 3);
    perror("deny: exec");
    return 2;
}
