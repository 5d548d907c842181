/*
 * The CPUs and the CPU limit of this process (cpus.h). Read once at startup, so plain stdio.
 *
 * The cgroup's folder: /proc/self/cgroup names the process's cgroup as a path from the root of
 * its hierarchy ("0::/kubepods/pod1/c1" for v2; "4:cpu,cpuacct:/docker/abc" for v1), and
 * /proc/self/mountinfo says where that hierarchy is mounted and which of its folders the mount
 * shows (a container sees its own cgroup as the mount's root). The limit of every ancestor
 * applies as well, so the walk goes up to the mount point and keeps the smallest.
 */
#include "ring/cpus.h"

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define PATH_BYTES 1024 /* a Kubernetes container's cgroup path is about 150 */
/* Lines of /proc/self/cgroup and /proc/self/mountinfo looked at: a bound, not a limit seen. */
#define LINES_MAX 100000

uint32_t ring_cpus_allowed(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == -1) return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? (uint32_t)n : 1;
}

uint32_t ring_cpus_default_cores(uint32_t allowed, uint64_t limit_milli)
{
    if (allowed == 0) allowed = 1;
    if (limit_milli == 0) return allowed;
    uint64_t cpus = (limit_milli + 999) / 1000;
    return cpus < allowed ? (uint32_t)cpus : allowed;
}

/* The hierarchy looked for: v2's unified one, or v1's with the cpu controller. */
enum hier {
    HIER_V2,
    HIER_V1_CPU
};

/* Whether the comma-separated <list> holds <word>. */
static bool list_has(const char *list, const char *word)
{
    size_t n = strlen(word);
    const char *p = list;
    /* Bounded by the list's length. */
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, word, n) == 0) return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* What a line matcher is given and fills in: the hierarchy looked for, and its results. */
struct scan {
    enum hier h;
    const char *root; /* prefix of every path */
    const char *cg;   /* the cgroup's path (cgroup_dir) */
    char *out;        /* the result */
    size_t out_size;  /* room in out */
    size_t mount_len; /* cgroup_dir: bytes of out up to the mount point */
};

/*
 * Calls <match> on each line of <root><path>, newline removed, until it returns true. 0 when
 * a line matched, -ENOENT when none did or the file cannot be read.
 */
static int scan_lines(const char *path, bool (*match)(char *line, struct scan *sc), struct scan *sc)
{
    char full[PATH_BYTES];
    int n = snprintf(full, sizeof(full), "%s%s", sc->root, path);
    FILE *f = n < 0 || (size_t)n >= sizeof(full) ? NULL : fopen(full, "re");
    if (!f) return -ENOENT;
    char *line = NULL;
    size_t cap = 0;
    int rc = -ENOENT;
    for (int i = 0; i < LINES_MAX && getline(&line, &cap, f) > 0; i++) {
        line[strcspn(line, "\n")] = '\0';
        if (match(line, sc)) {
            rc = 0;
            break;
        }
    }
    free(line);
    (void)fclose(f);
    return rc;
}

/* A /proc/self/cgroup line of the hierarchy: its path goes to sc->out. */
static bool match_cgroup(char *line, struct scan *sc)
{
    char *ctl = strchr(line, ':');
    char *path = ctl ? strchr(ctl + 1, ':') : NULL;
    if (!path) return false;
    *ctl++ = '\0';
    *path++ = '\0';
    bool match = sc->h == HIER_V2 ? strcmp(line, "0") == 0 && ctl[0] == '\0' : list_has(ctl, "cpu");
    if (!match || path[0] != '/' || strlen(path) >= sc->out_size) return false;
    memcpy(sc->out, path, strlen(path) + 1);
    return true;
}

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
    char *w = s;
    /* Bounded by the string. */
    for (const char *r = s; *r; w++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w = (char)(((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
            r += 4;
        } else {
            *w = *r++;
        }
    }
    *w = '\0';
}

/*
 * A /proc/self/mountinfo line of the hierarchy's mount: its mount point and the rest of sc->cg
 * below the mount's root go to sc->out (mount point + relative path).
 */
static bool match_mount(char *line, struct scan *sc)
{
    /* id parent major:minor root mountpoint options [optional...] - fstype source super */
    char *fields[6];
    char *save = NULL;
    char *tok = strtok_r(line, " ", &save);
    int n = 0;
    for (; tok && n < 6; n++, tok = strtok_r(NULL, " ", &save)) {
        fields[n] = tok;
    }
    while (tok && strcmp(tok, "-") != 0) {
        tok = strtok_r(NULL, " ", &save);
    }
    char *fstype = tok ? strtok_r(NULL, " ", &save) : NULL;
    char *source = fstype ? strtok_r(NULL, " ", &save) : NULL;
    char *super = source ? strtok_r(NULL, " ", &save) : NULL;
    if (n < 6 || !super) return false;
    bool match = sc->h == HIER_V2 ? strcmp(fstype, "cgroup2") == 0
                                  : strcmp(fstype, "cgroup") == 0 && list_has(super, "cpu");
    if (!match) return false;
    char *mroot = fields[3];
    char *mpoint = fields[4];
    unescape(mroot);
    unescape(mpoint);
    /* The part of the cgroup's path below the mount's root; a path outside it (a cgroup
     * namespace's "/.." paths) is read at the mount point itself. */
    const char *cg = sc->cg;
    const char *rel = "";
    size_t rl = strlen(mroot);
    if (strcmp(mroot, "/") == 0) {
        rel = cg;
    } else if (strncmp(cg, mroot, rl) == 0 && (cg[rl] == '/' || cg[rl] == '\0')) {
        rel = cg + rl;
    }
    if (strcmp(rel, "/") == 0) rel = "";
    int w = snprintf(sc->out, sc->out_size, "%s%s%s", sc->root, mpoint, rel);
    if (w < 0 || (size_t)w >= sc->out_size) return false;
    sc->mount_len = strlen(sc->root) + strlen(mpoint);
    return true;
}

/* Reads the first line of <dir>/<name> into <buf>. 0 or -errno. */
static int read_line(const char *dir, const char *name, char *buf, size_t size)
{
    char path[PATH_BYTES];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path)) return -ENAMETOOLONG;
    FILE *f = fopen(path, "re");
    if (!f) return errno ? -errno : -EIO;
    bool ok = fgets(buf, (int)size, f) != NULL;
    (void)fclose(f);
    if (!ok) return -EIO;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

