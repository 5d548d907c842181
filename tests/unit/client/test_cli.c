/*
 * The CLI's pure parts: exit codes, the metrics summary, and the checks done before any
 * connection (bad digests, bad instance names, missing files, unreachable servers).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "client/cli.h"
#include "fake.h"

Test(client_cli, exit_codes_separate_the_failures)
{
    cr_assert(eq(int, client_cli_exit_code(0), CLIENT_EXIT_OK));
    cr_assert(eq(int, client_cli_exit_code(-ENOENT), CLIENT_EXIT_NOT_FOUND));
    cr_assert(eq(int, client_cli_exit_code(-ETIMEDOUT), CLIENT_EXIT_TIMEOUT));
    cr_assert(eq(int, client_cli_exit_code(-ECONNREFUSED), CLIENT_EXIT_UNAVAILABLE));
    cr_assert(eq(int, client_cli_exit_code(-ECONNRESET), CLIENT_EXIT_UNAVAILABLE));
    cr_assert(eq(int, client_cli_exit_code(-EBADMSG), CLIENT_EXIT_INTEGRITY));
    cr_assert(eq(int, client_cli_exit_code(-EILSEQ), CLIENT_EXIT_INTEGRITY));
    cr_assert(eq(int, client_cli_exit_code(-EPROTO), CLIENT_EXIT_FAILURE));
}

Test(client_cli, metric_sums_add_every_label_set)
{
    const char *text = "# HELP ringcas_conns open connections\n"
                       "# TYPE ringcas_conns gauge\n"
                       "ringcas_conns{core=\"0\"} 2\n"
                       "ringcas_conns{core=\"1\"} 3\n"
                       "ringcas_conns_accepted{core=\"0\"} 40\n"
                       "ringcas_bytes 1.5e3\n";
    double v;
    cr_assert(client_cli_metric_sum(text, strlen(text), "ringcas_conns", &v));
    cr_assert(eq(dbl, v, 5.0));
    cr_assert(client_cli_metric_sum(text, strlen(text), "ringcas_bytes", &v));
    cr_assert(eq(dbl, v, 1500.0));
    cr_assert(not(client_cli_metric_sum(text, strlen(text), "ringcas_conn", &v)));
    cr_assert(not(client_cli_metric_sum(text, strlen(text), "ringcas_missing", &v)));
}

static struct client_cli_options opts(uint16_t port)
{
    static char server[32];
    struct client_cli_options o;
    client_cli_options_default(&o);
    snprintf(server, sizeof(server), "127.0.0.1:%u", port);
    o.server = server;
    o.timeout_ms = 2000;
    return o;
}

Test(client_cli, bad_input_is_a_usage_error)
{
    struct client_cli_options o = opts(1);
    cr_assert(eq(int, client_cli_get(&o, "nothex/12"), CLIENT_EXIT_USAGE));
    cr_assert(eq(
        int, client_cli_get(&o, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        CLIENT_EXIT_USAGE));
    char *missing[] = { "/nonexistent/ringcas/file" };
    cr_assert(eq(int, client_cli_put(&o, missing, 1), CLIENT_EXIT_USAGE));
    cr_assert(eq(int, client_cli_put(&o, missing, 0), CLIENT_EXIT_USAGE));
    o.instance = "blobs";
    cr_assert(eq(int, client_cli_stat(&o), CLIENT_EXIT_USAGE));
    o = opts(1);
    o.server = "nocolon";
    cr_assert(eq(int, client_cli_stat(&o), CLIENT_EXIT_USAGE));
    o.server = "host.invalid:80";
    cr_assert(eq(int, client_cli_stat(&o), CLIENT_EXIT_UNAVAILABLE));
}

Test(client_cli, unreachable_server_is_unavailable)
{
    uint16_t port;
    close(fake_silent_listener(&port));
    struct client_cli_options o = opts(port);
    cr_assert(
        eq(int,
           client_cli_get(&o, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0"),
           CLIENT_EXIT_UNAVAILABLE));
    cr_assert(eq(int, client_cli_stat(&o), CLIENT_EXIT_UNAVAILABLE));
}

/* Writes <n> files of distinct small contents into /tmp; their paths go to <paths>. */
static void small_files(char paths[][64], size_t n, size_t size0)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(paths[i], 64, "/tmp/ringcas-cli-batch-XXXXXX");
        int fd = mkstemp(paths[i]);
        static char buf[8192];
        size_t len = size0 + i * 37;
        cr_assert(lt(sz, len, sizeof(buf)));
        for (size_t k = 0; k < len; k++)
            buf[k] = (char)('a' + (k * 7 + i) % 26);
        cr_assert(eq(sz, (size_t)write(fd, buf, len), len));
        close(fd);
    }
}

