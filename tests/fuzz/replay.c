/*
 * main() for fuzz targets in builds without libFuzzer: runs LLVMFuzzerTestOneInput once on
 * every regular file of the folders (or files) named on the command line, so the committed
 * corpus is replayed by ctest on every build. Exits non-zero when no input was found.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one file; returns 1 when it was run, 0 when skipped, -1 on an I/O error. */
static int run_file(const char *path)
{
    struct stat st;
    if (stat(path, &st) == -1 || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t size = (size_t)st.st_size;
    uint8_t *data = malloc(size ? size : 1);
    size_t got = data ? fread(data, 1, size, f) : 0;
    (void)fclose(f);
    if (!data || got != size) {
        free(data);
        return -1;
    }
    /* Exactly <size> bytes, so ASan sees any read past the input. */
    (void)LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 1;
}

static int run_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        int rc = run_file(dir);
        if (rc > 0) (*count)++;
        return rc < 0 ? -1 : 0;
    }
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        (void)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        int rc = run_file(path);
        if (rc < 0) {
            (void)fprintf(stderr, "replay: cannot read %s\n", path);
            (void)closedir(d);
            return -1;
        }
        *count += (size_t)rc;
    }
    (void)closedir(d);
    return 0;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue; /* libFuzzer flags */
        if (run_dir(argv[i], &count) < 0) return 1;
    }
    (void)printf("replay: %zu inputs\n", count);
    return count > 0 ? 0 : 1;
}
