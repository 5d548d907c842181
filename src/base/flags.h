/*
 * Command-line flags with environment twins. A subcommand describes its flags in a table;
 * base_flags_parse() reads the environment first (RINGCAS_LISTEN for --listen) and then argv,
 * so a flag given on the command line wins over its variable. Values are validated as they
 * are parsed; an error names the flag (or variable) and what was expected.
 *
 * Accepted forms: --name value, --name=value, and for booleans --name / --no-name (variables:
 * 1/0, true/false, yes/no, on/off). Every flag but --help has an environment twin: a
 * RINGCAS_HELP left in an environment must not turn every command into its help.
 */
#ifndef RINGCAS_BASE_FLAGS_H
#define RINGCAS_BASE_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/assert.h"

enum base_flag_type {
    BASE_FLAG_STRING,      /* const char ** (points into argv or environ) */
    BASE_FLAG_U64,         /* uint64_t * */
    BASE_FLAG_SIZE,        /* uint64_t *, bytes: 4096, 64KiB, 10G */
    BASE_FLAG_DURATION_MS, /* uint64_t *, milliseconds: 250ms, 30s, 2m */
    BASE_FLAG_BOOL,        /* bool * */
};

struct base_flag {
    const char *name;         /* without the dashes: "listen" */
    enum base_flag_type type; /* what <value> points at */
    void *value;              /* receives the parsed value; holds the default before */
    const char *help;         /* one line */
    const char *metavar;      /* shown in help: "HOST:PORT"; NULL for a default by type */
};

/* Where parse errors go, one line each: "<prog>: unknown flag --x (see --help)". */
struct base_flags_err {
    FILE *out;              /* the stream (stderr) */
    const char *prog;       /* starts each line: "ringcas serve" */
    const char *stray_flag; /* a flag an argument given where none is taken is likely the
                               value of ("dir": "ringcas fsck DIR"), named in its error line;
                               NULL: none */
};

/* Where the arguments that are not flags go. */
struct base_flags_rest {
    char **args;  /* receives pointers into argv */
    size_t size;  /* capacity of args */
    size_t count; /* set by base_flags_parse */
};

/*
 * Parses <argc>/<argv> (without the program and subcommand names) against <flags>
 * (<count> entries). Arguments that are not flags are collected into <rest> (NULL: none are
 * accepted); "--" ends the flags. Returns 0, or -EINVAL with one line written to <err>.
 */
MUST_CHECK int base_flags_parse(const struct base_flag *flags, size_t count, int argc, char **argv,
                                struct base_flags_rest *rest, const struct base_flags_err *err);

/*
 * Prints one line per flag, "  --name METAVAR  help (default D) [RINGCAS_NAME]", the default
 * read from the flag's value (call it before parsing): a size as 64KiB, a duration as 30s, a
 * boolean as on/off, shown as "--[no-]name"; a string default that is empty or NULL is left
 * out. --help shows neither default nor variable.
 */
void base_flags_print_help(const struct base_flag *flags, size_t count, FILE *out);

/*
 * After a usage error that a command found in values the parser took ("--chunk-size 3072:
 * expected a power of two"), which names the flag: writes one line naming the variables that
 * set flags, "<prog>: set from the environment: RINGCAS_CHUNK_SIZE=3KiB", so that a value
 * that came from a manifest's env is not looked for on a command line that has none. Flags
 * that <argv> gives are left out (argv wins); nothing is written when no variable is in
 * effect.
 */
void base_flags_print_env_in_effect(const struct base_flag *flags, size_t count, int argc,
                                    char **argv, const struct base_flags_err *err);

/* Writes the environment variable name of <flag_name> ("max-size" -> "RINGCAS_MAX_SIZE"). */
void base_flags_env_name(const char *flag_name, char *out, size_t out_size);

#endif /* RINGCAS_BASE_FLAGS_H */
