#!/bin/bash
# dumb-init's own test suite, run against pminit through a dumb-init-shaped
# shim (tests/fixtures/dumb-init-shim), as dumb-init's CI runs it: `pytest
# tests/` with dumb-init first in PATH, then tests/test-zombies with
# dumb-init as PID 1 (here: PID 1 of a fresh PID namespace).
#
#   scripts/dumb-init-suite.sh fetch   download and unpack Debian's source
#                                      package of dumb-init into $DUMB_INIT_SRC
#                                      (kept and reused; nothing is committed)
#   scripts/dumb-init-suite.sh run     run the suite; needs PMINIT_BIN
#                                      (default target/debug/pminit), root,
#                                      and the Debian packages python3-pytest,
#                                      python3-py, python3-pytest-timeout,
#                                      procps (ps), util-linux (unshare)
#
# The tests that pin semantics pminit deliberately does not share are
# deselected below, each with its reason. Everything else must pass.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=1.2.5
cache=${DUMB_INIT_SRC:-$root/target/dumb-init-src}
src=$cache/dumb-init-$version

fetch() {
    if [ -f "$src/tests/exit_status_test.py" ]; then
        echo "dumb-init $version source: $src (cached)"
        return
    fi
    mkdir -p "$cache"
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    # apt's own deb-src view of the configured Debian mirrors, kept apart
    # from the system's lists.
    local system=/etc/apt/sources.list.d/debian.sources
    if [ -f "$system" ]; then
        sed 's/^Types:.*/Types: deb-src/' "$system" >"$work/src.sources"
    else
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$work/src.list"
    fi
    local list
    list=$(ls "$work"/src.*)
    mkdir -p "$work/lists/partial"
    local apt=(apt-get -q -o "Dir::Etc::sourcelist=$list"
        -o Dir::Etc::sourceparts=/dev/null -o "Dir::State::Lists=$work/lists"
        -o APT::Sandbox::User=root)
    "${apt[@]}" update >/dev/null
    # The .debian.tar.xz part may be missing from the mirror (then apt-get
    # fails); the .orig.tar.gz, which holds the tests, is what we need.
    (cd "$work" && "${apt[@]}" source --download-only dumb-init >/dev/null 2>&1) || true
    local orig=$work/dumb-init_$version.orig.tar.gz
    if [ ! -f "$orig" ]; then
        echo "dumb-init-suite: could not download dumb-init_$version.orig.tar.gz from the Debian mirror (got: $(ls "$work"))" >&2
        exit 1
    fi
    tar -xzf "$orig" -C "$cache"
    echo "dumb-init $version source: $src"
}

# test id -> why pminit does not share that behaviour.
declare -A DESELECT=(
    # Command line: dumb-init's own words and flags.
    [tests/cli_test.py]="asserts dumb-init's exact usage, help, version and debug texts, its exit code 1 for a bad flag (pminit: 2, its documented bad-input code), and the -c/-r flags pminit does not have"
    [tests/child_processes_test.py::test_fails_nonzero_with_bad_exec]="asserts dumb-init's exact message '[dumb-init] /doesnotexist: No such file or directory'; pminit exits 127 with its own one-line message (tests/exit_codes.rs)"
    [tests/tty_test.py::test_tty]="expects the terminal to show only the child's output (3 2 1, which it does); pminit always logs its own lifecycle lines (worker started, exited, stopping) on stderr, here the same terminal, where dumb-init is silent without -v"
    [tests/tty_test.py::test_sighup_sigcont_ignored_if_was_session_leader]="asserts dumb-init's debug lines about its TTY hand-off quirk (dumb-init #136); pminit logs differently"
    # Signals pminit acts on itself instead of passing them on.
    [tests/proxies_signals_test.py::test_proxies_signals]="sends every signal 1-31 to the init and expects each passed on; pminit acts on HUP (rolling reload), TERM and INT (graceful stop: the stop signal, grace, SIGKILL) and ignores PIPE, by design"
    [tests/proxies_signals_test.py::test_proxies_signals_with_rewrite]="signal rewriting (-r); pminit has none (--stop-signal picks the one signal it sends to stop)"
    [tests/proxies_signals_test.py::test_default_rewrites_can_be_overriden_with_setsid_enabled]="signal rewriting (-r) and suspending the init on TSTP/TTIN/TTOU"
    [tests/proxies_signals_test.py::test_ignored_signals_are_not_proxied]="signal rewriting to 0 (-r s:0)"
    [tests/shell_background_test.py]="TSTP/TTIN/TTOU suspend dumb-init; pminit forwards TSTP and uses TTIN/TTOU to add/remove a worker (gunicorn's convention)"
    # dumb-init's non-setsid mode: pminit has only the process-group mode.
    [tests/child_processes_test.py::test_no_setsid_doesnt_signal_entire_group]="DUMB_INIT_SETSID=0 (signal only the direct child); pminit always signals the child's process group"
    [tests/child_processes_test.py::test_processes_dont_receive_term_on_exit_if_no_setsid]="DUMB_INIT_SETSID=0 leaves the child's children alone when it exits; pminit stops the whole tree"
    # dumb-init leaves the orphan running; pminit never leaves one behind.
    [tests/child_processes_test.py::test_all_processes_receive_term_on_exit_if_setsid]="run on its own below: every assertion must pass (TERM reaches the orphan, exit status 0); only its last line, which SIGKILLs the orphan dumb-init left running, must find it already gone (pminit SIGKILLs it after the grace and reaps it)"
    [tests/cwd_test.py]="dumb-init moves itself to / after the fork; pminit keeps the caller's cwd because it starts replacement workers there"
)
ORPHAN_TEST=tests/child_processes_test.py::test_all_processes_receive_term_on_exit_if_setsid