static bool parse_u64(const char *s, char **end, uint64_t *out)
{
    if (*s < '0' || *s > '9') return false;
    errno = 0;
    unsigned long long v = strtoull(s, end, 10);
    if (errno != 0) return false;
    *out = v;
    return true;
}

/* The limit set in <dir> itself, in thousandths of a CPU; 0 when none. */
static uint64_t limit_at(const char *dir, enum hier h)
{
    /* Initialised: clang-analyzer assumes a failed fopen() may leave errno 0, read_line()
     * then "succeeds" without writing, and parse_u64() reads garbage. */
    char a[64] = "";
    char b[64] = "";
    uint64_t quota;
    uint64_t period;
    char *end;
    if (h == HIER_V2) {
        /* cpu.max: "max 100000" or "150000 100000" */
        if (read_line(dir, "cpu.max", a, sizeof(a)) < 0) return 0;
        if (!parse_u64(a, &end, &quota) || *end != ' ') return 0;
        if (!parse_u64(end + 1, &end, &period) || *end != '\0') return 0;
    } else {
        /* cpu.cfs_quota_us: -1 when unlimited */
        if (read_line(dir, "cpu.cfs_quota_us", a, sizeof(a)) < 0) return 0;
        if (read_line(dir, "cpu.cfs_period_us", b, sizeof(b)) < 0) return 0;
        if (!parse_u64(a, &end, &quota) || *end != '\0') return 0;
        if (!parse_u64(b, &end, &period) || *end != '\0') return 0;
    }
    if (period == 0 || quota == 0 || quota > UINT64_MAX / 1000) return 0;
    return (quota * 1000 + period - 1) / period;
}

/* The smallest limit from <h>'s folder up to its mount point; 0 when none. */
static uint64_t limit_of(const char *root, enum hier h)
{
    char cg[PATH_BYTES];
    char dir[PATH_BYTES];
    struct scan sc = { .h = h, .root = root, .out = cg, .out_size = sizeof(cg) };
    if (scan_lines("/proc/self/cgroup", match_cgroup, &sc) < 0) return 0;
    sc.cg = cg;
    sc.out = dir;
    sc.out_size = sizeof(dir);
    if (scan_lines("/proc/self/mountinfo", match_mount, &sc) < 0) return 0;
    size_t mount_len = sc.mount_len;
    uint64_t best = 0;
    /* Bounded: each pass drops one component of <dir>, down to the mount point. */
    for (;;) {
        uint64_t l = limit_at(dir, h);
        if (l != 0 && (best == 0 || l < best)) best = l;
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= mount_len || !slash || (size_t)(slash - dir) < mount_len) break;
        *slash = '\0';
    }
    return best;
}

uint64_t ring_cpus_limit_milli(const char *root)
{
    uint64_t l = limit_of(root, HIER_V2);
    if (l == 0) l = limit_of(root, HIER_V1_CPU);
    return l;
}

uint32_t ring_cpus_cores(void)
{
    uint32_t allowed = ring_cpus_allowed();
    uint64_t limit = ring_cpus_limit_milli("");
    uint32_t n = ring_cpus_default_cores(allowed, limit);
    if (n < allowed) {
        LOG_INFO("--cores not given: %u, for a cgroup CPU limit of %llu.%03llu CPUs (%u CPUs "
                 "allowed)",
                 n, (unsigned long long)(limit / 1000), (unsigned long long)(limit % 1000),
                 allowed);
    }
    return n;
}
