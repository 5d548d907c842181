/*
 * The load generator's data pool (client_bench_pool_fill): random bytes, and the build data
 * read from the folders of --corpus, however long that list is.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "client/bench.h"

/* Makes a folder holding one file of <text>; returns the folder's path (free it). */
static char *corpus_folder(const char *text)
{
    char *dir = strdup("/tmp/ringcas-corpus-XXXXXX");
    cr_assert(dir != NULL);
    cr_assert(mkdtemp(dir) != NULL);
    char path[128];
    (void)snprintf(path, sizeof(path), "%s/data", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert(ge(int, fd, 0));
    cr_assert(eq(sz, (size_t)write(fd, text, strlen(text)), strlen(text)));
    cr_assert(eq(int, close(fd), 0));
    return dir;
}

static void corpus_folder_remove(char *dir)
{
    char path[128];
    (void)snprintf(path, sizeof(path), "%s/data", dir);
    cr_assert(eq(int, unlink(path), 0));
    cr_assert(eq(int, rmdir(dir), 0));
    free(dir);
}

Test(client_bench, build_data_reads_every_folder_of_a_long_corpus)
{
    char *dir = corpus_folder("abcdefgh");
    /* 300 missing folders (about 6 KiB of list), then the real one at the end. */
    size_t size = 300 * 20 + strlen(dir) + 1;
    char *corpus = calloc(1, size);
    cr_assert(corpus != NULL);
    size_t n = 0;
    for (int i = 0; i < 300; i++) {
        n += (size_t)snprintf(corpus + n, size - n, "/nonexistent/%06d:", i);
    }
    (void)snprintf(corpus + n, size - n, "%s", dir);
    cr_assert(gt(sz, strlen(corpus), 4096));
    uint8_t pool[20];
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "build", corpus, 1), 0));
    /* The file's 8 bytes, repeated to fill the pool. */
    cr_assert(eq(int, memcmp(pool, "abcdefghabcdefghabcd", sizeof(pool)), 0));
    free(corpus);
    corpus_folder_remove(dir);
}

Test(client_bench, build_data_without_a_readable_file_is_enoent)
{
    uint8_t pool[16];
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "build", "/nonexistent/a::", 1),
                 -ENOENT));
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "build", "", 1), -ENOENT));
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "other", "/", 1), -EINVAL));
}