run() {
    local pminit=${PMINIT_BIN:-$root/target/debug/pminit}
    if [ ! -x "$pminit" ]; then
        echo "dumb-init-suite: no pminit binary at $pminit (cargo build, or set PMINIT_BIN)" >&2
        exit 1
    fi
    if [ ! -f "$src/tests/exit_status_test.py" ]; then
        echo "dumb-init-suite: no dumb-init source in $src: run scripts/dumb-init-suite.sh fetch" >&2
        exit 1
    fi
    local bin
    bin=$(mktemp -d)
    trap 'rm -rf "$bin"' RETURN
    ln -s "$root/tests/fixtures/dumb-init-shim" "$bin/dumb-init"
    export PMINIT_BIN=$pminit PATH=$bin:$PATH
    # Debian's python3 with its pytest, not a pyenv or venv one.
    local py=/usr/bin/python3
    local deselect=()
    local id
    echo "deselected (semantics pminit does not share):"
    for id in "${!DESELECT[@]}"; do
        deselect+=(--deselect "$id")
        echo "  $id: ${DESELECT[$id]}"
    done
    cd "$src"
    local failed=()
    # -p no:cacheprovider: write nothing into the source tree.
    "$py" -m pytest -p no:cacheprovider -q "${deselect[@]}" tests/ || failed+=("pytest tests/")

    echo "== tests/test-zombies with dumb-init as PID 1"
    if unshare --pid --fork --mount-proc dumb-init tests/test-zombies; then
        echo "test-zombies passed"
    else
        failed+=(test-zombies)
    fi

    echo "== $ORPHAN_TEST (must fail only at its final os.kill of the orphan)"
    local out
    if out=$("$py" -m pytest -p no:cacheprovider -q "$ORPHAN_TEST" 2>&1); then
        echo "$out"
        echo "dumb-init-suite: $ORPHAN_TEST passed: the orphan outlived pminit?" >&2
        failed+=("orphan case")
    elif ! grep -q '^E *ProcessLookupError' <<<"$out" ||
        ! grep -q '^> *os.kill(child_pid, signal.SIGKILL)' <<<"$out" ||
        grep -q 'AssertionError' <<<"$out"; then
        echo "$out"
        echo "dumb-init-suite: $ORPHAN_TEST failed before its cleanup" >&2
        failed+=("orphan case")
    else
        echo "orphan case passed: every assertion held (TERM reached the orphan, exit status 0); the orphan was already gone"
    fi

    if [ ${#failed[@]} -gt 0 ]; then
        echo "dumb-init-suite: FAILED: ${failed[*]}" >&2
        exit 1
    fi
    echo "dumb-init-suite: all passed"
}

case "${1:-}" in
fetch) fetch ;;
run) run ;;
*)
    echo "usage: $0 fetch|run" >&2
    exit 2
    ;;
esac
