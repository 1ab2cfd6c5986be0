#!/usr/bin/env bash
# Installs the C library: PREFIX/lib/libvspec.{so,a}, PREFIX/include/vspec.h and
# PREFIX/lib/pkgconfig/vspec.pc (then `pkg-config --cflags --libs vspec` works with
# PKG_CONFIG_PATH=PREFIX/lib/pkgconfig, and `--static` adds what libvspec.a needs).
# Build first: cargo build --release -p vspec-capi.
# Usage: capi/install.sh PREFIX [DIR_WITH_LIBS (default: target/release)]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${1:?usage: capi/install.sh PREFIX [LIB_DIR]}"
libs="${2:-$here/../target/release}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -n1)"
for f in libvspec.so libvspec.a; do
  [ -f "$libs/$f" ] || { echo "$libs/$f is missing: run cargo build --release -p vspec-capi" >&2; exit 1; }
done
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
prefix="$(cd "$prefix" && pwd)"
install -m 0755 "$libs/libvspec.so" "$prefix/lib/"
install -m 0644 "$libs/libvspec.a" "$prefix/lib/"
install -m 0644 "$here/include/vspec.h" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$here/vspec.pc.in" > "$prefix/lib/pkgconfig/vspec.pc"
echo "installed vspec $version under $prefix"