Test(client_cli, small_files_go_in_batches_and_large_ones_stream)
{
    for (int compress = 0; compress < 2; compress++) {
        struct fake_server *f = fake_start(NULL);
        struct client_cli_options o = opts(fake_port(f));
        o.compress = compress;

        enum {
            N = 20
        };

        static char paths[N + 1][64];
        small_files(paths, N, 100);
        /* One large file streams (over PUT_BATCH_BLOB_MAX). */
        snprintf(paths[N], 64, "/tmp/ringcas-cli-big-XXXXXX");
        int fd = mkstemp(paths[N]);
        cr_assert(eq(int, ftruncate(fd, 300 * 1024), 0));
        close(fd);
        char *files[N + 1];
        for (int i = 0; i <= N; i++)
            files[i] = paths[i];
        cr_assert(eq(int, client_cli_put(&o, files, N + 1), CLIENT_EXIT_OK));
        cr_assert(eq(u64, atomic_load(&fake_stats(f)->batch_calls), 1));
        cr_assert(eq(u64, atomic_load(&fake_stats(f)->batch_blobs), N));
        cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_committed), 1));
        for (int i = 0; i <= N; i++)
            unlink(paths[i]);
        fake_stop(f);
    }
}

Test(client_cli, batches_fall_back_to_streams_without_the_method)
{
    struct fake_config cfg = { .no_batch = true };
    struct fake_server *f = fake_start(&cfg);
    struct client_cli_options o = opts(fake_port(f));

    enum {
        N = 3
    };

    static char paths[N][64];
    small_files(paths, N, 10);
    char *files[N] = { paths[0], paths[1], paths[2] };
    cr_assert(eq(int, client_cli_put(&o, files, N), CLIENT_EXIT_OK));
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->batch_blobs), 0));
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_committed), N));
    for (int i = 0; i < N; i++)
        unlink(paths[i]);
    fake_stop(f);
}

Test(client_cli, round_trip_through_the_fake_server)
{
    struct fake_server *f = fake_start(NULL);
    struct client_cli_options o = opts(fake_port(f));
    char in[] = "/tmp/ringcas-cli-in-XXXXXX";
    int fd = mkstemp(in);
    cr_assert(eq(int, (int)write(fd, "hello ringcas\n", 14), 14));
    close(fd);
    char *files[] = { in };
    cr_assert(eq(int, client_cli_put(&o, files, 1), CLIENT_EXIT_OK));
    cr_assert(fake_has_blob(f, "hello ringcas\n", 14));
    char out[64];
    snprintf(out, sizeof(out), "%s.out", in);
    o.output = out;
    o.compress = true;
    const char *digest = "1417f70e765aa1a5b82890a6310aa77239d92ccbeb3d0d0e4fd2d9acc36cbcd7/14";
    int rc = client_cli_get(&o, digest);
    /* The digest above is of "hello ringcas\n"; a wrong constant would show as not found. */
    cr_assert(eq(int, rc, CLIENT_EXIT_OK));
    char buf[32] = { 0 };
    fd = open(out, O_RDONLY);
    cr_assert(eq(int, (int)read(fd, buf, sizeof(buf)), 14));
    cr_assert(eq(str, buf, "hello ringcas\n"));
    close(fd);
    unlink(out);
    o.output = out;
    cr_assert(
        eq(int,
           client_cli_get(&o, "1111111111111111111111111111111111111111111111111111111111111111/3"),
           CLIENT_EXIT_NOT_FOUND));
    cr_assert(eq(int, access(out, F_OK), -1)); /* nothing left behind */
    unlink(in);
    fake_stop(f);
}
