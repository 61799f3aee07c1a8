#!/usr/bin/env bash
# Build bitcoind and bitcoin-cli from the Bitcoin Core tree vendored in the py-bitcoinkernel sdist, so the
# functional suites can run against exactly the consensus code the embedded node links (libbitcoinkernel).
#
# Idempotent: when both binaries are already cached and run, nothing is done.
# Environment:
#   BTCL2_CACHE  cache root (default: $HOME/.cache/btcl2)
#   PYTHON       python used for `pip download` (default: .venv/bin/python if present, else python3)
#   JOBS         parallel build jobs (default: 2)
set -euo pipefail

PBK_VERSION="0.1.0a5"
CACHE_ROOT="${BTCL2_CACHE:-$HOME/.cache/btcl2}"
PREFIX="$CACHE_ROOT/bitcoin-core-$PBK_VERSION"
BIN_DIR="$PREFIX/bin"
WORK_DIR="$PREFIX/work"
JOBS="${JOBS:-2}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[build-bitcoind] %s\n' "$*" >&2; }

binaries_ok() {
    [[ -x "$BIN_DIR/bitcoind" && -x "$BIN_DIR/bitcoin-cli" ]] \
        && "$BIN_DIR/bitcoind" -version >/dev/null 2>&1 \
        && "$BIN_DIR/bitcoin-cli" -version >/dev/null 2>&1
}

install_build_deps() {
    local deps=(cmake pkgconf libevent-dev libboost-dev libsqlite3-dev libzmq3-dev build-essential)
    local missing=()
    local pkg
    for pkg in "${deps[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    log "installing build dependencies: ${missing[*]}"
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
    elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    else
        echo python3
    fi
}

fetch_source() {
    local src_dir="$WORK_DIR/py_bitcoinkernel-$PBK_VERSION"
    if [[ -f "$src_dir/depend/bitcoin/CMakeLists.txt" ]]; then
        echo "$src_dir/depend/bitcoin"
        return
    fi
    mkdir -p "$WORK_DIR/dl"
    local py
    py="$(pick_python)"
    log "downloading py-bitcoinkernel==$PBK_VERSION sdist"
    "$py" -m pip download --quiet --no-deps --no-binary :all: \
        --dest "$WORK_DIR/dl" "py-bitcoinkernel==$PBK_VERSION" >&2
    local archive
    archive="$(find "$WORK_DIR/dl" -maxdepth 1 -name "py_bitcoinkernel-$PBK_VERSION.tar.gz" -print -quit)"
    if [[ -z "$archive" ]]; then
        log "sdist not found after pip download"
        exit 1
    fi
    log "unpacking $archive"
    tar -xzf "$archive" -C "$WORK_DIR" "py_bitcoinkernel-$PBK_VERSION/depend/bitcoin"
    echo "$src_dir/depend/bitcoin"
}

build() {
    local src="$1"
    local build_dir="$WORK_DIR/build"
    log "configuring $src"
    cmake -S "$src" -B "$build_dir" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_GUI=OFF -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_FUZZ_BINARY=OFF \
        -DENABLE_IPC=OFF -DWITH_ZMQ=ON -DENABLE_WALLET=ON >&2
    log "building bitcoind and bitcoin-cli with -j$JOBS"
    cmake --build "$build_dir" --target bitcoind bitcoin-cli -j "$JOBS" >&2
    mkdir -p "$BIN_DIR"
    install -m 0755 "$build_dir/bin/bitcoind" "$BIN_DIR/bitcoind"
    install -m 0755 "$build_dir/bin/bitcoin-cli" "$BIN_DIR/bitcoin-cli"
}

main() {
    if binaries_ok; then
        log "already built"
    else
        install_build_deps
        local src
        src="$(fetch_source)"
        build "$src"
        binaries_ok || { log "built binaries do not run"; exit 1; }
    fi
    log "bitcoind:    $BIN_DIR/bitcoind"
    log "bitcoin-cli: $BIN_DIR/bitcoin-cli"
    echo "$BIN_DIR/bitcoind"
}

main "$@"
