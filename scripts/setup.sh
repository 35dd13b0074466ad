#!/usr/bin/env bash
# Installs what aquin needs from Debian (only what is missing), then configures and builds.
# Idempotent: a second run installs nothing and rebuilds only what changed.
#   scripts/setup.sh [build-dir]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}

packages=(g++ cmake ninja-build ccache pkg-config
          libtorch-dev libopenblas0-openmp
          libboost-dev libboost-program-options-dev
          rapidjson-dev libspdlog-dev libgtest-dev libgmock-dev
          libpcre2-dev libutf8proc-dev
          python3-torch python3-numpy)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# OpenBLAS (OpenMP build) must be the BLAS libtorch uses: the reference BLAS is ~35x slower.
if [ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 ]; then
  current=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
  case "$current" in
    */openblas-openmp/*) ;;
    *) echo "setup: selecting OpenBLAS (openmp) as the system BLAS"
       $sudo update-alternatives --set libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
       $sudo update-alternatives --set liblapack.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3 || true ;;
  esac
fi

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
# Two cores and ~1 GB per libtorch translation unit: two jobs at most.
cmake --build "$build" -j2
