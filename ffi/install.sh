#!/usr/bin/env bash
# Installs libagentcompress for C and C++ hosts:
#   PREFIX/include/agentcompress.h
#   PREFIX/lib/libagentcompress.so, libagentcompress.a
#   PREFIX/lib/pkgconfig/agentcompress.pc
#   PREFIX/lib/cmake/AgentCompress/AgentCompressConfig.cmake
#
# usage: ffi/install.sh PREFIX [BUILD_DIR]
# Without BUILD_DIR it runs `cargo build --release -p agentcompress-ffi` and installs from
# target/release; with it, it installs the libraries already built there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:?usage: ffi/install.sh PREFIX [BUILD_DIR]}"
build="${2:-}"
if [[ -z "$build" ]]; then
  (cd "$root" && cargo build --release -p agentcompress-ffi)
  build="$root/target/release"
fi
[[ -f "$build/libagentcompress.so" ]] || { echo "no libagentcompress.so in $build" >&2; exit 1; }
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/ffi/Cargo.toml" | head -n 1)"
install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/AgentCompress"
install -m 644 "$root/include/agentcompress.h" "$prefix/include/"
install -m 755 "$build/libagentcompress.so" "$prefix/lib/"
[[ -f "$build/libagentcompress.a" ]] && install -m 644 "$build/libagentcompress.a" "$prefix/lib/"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" "$root/agentcompress.pc.in" \
  > "$prefix/lib/pkgconfig/agentcompress.pc"
install -m 644 "$root/cmake/AgentCompressConfig.cmake" "$prefix/lib/cmake/AgentCompress/"
echo "installed agentcompress $version into $prefix"
