#!/bin/sh
# Project rules no compiler checks (TigerBeetle's tidy.zig): include direction between
# modules, banned calls, FIXME, line length. Prints each violation; exits 1 if any.
set -u
cd "$(dirname "$0")/.." || exit 1
fail=0
say() { printf '%s\n' "$*"; fail=1; }

# Dependencies go one way: rpc -> blob -> ring -> base, client -> ring -> base; proto is
# shared by rpc and client and depends on base only.
allowed() {
    case "$1" in
    base) echo "base" ;;
    ring) echo "base ring" ;;
    blob) echo "base ring blob" ;;
    proto) echo "base proto" ;;
    rpc) echo "base ring blob proto rpc client" ;;
    client) echo "base ring proto client" ;;
    *) echo "base ring blob proto rpc client" ;;
    esac
}
for f in $(git ls-files 'src/*.c' 'src/*.h'); do
    mod=$(echo "$f" | cut -d/ -f2)
    case "$mod" in *.c | *.h) mod=main ;; esac
    ok=$(allowed "$mod")
    for inc in $(grep -oE '^#\s*include "[a-z_]+/' "$f" | sed -E 's/.*"([a-z_]+)\//\1/'); do
        case " $ok " in *" $inc "*) ;; *) say "$f: $mod/ must not include $inc/" ;; esac
    done
done

# Banned calls: unbounded or thread-unsafe libc.
banned='\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll|strtok|strerror|rand|localtime|gmtime|asctime|ctime)\('
git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' | grep -v -e generated -e '\.pb-c\.' |
    xargs grep -nE "$banned" | grep -v 'NOLINT' | grep -vE '^[^:]+:[0-9]+:\s*(\*|/\*|//)' |
    while IFS= read -r line; do
    printf '%s\n' "banned call: $line"
done | tee /tmp/tidy.$$ >/dev/null
[ -s /tmp/tidy.$$ ] && { cat /tmp/tidy.$$; fail=1; }
rm -f /tmp/tidy.$$

# No FIXME on main; TODOs name a person and an issue.
if git ls-files 'src/*' 'tests/*' | xargs grep -n 'FIXME' 2>/dev/null; then
    say "FIXME found: fix it or turn it into TODO(name): ... #issue"
fi
git ls-files 'src/*' | xargs grep -nE 'TODO[^(]' 2>/dev/null | while IFS= read -r l; do
    printf 'TODO without (name): %s\n' "$l"
done | grep . && fail=1

# Line length: 100 columns in C sources.
long=$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h' | grep -v -e generated -e '\.pb-c\.' |
    xargs awk 'length($0) > 100 { print FILENAME ":" FNR ": " length($0) " columns" }')
[ -n "$long" ] && say "$long"

exit $fail
