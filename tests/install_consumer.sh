#!/bin/sh
# An installed cgrad serves programs outside this tree: `cmake --install` into a scratch
# prefix, then
#   - tests/install/ (C++11, -pedantic-errors) finds it with find_package(cgrad) and links
#     the shared library and the archive; each binary trains nothing, but saves, loads and
#     serves a model from 4 threads, checked against a float64 forward pass; consumer.c
#     (C11, -pedantic-errors) links the archive alone;
#   - tests/install/consumer.c builds with `pkg-config --cflags --libs cgrad` (shared) and
#     with the archive plus `pkg-config --static --libs` (no libcgrad.so needed at run time).
#   install_consumer.sh <build dir> <source dir>
set -eu
build=$1
src=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
prefix="$dir/prefix"
cmake --install "$build" --prefix "$prefix" > "$dir/install.log"
for f in include/cgrad.h include/cgrad/common.h bin/cgrad lib/cmake/cgrad/cgradConfig.cmake; do
  [ -e "$prefix/$f" ] || { echo "install: $f is missing"; exit 1; }
done
libdir=$(dirname "$(find "$prefix" -name libcgrad.a | head -n 1)")

cmake -S "$src/tests/install" -B "$dir/b" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release > "$dir/cfg.log" ||
  { cat "$dir/cfg.log"; exit 1; }
cmake --build "$dir/b" > "$dir/build.log" 2>&1 || { cat "$dir/build.log"; exit 1; }
"$dir/b/consumer_shared" "$dir"
"$dir/b/consumer_static" "$dir"
"$dir/b/consumer_c_static"
ldd "$dir/b/consumer_shared" | grep -q "libcgrad.so.0 => $libdir/" ||
  { echo "consumer_shared does not load the installed libcgrad.so"; ldd "$dir/b/consumer_shared"; exit 1; }
if ldd "$dir/b/consumer_static" | grep -q libcgrad; then echo "consumer_static needs libcgrad.so"; exit 1; fi

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc=${CC:-cc}
# shellcheck disable=SC2046 # pkg-config's flags are meant to split
$cc -std=c11 -Wall -Werror -o "$dir/c_shared" "$src/tests/install/consumer.c" $(pkg-config --cflags --libs cgrad) \
  -Wl,-rpath,"$libdir"
"$dir/c_shared"
static_libs=$(pkg-config --static --libs cgrad | tr ' ' '\n' | grep -vx -- -lcgrad | tr '\n' ' ')
# shellcheck disable=SC2046,SC2086
$cc -std=c11 -Wall -Werror -o "$dir/c_static" "$src/tests/install/consumer.c" $(pkg-config --cflags cgrad) \
  "$libdir/libcgrad.a" $static_libs
if ldd "$dir/c_static" | grep -q libcgrad; then echo "c_static needs libcgrad.so"; exit 1; fi
"$dir/c_static"
got=$("$prefix/bin/cgrad" --version) || { echo "the installed cgrad CLI does not run"; exit 1; }
want="cgrad $(grep -o 'PACKAGE_VERSION "[0-9.]*"' "$libdir/cmake/cgrad/cgradConfigVersion.cmake" | head -n 1 | cut -d'"' -f2)"
[ "$got" = "$want" ] || { echo "cgrad --version says '$got', the CMake package '$want'"; exit 1; }
[ "$(pkg-config --modversion cgrad)" = "${want#cgrad }" ] || { echo "cgrad.pc's version is not '${want#cgrad }'"; exit 1; }
echo "install consumer: ok"
